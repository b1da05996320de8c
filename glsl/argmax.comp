// Pass 4: one work group per prompt reduces its logits to the prediction pixel
// (id % 256, id / 256, round(255 * p), 255), p = softmax probability of the argmax; ties -> lowest id.
layout(local_size_x = ARGMAX_THREADS) in;  // a power of two

#include "logits_grid.glsl"
layout(binding = 0, r32f) uniform readonly image2D logits_in;
layout(binding = 1, rgba8ui) uniform writeonly uimage2D prediction_out;

shared float best_value[ARGMAX_THREADS];
shared int best_index[ARGMAX_THREADS];
shared float exp_sum[ARGMAX_THREADS];

bool beats(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

void main() {
    int t = int(gl_LocalInvocationID.x);
    int prompt = int(gl_WorkGroupID.x);

    // Each invocation scans k = t, t + T, ... in increasing order, so strict '>' keeps the lowest index.
    float value = -1.0 / 0.0;
    int index = VOCAB;
    for (int k = t; k < VOCAB; k += ARGMAX_THREADS) {
        float logit = imageLoad(logits_in, logits_pixel(prompt, k)).r;
        if (logit > value) { value = logit; index = k; }
    }
    best_value[t] = value;
    best_index[t] = index;
    memoryBarrierShared();
    barrier();
    for (int stride = ARGMAX_THREADS / 2; stride > 0; stride /= 2) {
        if (t < stride && beats(best_value[t + stride], best_index[t + stride], best_value[t], best_index[t])) {
            best_value[t] = best_value[t + stride];
            best_index[t] = best_index[t + stride];
        }
        memoryBarrierShared();
        barrier();
    }
    float top = best_value[0];

    float sum = 0.0;
    for (int k = t; k < VOCAB; k += ARGMAX_THREADS) {
        sum += exp(imageLoad(logits_in, logits_pixel(prompt, k)).r - top);
    }
    exp_sum[t] = sum;
    memoryBarrierShared();
    barrier();
    for (int stride = ARGMAX_THREADS / 2; stride > 0; stride /= 2) {
        if (t < stride) exp_sum[t] += exp_sum[t + stride];
        memoryBarrierShared();
        barrier();
    }
    if (t == 0) {
        uint id = uint(best_index[0]);
        uint confidence = uint(floor(255.0 / exp_sum[0] + 0.5));
        imageStore(prediction_out, ivec2(0, prompt), uvec4(id & 255u, id >> 8u, confidence, 255u));
    }
}
