// Fused forward pass for batches: one work group per TILE_M prompts. It stages the tile's tokens in
// shared memory, computes the tile's hidden layers there (transposed, so TM consecutive prompts are one
// vec4 load: the first layer from the prepared token tables and, for an attention context, the head; the
// others as dense layers through a second pool), then sweeps the vocabulary TILE_N columns at a time: each thread keeps a TM x TN register tile
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
const int NO_ROW = STAGE_K + LAST_HIDDEN;  // a thread's fetch past the stage: fails both the load and the store
// Shared arrays (declared by engine/executors/fused_config.py): pool[POOL_VEC4], the hidden units [width][TILE_M],
// later the threads' softmax states; pool_next[NEXT_VEC4], a layer's output before it replaces pool (depth > 1);
// head_q[HEAD_SPAN], head_s[SCORE_SPAN], head_out[HEAD_SPAN] (attention, TILE_M prompts each);
// stage[2 * STAGE_VEC4] (STAGE_VEC4 = STAGE_K * TILE_N / 4), two buffers of output weights (STAGE_K rows x
// TILE_N columns each); and the staging arrays of fused_common.glsl.

float pooled(int j, int m) { return pool[(j * TILE_M + m) / 4][m % 4]; }

// One hidden row of the register tile: TM hidden values (a vec4 of prompts at a time) times TN weights.
// Addresses are a base register plus constants, so the step costs loads and FMAs only (NVIDIA's compiler
// keeps these loops as loops, recomputing every index, unless they are written out like this).
#define STEP(kk)                                                                              \
    if (LAST_HIDDEN % STAGE_K == 0 || k0 + (kk) < LAST_HIDDEN) {                              \
        vec4 a[TM4], b[TN4];                                                                  \
        for (int q = 0; q < TM4; q++) a[q] = pool[a_at + (kk) * (TILE_M / 4) + q];            \
        for (int q = 0; q < TN4; q++) b[q] = stage[b_at + (kk) * STAGE_COLUMNS4 + q];         \
        for (int i = 0; i < TM; i++)                                                          \
            for (int q = 0; q < TN4; q++) acc[i][q] = fma(vec4(a[i / 4][i % 4]), b[q], acc[i][q]); \
    }

#if CONTEXT_MODE == MODE_ATTENTION
// The attention head of the tile's prompts, whose whole windows are staged: head_out[m * HEAD_DIM + dd].
void attend_tile(int t) {
    for (int e = t; e < TILE_M * HEAD_DIM; e += TILE_THREADS) {  // the whole window is staged
        int m = e / HEAD_DIM, dd = e % HEAD_DIM;
        head_q[e] = staged_count[m] > 0 ? head_q_of(m, dd) : 0.0;
    }
    barrier();
    for (int e = t; e < TILE_M * CONTEXT_WINDOW; e += TILE_THREADS) {
        int m = e / CONTEXT_WINDOW, j = e % CONTEXT_WINDOW;
        float s = 0.0;
        if (j < staged_count[m]) {
            for (int dd = 0; dd < HEAD_DIM; dd++) s += head_q[m * HEAD_DIM + dd] * head_k(m, j, dd);
        }
        head_s[e] = j < staged_count[m] ? s / sqrt(float(HEAD_DIM)) : NO_LOGIT;
    }
    barrier();
    for (int e = t; e < TILE_M * HEAD_DIM; e += TILE_THREADS) {
        int m = e / HEAD_DIM, dd = e % HEAD_DIM, count = staged_count[m];
        float top = NO_LOGIT, total = 0.0, weighted = 0.0;
        for (int j = 0; j < count; j++) top = max(top, head_s[m * CONTEXT_WINDOW + j]);
        for (int j = 0; j < count; j++) {
            float a = exp(head_s[m * CONTEXT_WINDOW + j] - top);
            total += a;
            weighted += a * head_v(m, j, dd);
        }
        head_out[e] = count > 0 ? weighted / total : 0.0;
    }
    barrier();
}
#endif

#if DIRECT_HIDDEN
// The hidden-layer dispatch of one-layer models without attention whose window is staged at once (HIDDEN_OUT):
// no pool of hidden units in shared memory, so tiles of many prompts fit; a thread computes unit j of
// HIDDEN_ROWS prompts from the staged tokens' table rows and writes them straight to HIDDEN.
void forward() {
    int t = int(gl_LocalInvocationID.x);
    int n = min(prompt_count(), prompt_offset + part_count), row_len = prompt_row_len();
    int base = int(gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * TILE_M + prompt_offset;
    stage_windows(base, n, row_len, t, TILE_THREADS);
    barrier();
    stage_chunk(base, row_len, 0, t, TILE_THREADS);
    barrier();
    for (int e = t; e < TILE_M / HIDDEN_ROWS * K_PAD; e += TILE_THREADS) {
        int j = e % K_PAD, m0 = e / K_PAD * HIDDEN_ROWS;  // consecutive threads: consecutive units
        float h[HIDDEN_ROWS];
        for (int r = 0; r < HIDDEN_ROWS; r++) h[r] = j < HIDDEN0 ? staged_sum(m0 + r, 0, j) : 0.0;
        for (int r = 0; r < HIDDEN_ROWS; r++) {
            int p = base + m0 + r - prompt_offset;
            if (base + m0 + r < n) {
                HIDDEN[hidden_at(p, j)] = j < HIDDEN0 ? first_activation(m0 + r, h[r], j) : 0.0;
            }
        }
    }
    for (int m = t; m < TILE_M && base + m < n; m += TILE_THREADS) VALID[base + m - prompt_offset] = uint(staged_valid[m]);
}
#else
void forward() {
    int t = int(gl_LocalInvocationID.x);
    int n = prompt_count(), row_len = prompt_row_len();
    int base = int(gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * TILE_M;
#if HIDDEN_OUT
    base += prompt_offset;
    n = min(n, prompt_offset + part_count);
#endif
    stage_windows(base, n, row_len, t, TILE_THREADS);
    for (int e = t; e < TILE_M * HIDDEN0 / 4; e += TILE_THREADS) pool[e] = vec4(0.0);
    barrier();
    for (int chunk = 0; chunk < CONTEXT_WINDOW; chunk += STAGE_W) {
        stage_chunk(base, row_len, chunk, t, TILE_THREADS);
        barrier();
        for (int e = t; e < TILE_M * HIDDEN0; e += TILE_THREADS) {
            int m = e / HIDDEN0, j = e % HIDDEN0;  // consecutive threads read consecutive floats of FIRST
            pool[(j * TILE_M + m) / 4][m % 4] += staged_sum(m, chunk, j);
        }
        barrier();
    }
#if CONTEXT_MODE == MODE_ATTENTION
    attend_tile(t);
    for (int e = t; e < TILE_M / 4 * HIDDEN0; e += TILE_THREADS) {  // a weight read once for 4 prompts
        int m = e / HIDDEN0 * 4, j = e % HIDDEN0;
        vec4 sum = vec4(0.0);
        for (int dd = 0; dd < HEAD_DIM; dd++) {
            vec4 out4 = vec4(head_out[m * HEAD_DIM + dd], head_out[(m + 1) * HEAD_DIM + dd],
                             head_out[(m + 2) * HEAD_DIM + dd], head_out[(m + 3) * HEAD_DIM + dd]);
            sum += out4 * HEAD[W0H_AT + dd * HIDDEN0 + j];
        }
        pool[(j * TILE_M + m) / 4] += sum;
    }
    barrier();
#endif
    for (int e = t; e < TILE_M * HIDDEN0; e += TILE_THREADS) {
        int m = e / HIDDEN0, j = e % HIDDEN0;
        int at = (j * TILE_M + m) / 4;
        pool[at][m % 4] = first_activation(m, pool[at][m % 4], j);
    }
    barrier();
#if DEPTH > 1
    for (int l = 1; l < DEPTH; l++) {
        int width_in = LAYER_WIDTH[l - 1], width = LAYER_WIDTH[l];
        for (int e = t; e < TILE_M * width; e += TILE_THREADS) {
            int o = e / TILE_M, m = e % TILE_M;  // consecutive threads: one weight, several prompts
            float sum = BIASES[LAYER_BIAS[l] + o];
            for (int i = 0; i < width_in; i++) sum += pooled(i, m) * DENSE[LAYER_DENSE[l] + i * width + o];
            pool_next[(o * TILE_M + m) / 4][m % 4] = max(sum, 0.0) + (LAYER_RESIDUAL[l] != 0 ? pooled(o, m) : 0.0);
        }
        barrier();
        for (int e = t; e < TILE_M * width / 4; e += TILE_THREADS) pool[e] = pool_next[e];
        barrier();
    }
#endif

#if HIDDEN_OUT
    for (int e = t; e < TILE_M * K_PAD; e += TILE_THREADS) {
        int k = e / TILE_M, m = e % TILE_M, p = base + m - prompt_offset;  // consecutive threads: one unit
        if (base + m < n) HIDDEN[hidden_at(p, k)] = k < LAST_HIDDEN ? pooled(k, m) : 0.0;
    }
    for (int m = t; m < TILE_M && base + m < n; m += TILE_THREADS) VALID[base + m - prompt_offset] = uint(staged_valid[m]);
}
#else
    int tn = t % ROW_THREADS, tm = t / ROW_THREADS;
    float top[TM], sum[TM], target[TM];
    int index[TM];
    for (int i = 0; i < TM; i++) { top[i] = NO_LOGIT; sum[i] = 0.0; index[i] = VOCAB; target[i] = NO_LOGIT; }
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
            fetched[f] = row < LAST_HIDDEN ? OUT_W4[row * ROW4 + c / 4 + fetch_column4[f]] : vec4(0.0);
        }
        for (int k0 = 0; k0 < LAST_HIDDEN; k0 += STAGE_K) {
            for (int f = 0; f < FETCHES; f++) {
                if (fetch_row[f] < STAGE_K) stage[current * STAGE_VEC4 + t + f * TILE_THREADS] = fetched[f];
            }
            barrier();  // one barrier a step: the other buffer was last read before it
            for (int f = 0; f < FETCHES; f++) {
                int row = k0 + STAGE_K + fetch_row[f];
                bool inside = fetch_row[f] < STAGE_K && row < LAST_HIDDEN;
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
                    float bias = BIASES[OUT_BIAS_AT + k];
                    for (int i = 0; i < TM; i++) {
                        float logit = acc[i][q][r] + bias;
                        consider(top[i], sum[i], index[i], logit, k);
#if SCORING
                        target[i] = max(target[i], target_logit(min(base + tm * TM + i, n - 1), k, logit));
#endif
                    }
                }
            }
        }
    }
    barrier();
    for (int i = 0; i < TM; i++) {
        pool[(tm * TM + i) * ROW_THREADS + tn] = packed_state(top[i], sum[i], index[i], target[i]);
    }
    barrier();
    for (int m = t; m < TILE_M && base + m < n; m += TILE_THREADS) {
        float best = NO_LOGIT, total = 0.0, aimed = NO_LOGIT;
        int id = VOCAB;
        for (int r = 0; r < ROW_THREADS; r++) merge(best, total, id, aimed, pool[m * ROW_THREADS + r]);
        finish(base + m, staged_valid[m], id, best, total, aimed);
    }
}
#endif

#endif  // DIRECT_HIDDEN

#if GENERATE
void start_steps() {}
#endif
MAIN_STEPS(forward)
