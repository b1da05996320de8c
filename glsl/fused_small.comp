// Fused forward pass for few prompts (one prompt: the latency path). Work group (slice, p) stages prompt
// p's tokens, computes its hidden units, then the logits of vocabulary slice `slice`: its threads split
// the slice's columns (a vec4 of weights each) and, when there are more threads than columns, the hidden
// units too, adding their partial sums through shared memory; each column's logit is folded into an
// online softmax and a tree in shared memory merges the threads. With SPLIT > 1 slices, each group leaves
// its partial result in Scratch and the last group of the prompt to arrive (an atomic count) merges them.
layout(local_size_x = LOCAL_SIZE) in;  // SMALL_THREADS, a power of two

#include "fused_common.glsl"
layout(std430, binding = BINDING_SCRATCH) coherent restrict buffer Scratch { uint arrivals[SMALL_MAX]; vec4 partials[]; };

// COLUMN_THREADS (injected): threads along the columns, a power of two <= min(SLICE4, SMALL_THREADS)
const int SLICE4 = VOCAB_PAD / 4 / SPLIT;                // vec4 columns per slice
const int HIDDEN_SPLIT = SMALL_THREADS / COLUMN_THREADS; // threads sharing one column's hidden units
const int ROUNDS = (SLICE4 + COLUMN_THREADS - 1) / COLUMN_THREADS;

// Shared arrays (declared by engine/executors/fused.py): h[HIDDEN_DIM], partial_sums[SMALL_THREADS],
// states[COLUMN_THREADS], last_arrival[1], and the staging arrays of fused_common.glsl.

void main() {
    int t = int(gl_LocalInvocationID.x);
    int slice = int(gl_WorkGroupID.x);
    int p = int(gl_WorkGroupID.y);
    int row_len = prompt_row_len();
    stage_windows(p, p + 1, row_len, t, SMALL_THREADS);
    for (int j = t; j < HIDDEN_DIM; j += SMALL_THREADS) h[j] = 0.0;
    barrier();
    for (int chunk = 0; chunk < staged_count[0]; chunk += STAGE_W) {
        stage_chunk(p, row_len, chunk, t, SMALL_THREADS);
        barrier();
        for (int j = t; j < HIDDEN_DIM; j += SMALL_THREADS) h[j] += staged_sum(0, chunk, j);
        barrier();
    }
    for (int j = t; j < HIDDEN_DIM; j += SMALL_THREADS) h[j] = hidden_from_sum(0, h[j], j);
    barrier();

    int lane = t % COLUMN_THREADS, part = t / COLUMN_THREADS;
    float top = NO_LOGIT, sum = 0.0;
    int index = VOCAB;
    for (int round = 0; round < ROUNDS; round++) {
        int c4 = slice * SLICE4 + round * COLUMN_THREADS + lane;
        bool working = round * COLUMN_THREADS + lane < SLICE4 && part < HIDDEN_SPLIT;
        vec4 acc = vec4(0.0);
        if (working) {
            for (int j = part; j < HIDDEN_DIM; j += HIDDEN_SPLIT) acc += h[j] * OUT_W4[j * (VOCAB_PAD / 4) + c4];
        }
        partial_sums[t] = acc;
        barrier();
        if (working && part == 0) {
            for (int s = 1; s < HIDDEN_SPLIT; s++) acc += partial_sums[s * COLUMN_THREADS + lane];
            for (int r = 0; r < 4; r++) {
                int k = 4 * c4 + r;
                if (k < VOCAB) consider(top, sum, index, acc[r] + BIAS[HIDDEN_DIM + k], k);
            }
        }
        barrier();
    }
    if (t < COLUMN_THREADS) states[t] = packed_state(top, sum, index);
    barrier();
    for (int stride = COLUMN_THREADS / 2; stride > 0; stride /= 2) {
        if (t < stride) {
            merge(top, sum, index, states[t + stride]);
            states[t] = packed_state(top, sum, index);
        }
        barrier();
    }
#if SPLIT == 1
    if (t == 0) PREDICTIONS[p] = prediction_word(staged_valid[0], index, sum);
#else
    if (t == 0) {
        partials[p * SPLIT + slice] = states[0];
        memoryBarrierBuffer();
        last_arrival[0] = atomicAdd(arrivals[p], 1u) == uint(SPLIT - 1);
    }
    barrier();
    if (t == 0 && last_arrival[0]) {
        top = NO_LOGIT; sum = 0.0; index = VOCAB;
        for (int s = 0; s < SPLIT; s++) merge(top, sum, index, partials[p * SPLIT + s]);
        PREDICTIONS[p] = prediction_word(staged_valid[0], index, sum);
        arrivals[p] = 0u;
    }
#endif
}
