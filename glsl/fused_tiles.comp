// Fused forward pass for batches: one work group per TILE_M prompts. It stages the tile's tokens in
// shared memory, writes the tile's hidden units there (transposed, so TM consecutive prompts are one vec4
// load), then sweeps the vocabulary TILE_N columns at a time: each thread keeps a TM x TN register tile
// of logits (TM prompts x TN consecutive columns), adds the bias and folds each logit into its prompts'
// online softmax, so logits never leave registers. The output weights reach the threads through shared
// memory, STAGE_K hidden rows at a time, double-buffered: the next rows are fetched into registers while
// the current ones are used. The TILE_N / TN threads sharing prompts merge last.
layout(local_size_x = LOCAL_SIZE) in;  // TILE_THREADS = (TILE_M / TM) * (TILE_N / TN)

#include "fused_common.glsl"

const int ROW_THREADS = TILE_N / TN;
const int TM4 = TM / 4, TN4 = TN / 4;
const int STAGE_COLUMNS4 = TILE_N / 4;
const int FETCHES = (STAGE_VEC4 + TILE_THREADS - 1) / TILE_THREADS;
const int ROW4 = VOCAB_PAD / 4;  // vec4s in a row of output weights
const int NO_ROW = STAGE_K + HIDDEN_DIM;  // a thread's fetch past the stage: fails both the load and the store
// Shared arrays (declared by engine/executors/fused.py): pool[POOL_VEC4], the hidden units [HIDDEN_DIM][TILE_M],
// later the threads' softmax states; stage[2 * STAGE_VEC4] (STAGE_VEC4 = STAGE_K * TILE_N / 4), two buffers of output weights (STAGE_K rows x
// TILE_N columns each); and the staging arrays of fused_common.glsl.

// One hidden row of the register tile: TM hidden values (a vec4 of prompts at a time) times TN weights.
// Addresses are a base register plus constants, so the step costs loads and FMAs only (NVIDIA's compiler
// keeps these loops as loops, recomputing every index, unless they are written out like this).
#define STEP(kk)                                                                              \
    if (HIDDEN_DIM % STAGE_K == 0 || k0 + (kk) < HIDDEN_DIM) {                                \
        vec4 a[TM4], b[TN4];                                                                  \
        for (int q = 0; q < TM4; q++) a[q] = pool[a_at + (kk) * (TILE_M / 4) + q];            \
        for (int q = 0; q < TN4; q++) b[q] = stage[b_at + (kk) * STAGE_COLUMNS4 + q];         \
        for (int i = 0; i < TM; i++)                                                          \
            for (int q = 0; q < TN4; q++) acc[i][q] = fma(vec4(a[i / 4][i % 4]), b[q], acc[i][q]); \
    }

void main() {
    int t = int(gl_LocalInvocationID.x);
    int n = prompt_count(), row_len = prompt_row_len();
    int base = int(gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * TILE_M;
    stage_windows(base, n, row_len, t, TILE_THREADS);
    for (int e = t; e < TILE_M * HIDDEN_DIM / 4; e += TILE_THREADS) pool[e] = vec4(0.0);
    barrier();
    for (int chunk = 0; chunk < CONTEXT_WINDOW; chunk += STAGE_W) {
        stage_chunk(base, row_len, chunk, t, TILE_THREADS);
        barrier();
        for (int e = t; e < TILE_M * HIDDEN_DIM; e += TILE_THREADS) {
            int m = e / HIDDEN_DIM, j = e % HIDDEN_DIM;  // consecutive threads read consecutive floats of P
            pool[(j * TILE_M + m) / 4][m % 4] += staged_sum(m, chunk, j);
        }
        barrier();
    }
    for (int e = t; e < TILE_M * HIDDEN_DIM; e += TILE_THREADS) {
        int m = e / HIDDEN_DIM, j = e % HIDDEN_DIM;
        int at = (j * TILE_M + m) / 4;
        pool[at][m % 4] = hidden_from_sum(m, pool[at][m % 4], j);
    }
    barrier();

    int tn = t % ROW_THREADS, tm = t / ROW_THREADS;
    float top[TM], sum[TM];
    int index[TM];
    for (int i = 0; i < TM; i++) { top[i] = NO_LOGIT; sum[i] = 0.0; index[i] = VOCAB; }
    int fetch_row[FETCHES], fetch_column4[FETCHES];  // this thread's vec4s of each stage
    for (int f = 0; f < FETCHES; f++) {
        int e = t + f * TILE_THREADS;
        fetch_row[f] = e < STAGE_VEC4 ? e / STAGE_COLUMNS4 : NO_ROW;
        fetch_column4[f] = e % STAGE_COLUMNS4;
    }
    int current = 0;  // alternates across chunks too: a write always targets the buffer read two steps ago
    for (int c = 0; c < VOCAB_PAD; c += TILE_N) {
        vec4 acc[TM][TN4];
        for (int i = 0; i < TM; i++)
            for (int q = 0; q < TN4; q++) acc[i][q] = vec4(0.0);
        vec4 fetched[FETCHES];
        for (int f = 0; f < FETCHES; f++) {
            int row = fetch_row[f];
            fetched[f] = row < HIDDEN_DIM ? OUT_W4[row * ROW4 + c / 4 + fetch_column4[f]] : vec4(0.0);
        }
        for (int k0 = 0; k0 < HIDDEN_DIM; k0 += STAGE_K) {
            for (int f = 0; f < FETCHES; f++) {
                if (fetch_row[f] < STAGE_K) stage[current * STAGE_VEC4 + t + f * TILE_THREADS] = fetched[f];
            }
            barrier();  // one barrier a step: the other buffer was last read before it
            for (int f = 0; f < FETCHES; f++) {
                int row = k0 + STAGE_K + fetch_row[f];
                bool inside = fetch_row[f] < STAGE_K && row < HIDDEN_DIM;
                fetched[f] = inside ? OUT_W4[row * ROW4 + c / 4 + fetch_column4[f]] : vec4(0.0);
            }
            int a_at = k0 * (TILE_M / 4) + tm * TM4;
            int b_at = current * STAGE_VEC4 + tn * TN4;
            STEP(0) STEP(1) STEP(2) STEP(3)
#if STAGE_K > 4
            STEP(4) STEP(5) STEP(6) STEP(7)
#endif
#if STAGE_K > 8
            STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)
#endif
            current = 1 - current;
        }
        for (int q = 0; q < TN4; q++) {
            for (int r = 0; r < 4; r++) {
                int k = c + tn * TN + 4 * q + r;
                if (k < VOCAB) {
                    float bias = BIAS[HIDDEN_DIM + k];
                    for (int i = 0; i < TM; i++) consider(top[i], sum[i], index[i], acc[i][q][r] + bias, k);
                }
            }
        }
    }
    barrier();
    for (int i = 0; i < TM; i++) pool[(tm * TM + i) * ROW_THREADS + tn] = packed_state(top[i], sum[i], index[i]);
    barrier();
    for (int m = t; m < TILE_M && base + m < n; m += TILE_THREADS) {
        float best = NO_LOGIT, total = 0.0;
        int id = VOCAB;
        for (int r = 0; r < ROW_THREADS; r++) merge(best, total, id, pool[m * ROW_THREADS + r]);
        PREDICTIONS[base + m] = prediction_word(staged_valid[m], id, total);
    }
}
