// Fused forward pass for few prompts (one prompt: the latency path). Work group (slice, p) computes
// prompt p's hidden units, then the logits of vocabulary slice `slice` with SMALL_THREADS threads, four
// columns (one vec4 of weights) a thread at a time, folding each into an online softmax; a tree in shared
// memory merges the threads. With SPLIT > 1 slices, each group leaves its partial result in Scratch and
// the last group of the prompt to arrive (an atomic count) merges them and writes the prediction.
layout(local_size_x = SMALL_THREADS) in;  // a power of two

#include "fused_common.glsl"
layout(std430, binding = 5) coherent restrict buffer Scratch { uint arrivals[SMALL_MAX]; vec4 partials[]; };

const int SLICE4 = VOCAB_PAD / 4 / SPLIT;  // vec4 columns per slice

shared float h[HIDDEN_DIM];
shared vec4 states[SMALL_THREADS];
shared bool last_arrival;

void main() {
    int t = int(gl_LocalInvocationID.x);
    int slice = int(gl_WorkGroupID.x);
    int p = int(gl_WorkGroupID.y);
    int row_len = prompt_row_len();
    for (int j = t; j < HIDDEN_DIM; j += SMALL_THREADS) h[j] = hidden_unit(p, row_len, j);
    barrier();

    float top = NO_LOGIT, sum = 0.0;
    int index = VOCAB;
    for (int c4 = slice * SLICE4 + t; c4 < (slice + 1) * SLICE4; c4 += SMALL_THREADS) {
        vec4 acc = vec4(0.0);
        for (int j = 0; j < HIDDEN_DIM; j++) acc += h[j] * OUT_W4[j * (VOCAB_PAD / 4) + c4];
        for (int r = 0; r < 4; r++) {
            int k = 4 * c4 + r;
            if (k < VOCAB) consider(top, sum, index, acc[r] + BIAS[HIDDEN_DIM + k], k);
        }
    }
    states[t] = packed_state(top, sum, index);
    barrier();
    for (int stride = SMALL_THREADS / 2; stride > 0; stride /= 2) {
        if (t < stride) {
            merge(top, sum, index, states[t + stride]);
            states[t] = packed_state(top, sum, index);
        }
        barrier();
    }
#if SPLIT == 1
    if (t == 0) PREDICTIONS[p] = prediction_pixel(index, sum);
#else
    if (t == 0) {
        partials[p * SPLIT + slice] = states[0];
        memoryBarrierBuffer();
        last_arrival = atomicAdd(arrivals[p], 1u) == uint(SPLIT - 1);
    }
    barrier();
    if (t == 0 && last_arrival) {
        top = NO_LOGIT; sum = 0.0; index = VOCAB;
        for (int s = 0; s < SPLIT; s++) merge(top, sum, index, partials[p * SPLIT + s]);
        PREDICTIONS[p] = prediction_pixel(index, sum);
        arrivals[p] = 0u;
    }
#endif
}
