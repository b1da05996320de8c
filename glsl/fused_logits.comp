// Logits and their softmax for a part of a batch whose last hidden layer is already in memory (fused_tiles
// compiled HIDDEN_OUT wrote it; engine/executors/fused_gemm.py): a GEMM-class kernel. A work group owns GEMM_M
// prompts and sweeps the vocabulary GEMM_N columns a step; each thread keeps a GEMM_TM x GEMM_TN register tile
// of logits, folds them into its prompts' online softmax, and the GEMM_N / GEMM_TN threads of a row of prompts
// merge last. Both operands reach the threads through shared memory, GEMM_K hidden rows at a time,
// double-buffered (the next rows are fetched into registers while the current ones are used), and each
// thread's rows and columns are vec4 blocks spread across the tile, so a warp's shared loads are broadcasts
// (rows) or consecutive vec4s (columns).
//
// A part with few blocks of prompts is also cut into `slices` vocabulary slices (work groups (block, slice)) so
// that it fills the GPU: each group then writes its prompts' softmax states to STATES, and the same shader
// compiled MERGE = 1 (a thread a prompt) merges a prompt's slices into its prediction word.
//
// HIDDEN4: the part's hidden units in blocks of GEMM_M prompts, each block K_PAD rows of GEMM_M floats
// (hidden unit k of prompt b * GEMM_M + m at (b * K_PAD + k) * GEMM_M + m; units past LAST_HIDDEN are 0).
// VALID: 1 for a prompt whose ids are all in the vocabulary, 0 for one to refuse.
// STATES: slice s's state of prompt b * GEMM_M + m at (b * slices + s) * GEMM_M + m.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_VALID) readonly restrict buffer Valid { uint VALID[]; };
layout(std430, binding = BINDING_STATES) restrict buffer States { vec4 STATES[]; };
layout(std430, binding = BINDING_PREDICTIONS) writeonly restrict buffer Predictions { uint PREDICTIONS[]; };
uniform int count;  // prompts in the part
uniform int slices;  // vocabulary slices a block of prompts is cut into

#include "online_softmax.glsl"

#if MERGE
void main() {
    int p = int(gl_GlobalInvocationID.x);
    if (p >= count) return;
    float best = NO_LOGIT, total = 0.0, unused = NO_LOGIT;
    int id = VOCAB;
    int at = (p / GEMM_M) * slices * GEMM_M + p % GEMM_M;
    for (int s = 0; s < slices; s++) merge(best, total, id, unused, STATES[at + s * GEMM_M]);
    PREDICTIONS[p] = prediction_word(VALID[p] != 0u, id, total);
}
#else
layout(std430, binding = BINDING_HIDDEN) readonly restrict buffer Hidden { vec4 HIDDEN4[]; };
layout(std430, binding = BINDING_BIASES) readonly restrict buffer Biases { float BIASES[]; };
layout(std430, binding = BINDING_OUT_WEIGHTS) readonly restrict buffer OutWeights { vec4 OUT_W4[]; };

const int ROW_THREADS = GEMM_N / GEMM_TN;
const int RM = GEMM_TM / 4, RN = GEMM_TN / 4;  // vec4 blocks of a thread's rows, of its columns
const int M4 = GEMM_M / 4, N4 = GEMM_N / 4;
const int A_VEC4 = GEMM_K * M4, B_VEC4 = GEMM_K * N4;  // one stage of each operand
const int STAGE_VEC4 = A_VEC4 + B_VEC4;
const int A_FETCHES = (A_VEC4 + LOCAL_SIZE - 1) / LOCAL_SIZE, B_FETCHES = (B_VEC4 + LOCAL_SIZE - 1) / LOCAL_SIZE;
const int ROW4 = VOCAB_PAD / 4;  // vec4s in a row of output weights
// Shared (declared by fused_gemm.py): gemm_shared[GEMM_SHARED_VEC4], two stages [A_VEC4 | B_VEC4] while
// the logits are computed, then the threads' softmax states, GEMM_M x ROW_THREADS.

// One hidden row of the register tile. Addresses are a base register plus constants (written out so that
// NVIDIA's compiler folds them, as in fused_tiles.comp).
#define STEP(kk)                                                                                       \
    {                                                                                                  \
        vec4 a[RM], b[RN];                                                                             \
        for (int r = 0; r < RM; r++) a[r] = gemm_shared[a_at + (kk) * M4 + r * (M4 / RM)];             \
        for (int r = 0; r < RN; r++) b[r] = gemm_shared[b_at + (kk) * N4 + r * (N4 / RN)];             \
        for (int i = 0; i < GEMM_TM; i++)                                                              \
            for (int r = 0; r < RN; r++) acc[i][r] = fma(vec4(a[i / 4][i % 4]), b[r], acc[i][r]);      \
    }

void main() {
    int t = int(gl_LocalInvocationID.x);
    int tn = t % ROW_THREADS, tm = t / ROW_THREADS;
    int block = int(gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x), slice = int(gl_WorkGroupID.z);
    int base = block * GEMM_M, columns = VOCAB_PAD / slices;
    int a_block = block * K_PAD * M4;
    float top[GEMM_TM], sum[GEMM_TM];
    int index[GEMM_TM];
    for (int i = 0; i < GEMM_TM; i++) { top[i] = NO_LOGIT; sum[i] = 0.0; index[i] = VOCAB; }
    int current = 0;  // alternates across column steps too: a write targets the buffer read two stages ago
    for (int c = slice * columns; c < (slice + 1) * columns; c += GEMM_N) {
        vec4 acc[GEMM_TM][RN];
        for (int i = 0; i < GEMM_TM; i++)
            for (int r = 0; r < RN; r++) acc[i][r] = vec4(0.0);
        vec4 fetched_a[A_FETCHES], fetched_b[B_FETCHES];
        for (int f = 0; f < A_FETCHES; f++) {
            int e = t + f * LOCAL_SIZE;
            fetched_a[f] = e < A_VEC4 ? HIDDEN4[a_block + e] : vec4(0.0);
        }
        for (int f = 0; f < B_FETCHES; f++) {
            int e = t + f * LOCAL_SIZE, row = e / N4;
            fetched_b[f] = e < B_VEC4 && row < LAST_HIDDEN ? OUT_W4[row * ROW4 + c / 4 + e % N4] : vec4(0.0);
        }
        for (int k0 = 0; k0 < K_PAD; k0 += GEMM_K) {
            int at = current * STAGE_VEC4;
            for (int f = 0; f < A_FETCHES; f++) {
                int e = t + f * LOCAL_SIZE;
                if (e < A_VEC4) gemm_shared[at + e] = fetched_a[f];
            }
            for (int f = 0; f < B_FETCHES; f++) {
                int e = t + f * LOCAL_SIZE;
                if (e < B_VEC4) gemm_shared[at + A_VEC4 + e] = fetched_b[f];
            }
            barrier();  // one barrier a stage: the other buffer was last read before it
            int next = k0 + GEMM_K;
            if (next < K_PAD) {
                for (int f = 0; f < A_FETCHES; f++) {
                    int e = t + f * LOCAL_SIZE;
                    fetched_a[f] = e < A_VEC4 ? HIDDEN4[a_block + next * M4 + e] : vec4(0.0);
                }
                for (int f = 0; f < B_FETCHES; f++) {
                    int e = t + f * LOCAL_SIZE, row = next + e / N4;
                    fetched_b[f] = e < B_VEC4 && row < LAST_HIDDEN ? OUT_W4[row * ROW4 + c / 4 + e % N4] : vec4(0.0);
                }
            }
            int a_at = at + tm, b_at = at + A_VEC4 + tn;
            STEP(0) STEP(1) STEP(2) STEP(3)
#if GEMM_K > 4
            STEP(4) STEP(5) STEP(6) STEP(7)
#endif
#if GEMM_K > 8
            STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)
#endif
            current = 1 - current;
        }
        for (int r = 0; r < RN; r++) {  // columns in increasing order, as consider() needs for ties
            for (int q = 0; q < 4; q++) {
                int k = c + 4 * (r * (N4 / RN) + tn) + q;
                if (k < VOCAB) {
                    float bias = BIASES[OUT_BIAS_AT + k];
                    for (int i = 0; i < GEMM_TM; i++) consider(top[i], sum[i], index[i], acc[i][r][q] + bias, k);
                }
            }
        }
    }
    barrier();  // the stages are read for the last time: the states take their place
    for (int i = 0; i < GEMM_TM; i++) {
        int row = 4 * ((i / 4) * (M4 / RM) + tm) + i % 4;
        gemm_shared[row * ROW_THREADS + tn] = packed_state(top[i], sum[i], index[i], NO_LOGIT);
    }
    barrier();
    for (int m = t; m < GEMM_M && base + m < count; m += LOCAL_SIZE) {
        float best = NO_LOGIT, total = 0.0, unused = NO_LOGIT;
        int id = VOCAB;
        for (int r = 0; r < ROW_THREADS; r++) merge(best, total, id, unused, gemm_shared[m * ROW_THREADS + r]);
        if (slices == 1) {
            PREDICTIONS[base + m] = prediction_word(VALID[base + m] != 0u, id, total);
        } else {
            STATES[(block * slices + slice) * GEMM_M + m] = packed_state(best, total, id, NO_LOGIT);
        }
    }
}
#endif
