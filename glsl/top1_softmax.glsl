// The reduction every executor ends with (docs/FORMATS.md §3): over `len` values read by TOP1_VALUE(base, i),
// the lowest index of the largest value and sum_i exp(value_i - largest), the softmax denominator. All
// LOCAL_SIZE invocations of the group (a power of two) call it together, each with its own t; the kernel
// declares the shared arrays top1_value, top1_index and top1_sum, LOCAL_SIZE long, and defines TOP1_VALUE
// before including this file.

bool beats(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

void top1_softmax(int t, int base, int len, out int index, out float exp_sum) {
    // Each invocation scans i = t, t + LOCAL_SIZE, ... in increasing order: strict '>' keeps the lowest index.
    float value = -1.0 / 0.0;
    int best = len;
    for (int i = t; i < len; i += LOCAL_SIZE) {
        float v = TOP1_VALUE(base, i);
        if (v > value) { value = v; best = i; }
    }
    top1_value[t] = value;
    top1_index[t] = best;
    memoryBarrierShared();
    barrier();
    for (int stride = LOCAL_SIZE / 2; stride > 0; stride /= 2) {
        if (t < stride && beats(top1_value[t + stride], top1_index[t + stride], top1_value[t], top1_index[t])) {
            top1_value[t] = top1_value[t + stride];
            top1_index[t] = top1_index[t + stride];
        }
        memoryBarrierShared();
        barrier();
    }
    float top = top1_value[0];
    float sum = 0.0;
    for (int i = t; i < len; i += LOCAL_SIZE) sum += exp(TOP1_VALUE(base, i) - top);
    top1_sum[t] = sum;
    memoryBarrierShared();
    barrier();
    for (int stride = LOCAL_SIZE / 2; stride > 0; stride /= 2) {
        if (t < stride) top1_sum[t] += top1_sum[t + stride];
        memoryBarrierShared();
        barrier();
    }
    index = top1_index[0];
    exp_sum = top1_sum[0];
}
