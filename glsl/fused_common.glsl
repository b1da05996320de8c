// What the fused kernels share: the prepared weights (fused_tables.comp, fused_dequant.comp), the prompt,
// prediction and score buffers, staging a group's prompt tokens in shared memory, the first layer's table
// sums, the attention head, and the online softmax.
//
// Prompts: a header [n, row_len, 0, 0] then n rows of row_len tokens, either
//   PROMPTS_AS_PIXELS = 1: token-texture pixels, 3 bytes each (id % 256, id / 256, TOKEN_MARK), a row
//                          ending at the first pixel whose blue is not TOKEN_MARK (docs/FORMATS.md §4);
//                          a row of no token is an empty context (scoring a text's first token), or
//   PROMPTS_AS_PIXELS = 0: uint16 ids, two to a word, every row exactly row_len tokens.
// Predictions: one word per prompt, the bytes of its prediction pixel (id % 256, id / 256, round(255 p),
// WRITTEN_ALPHA), or REFUSED_WORD (alpha 0) when the prompt holds an id >= VOCAB.
// The host knows a word was written because its alpha byte is one of those two, never the poison it left there.
// SCORING = 1 also reads each prompt's target id (TARGETS) and writes log p(target) (LOGPROBS, docs §9).
// GENERATE = 1 (ids only; docs §11) runs steps first_step..last_step - 1 in one dispatch: row p holds its
// LENGTHS[p] prompt ids, then its generated ids (row_len even, so no two rows share a word); each step reads
// the row's window, writes the chosen id after it, its prediction word to PREDICTIONS[step * n + p] and its
// log-probability to LOGPROBS[step * n + p]. Rows never wait on other work groups: a group owns its rows.
// HIDDEN_OUT = 1 (fused_tiles) stops after the hidden layers: it writes the last one to HIDDEN in fused_logits.comp's
// layout and each prompt's validity to VALID, for prompts prompt_offset.. of the buffer (engine/executors/fused_gemm.py).
// RESIDENT = 1 (fused_small, ids; engine/executors/fused_resident.py) stays running and takes one prompt at a
// time from MAILBOX, host memory the host writes while the dispatch runs (words at MAILBOX_*): a request's
// sequence number, then its length and ids each tagged with the number's low 16 bits (so the GPU knows it
// reads the whole request whatever order the host's stores land in); the answer is the prediction word,
// then the sequence number acknowledged. The group's thread 0 copies a request into `request` (shared).
//
// The prepared weights (docs/FORMATS.md §3, rearranged; every float in float32):
//   FIRST[(s * VOCAB + v) * HIDDEN0 + j]  the first layer's share of token v at context slot s: embed[v] times
//                                         the rows of layer0.weight slot s reads (mean: one slot, the sum
//                                         is divided by the token count; concat: W slots; attention: CONCAT)
//   HEAD                                  attention only: embed[v]·query|key|value (V x D each), pos[j]·
//                                         query|key|value (W x D each), then the rows of layer0.weight the
//                                         head's output reads (D x HIDDEN0)
//   DENSE                                 layer l >= 1 weights, [in][out], at LAYER_DENSE[l]
//   BIASES                                layer l biases at LAYER_BIAS[l], then out.bias padded at OUT_BIAS_AT
//   OUT_W4                                out.weight, rows padded to VOCAB_PAD columns, as vec4s

layout(std430, binding = BINDING_FIRST) readonly restrict buffer First { float FIRST[]; };
layout(std430, binding = BINDING_HEAD) readonly restrict buffer Head { float HEAD[]; };
layout(std430, binding = BINDING_DENSE) readonly restrict buffer Dense { float DENSE[]; };
layout(std430, binding = BINDING_BIASES) readonly restrict buffer Biases { float BIASES[]; };
layout(std430, binding = BINDING_OUT_WEIGHTS) readonly restrict buffer OutWeights { vec4 OUT_W4[]; };
#if RESIDENT
layout(std430, binding = BINDING_MAILBOX) coherent volatile restrict buffer Mailbox { uint MAILBOX[]; };
#else
#if GENERATE
layout(std430, binding = BINDING_PROMPTS) coherent restrict buffer Prompts { uint PROMPTS[]; };
layout(std430, binding = BINDING_LENGTHS) readonly restrict buffer Lengths { uint LENGTHS[]; };
uniform int first_step;
uniform int last_step;
int gen_step = 0;  // the step being generated
#else
layout(std430, binding = BINDING_PROMPTS) readonly restrict buffer Prompts { uint PROMPTS[]; };
#endif
#if HIDDEN_OUT
layout(std430, binding = BINDING_HIDDEN) writeonly restrict buffer Hidden { float HIDDEN[]; };
layout(std430, binding = BINDING_VALID) writeonly restrict buffer Valid { uint VALID[]; };
uniform int prompt_offset;  // the part's first prompt in the prompts buffer
uniform int part_count;  // its prompts: work groups of a grid rounded up past them compute none
// Where hidden unit k of the part's prompt p goes (fused_logits.comp's layout).
int hidden_at(int p, int k) { return ((p / GEMM_M) * K_PAD + k) * GEMM_M + p % GEMM_M; }
#else
layout(std430, binding = BINDING_PREDICTIONS) writeonly restrict buffer Predictions { uint PREDICTIONS[]; };
#endif
#endif
#if SCORING
layout(std430, binding = BINDING_TARGETS) readonly restrict buffer Targets { uint TARGETS[]; };
#endif
#if SCORING || GENERATE
layout(std430, binding = BINDING_LOGPROBS) writeonly restrict buffer Logprobs { float LOGPROBS[]; };
#endif

#include "online_softmax.glsl"

const int LAYER_WIDTH[DEPTH] = int[DEPTH](LAYER_WIDTHS);
const int LAYER_DENSE[DEPTH] = int[DEPTH](LAYER_DENSE_AT);
const int LAYER_BIAS[DEPTH] = int[DEPTH](LAYER_BIAS_AT);
const int LAYER_RESIDUAL[DEPTH] = int[DEPTH](LAYER_RESIDUALS);  // 1: the layer adds its input

#if RESIDENT
int prompt_count() { return 1; }
int prompt_row_len() { return int(request[REQUEST_LENGTH]); }
int prompt_length(int p, int row_len) { return row_len; }
uint raw_token(int p, int row_len, int i) { return request[REQUEST_IDS + i]; }
#else
int prompt_count() { return int(PROMPTS[0]); }
int prompt_row_len() { return int(PROMPTS[1]); }
#endif

#if RESIDENT  // the request's ids, above
#elif PROMPTS_AS_PIXELS
uint prompt_byte(int index) { return (PROMPTS[HEADER_WORDS + index / 4] >> (8 * (index % 4))) & 255u; }

int prompt_length(int p, int row_len) {
    int n = 0;
    while (n < row_len && prompt_byte((p * row_len + n) * 3 + 2) == uint(TOKEN_MARK)) n++;
    return n;
}

uint raw_token(int p, int row_len, int i) {
    int b = (p * row_len + i) * 3;
    return prompt_byte(b) | (prompt_byte(b + 1) << 8);
}
#else
#if GENERATE
int own_prompt = 0;  // OWN_ROW: the row's prompt length, read once a dispatch
int prompt_length(int p, int row_len) { return (GROUP_PROMPTS == 1 ? own_prompt : int(LENGTHS[p])) + gen_step; }
#else
int prompt_length(int p, int row_len) { return row_len; }
#endif

uint raw_token(int p, int row_len, int i) {
    int j = p * row_len + i;
    return (PROMPTS[HEADER_WORDS + j / 2] >> (16 * (j % 2))) & 0xFFFFu;
}
#endif

// Tokens of GROUP_PROMPTS prompts staged STAGE_W at a time: each prompt's last min(length, CONTEXT_WINDOW)
// tokens, oldest first, ids clamped into the vocabulary. A prompt holding an id >= VOCAB anywhere in its
// row, inside the window or before it, is refused as a whole. The kernel declares the shared arrays
// staged_count, staged_first, staged_valid (GROUP_PROMPTS long) and staged_ids (GROUP_PROMPTS * STAGE_W).

// Find each prompt's window (prompts past n get none); `group_threads` threads from `t`.
void stage_windows(int base, int n, int row_len, int t, int group_threads) {
    for (int m = t; m < GROUP_PROMPTS; m += group_threads) {
        int length = base + m < n ? prompt_length(base + m, row_len) : 0;
        int count = min(length, CONTEXT_WINDOW);
        bool valid = true;
#if !GENERATE  // generated rows hold the host-checked prompt and ids the GPU chose
        for (int i = 0; i < length; i++) valid = valid && raw_token(base + m, row_len, i) < uint(VOCAB);
#endif
        staged_count[m] = count;
        staged_first[m] = length - count;
        staged_valid[m] = valid;
    }
}

#if GENERATE && GROUP_PROMPTS == 1
// One generated row (fused_small, work group (0, p)): its invocation 0 keeps the row's last CONTEXT_WINDOW
// ids in a ring (id at position i in own_ids[i % CONTEXT_WINDOW]), loaded once a dispatch and appended to by
// finish: each step stages from it with no global read and no buffer barrier, only the group's barrier.
// The keeper also writes each step's results; it reads the row count and length once a dispatch, and writes
// each id's word whole (its other half is the id before it, in the ring, or not generated yet), so a step
// never waits on a read of device memory.
const bool OWN_ROW = true;
uint own_ids[CONTEXT_WINDOW];
int own_rows = 0, own_row_len = 0;

#if SUBGROUP_SIZE > 0
bool row_keeper(int t) { return gl_SubgroupID == 0u && gl_SubgroupInvocationID == 0u; }  // finishes the merge
#else
bool row_keeper(int t) { return t == 0; }
#endif

void load_own_row(int p, int t) {
    own_prompt = int(LENGTHS[p]);
    if (!row_keeper(t)) return;
    own_rows = prompt_count();
    own_row_len = prompt_row_len();
    int length = own_prompt + first_step;
    for (int i = max(0, length - CONTEXT_WINDOW); i < length; i++) own_ids[i % CONTEXT_WINDOW] = raw_token(p, own_row_len, i);
}
#else
const bool OWN_ROW = false;
bool row_keeper(int t) { return t == 0; }
#endif

// Stage window tokens [chunk, chunk + STAGE_W) of every prompt of the group.
void stage_chunk(int base, int row_len, int chunk, int t, int group_threads) {
    if (OWN_ROW && !row_keeper(t)) return;
    for (int e = OWN_ROW ? 0 : t; e < GROUP_PROMPTS * STAGE_W; e += (OWN_ROW ? 1 : group_threads)) {
        int m = e / STAGE_W, i = chunk + e % STAGE_W;
#if GENERATE && GROUP_PROMPTS == 1
        uint id = i < staged_count[m] ? own_ids[(staged_first[m] + i) % CONTEXT_WINDOW] : 0u;
#else
        uint id = i < staged_count[m] ? raw_token(base + m, row_len, staged_first[m] + i) : 0u;
#endif
        staged_ids[e] = min(id, uint(VOCAB - 1));
    }
}

// Sum over staged tokens [chunk, chunk + STAGE_W) of prompt m of FIRST[slot][token][j]: mean reads one slot,
// concat and attention the slot SLOTS - count + position (positions before slot 0 are not concatenated).
float staged_sum(int m, int chunk, int j) {
    float sum = 0.0;
    int count = staged_count[m];
    for (int i = 0; i < STAGE_W; i++) {
        int position = chunk + i;
#if CONTEXT_MODE == MODE_MEAN
        int slot = 0;
#else
        int slot = SLOTS - count + position;
#endif
        if (position < count && slot >= 0) sum += FIRST[(slot * VOCAB + int(staged_ids[m * STAGE_W + i])) * HIDDEN0 + j];
    }
    return sum;
}

// h_0[j] from the summed first-layer shares (and, for attention, the head's share added already).
float first_activation(int m, float sum, int j) {
#if CONTEXT_MODE == MODE_MEAN
    sum /= float(max(staged_count[m], 1));
#endif
    return max(sum + BIASES[LAYER_BIAS[0] + j], 0.0);
}

#if CONTEXT_MODE == MODE_ATTENTION
// The attention head of prompt m, whose whole window is staged (CONTEXT_WINDOW <= STAGE_W): token j places
// back from the last, and its query, key and value rows (u_j = embed[t] + pos[j], so u_j · query =
// EQ[t] + PQ[j]).
int back_token(int m, int j) { return int(staged_ids[m * STAGE_W + staged_count[m] - 1 - j]); }
float head_q_of(int m, int dd) { return HEAD[EQ_AT + back_token(m, 0) * HEAD_DIM + dd] + HEAD[PQ_AT + dd]; }
float head_k(int m, int j, int dd) {
    return HEAD[EK_AT + back_token(m, j) * HEAD_DIM + dd] + HEAD[PK_AT + j * HEAD_DIM + dd];
}
float head_v(int m, int j, int dd) {
    return HEAD[EV_AT + back_token(m, j) * HEAD_DIM + dd] + HEAD[PV_AT + j * HEAD_DIM + dd];
}
#endif

// The target's logit seen in column k (scoring only): -inf elsewhere.
float target_logit(int prompt, int k, float logit) {
#if SCORING
    return k == int(TARGETS[prompt]) ? logit : NO_LOGIT;
#else
    return NO_LOGIT;
#endif
}

#if RESIDENT
// The request's answer, then its sequence number: the host reads the word once it sees the number.
void answer(uint word) {
    MAILBOX[MAILBOX_PREDICTION] = word;
    memoryBarrierBuffer();
    MAILBOX[MAILBOX_ACK] = request[REQUEST_SEQ];
}
#endif

// Write prompt p's prediction word and, when scoring, log p(target) = target - top - log(sum); when
// generating, the step's word, log p(index) = -log(sum), and the id itself after the row's tokens.
void finish(int p, bool valid, int index, float top, float sum, float target) {
#if GENERATE && GROUP_PROMPTS == 1
    int at = gen_step * own_rows + p;
    PREDICTIONS[at] = prediction_word(valid, index, sum);
    LOGPROBS[at] = -log(sum);
    int length = prompt_length(p, 0);  // the position the new id takes (row_len is even: its parity)
    uint before = length % 2 == 1 ? own_ids[(length - 1) % CONTEXT_WINDOW] : 0u;
    PROMPTS[HEADER_WORDS + (p * own_row_len + length) / 2] = length % 2 == 1 ? before | (uint(index) << 16) : uint(index);
    own_ids[length % CONTEXT_WINDOW] = uint(index);
#elif GENERATE
    int at = gen_step * prompt_count() + p;
    PREDICTIONS[at] = prediction_word(valid, index, sum);
    LOGPROBS[at] = -log(sum);
    int length = prompt_length(p, 0);  // the position the new id takes
    int position = p * prompt_row_len() + length;
    int word = HEADER_WORDS + position / 2, shift = 16 * (position % 2);
    PROMPTS[word] = (PROMPTS[word] & ~(0xFFFFu << shift)) | (uint(index) << shift);
#elif RESIDENT
    answer(prediction_word(valid, index, sum));
#elif HIDDEN_OUT  // fused_logits.comp writes the words
#else
    PREDICTIONS[p] = prediction_word(valid, index, sum);
#if SCORING
    LOGPROBS[p] = target - top - log(sum);
#endif
#endif
}

#if GENERATE
// The kernel's forward pass once per step (after its start_steps); a step's ids are visible to the group's
// next step.
#define MAIN_STEPS(forward)                                                  \
    void main() {                                                            \
        start_steps();                                                       \
        for (gen_step = first_step; gen_step < last_step; gen_step++) {      \
            forward();                                                       \
            if (!OWN_ROW) memoryBarrierBuffer();                             \
            barrier();                                                       \
        }                                                                    \
    }
#else
#define MAIN_STEPS(forward) void main() { forward(); }
#endif
