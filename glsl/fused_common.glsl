// What the fused kernels share: the prepared weights (glsl/fused_prepare.comp), the prompt and prediction
// buffers, staging a group's prompt tokens in shared memory, hidden units, and the online softmax.
//
// Prompts: a header [n, row_len, 0, 0] then n rows of row_len tokens, either
//   PROMPTS_AS_PIXELS = 1: token-texture pixels, 3 bytes each (id % 256, id / 256, TOKEN_MARK), a row
//                          ending at the first pixel whose blue is not TOKEN_MARK (docs/FORMATS.md §4), or
//   PROMPTS_AS_PIXELS = 0: uint16 ids, two to a word, every row exactly row_len tokens.
// Predictions: one word per prompt, the bytes of its prediction pixel (id % 256, id / 256, round(255 p),
// WRITTEN_ALPHA), or REFUSED_WORD (alpha 0) when the prompt holds an id >= VOCAB.
// The host knows a word was written because its alpha byte is one of those two, never the poison it left there.

layout(std430, binding = BINDING_POOLED_HIDDEN) readonly restrict buffer PooledHidden { float P[]; };
layout(std430, binding = BINDING_OUT_WEIGHTS) readonly restrict buffer OutWeights { vec4 OUT_W4[]; };
layout(std430, binding = BINDING_BIASES) readonly restrict buffer Biases { float BIAS[]; };
layout(std430, binding = BINDING_PROMPTS) readonly restrict buffer Prompts { uint PROMPTS[]; };
layout(std430, binding = BINDING_PREDICTIONS) writeonly restrict buffer Predictions { uint PREDICTIONS[]; };

#define NO_LOGIT uintBitsToFloat(0xFF800000u)  // -infinity

int prompt_count() { return int(PROMPTS[0]); }
int prompt_row_len() { return int(PROMPTS[1]); }

#if PROMPTS_AS_PIXELS
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
int prompt_length(int p, int row_len) { return row_len; }

uint raw_token(int p, int row_len, int i) {
    int j = p * row_len + i;
    return (PROMPTS[HEADER_WORDS + j / 2] >> (16 * (j % 2))) & 0xFFFFu;
}
#endif

// Tokens of GROUP_PROMPTS prompts staged STAGE_W at a time: each prompt's last min(length, CONTEXT_WINDOW)
// tokens, ids clamped into the vocabulary. A prompt holding an id >= VOCAB anywhere in its row, inside the
// window or before it, is refused as a whole. The kernel declares the shared arrays staged_count,
// staged_first, staged_valid (GROUP_PROMPTS long) and staged_ids (GROUP_PROMPTS * STAGE_W).

// Find each prompt's window (prompts past n get none); `group_threads` threads from `t`.
void stage_windows(int base, int n, int row_len, int t, int group_threads) {
    for (int m = t; m < GROUP_PROMPTS; m += group_threads) {
        int length = base + m < n ? prompt_length(base + m, row_len) : 0;
        int count = min(length, CONTEXT_WINDOW);
        bool valid = true;
        for (int i = 0; i < length; i++) valid = valid && raw_token(base + m, row_len, i) < uint(VOCAB);
        staged_count[m] = count;
        staged_first[m] = length - count;
        staged_valid[m] = valid;
    }
}

// Stage window tokens [chunk, chunk + STAGE_W) of every prompt of the group.
void stage_chunk(int base, int row_len, int chunk, int t, int group_threads) {
    for (int e = t; e < GROUP_PROMPTS * STAGE_W; e += group_threads) {
        int m = e / STAGE_W, i = chunk + e % STAGE_W;
        uint id = i < staged_count[m] ? raw_token(base + m, row_len, staged_first[m] + i) : 0u;
        staged_ids[e] = min(id, uint(VOCAB - 1));
    }
}

// Sum of P[token][j] over staged tokens [chunk, chunk + STAGE_W) of prompt m.
float staged_sum(int m, int chunk, int j) {
    float sum = 0.0;
    int count = staged_count[m] - chunk;
    for (int i = 0; i < STAGE_W; i++) {
        if (i < count) sum += P[int(staged_ids[m * STAGE_W + i]) * HIDDEN_DIM + j];
    }
    return sum;
}

float hidden_from_sum(int m, float sum, int j) {
    return max(sum / float(max(staged_count[m], 1)) + BIAS[j], 0.0);
}

// Online softmax over logits seen one at a time: the running top logit, its (lowest) index and
// sum = sum of exp(logit - top); vec4(top, sum, index bits, 0) when stored. Empty: (-inf, 0, VOCAB).
void consider(inout float top, inout float sum, inout int index, float logit, int k) {
    bool better = logit > top;  // strict: columns arrive in increasing k, so the lowest index keeps a tie
    float e = exp(min(logit, top) - max(logit, top));
    sum = better ? sum * e + 1.0 : sum + e;
    index = better ? k : index;
    top = max(top, logit);
}

void merge(inout float top, inout float sum, inout int index, vec4 other) {
    int other_index = floatBitsToInt(other.z);
    if (other.y == 0.0) return;
    if (sum == 0.0) {
        top = other.x; sum = other.y; index = other_index;
        return;
    }
    float m = max(top, other.x);
    sum = sum * exp(top - m) + other.y * exp(other.x - m);
    if (other.x > top || (other.x == top && other_index < index)) index = other_index;
    top = m;
}

vec4 packed_state(float top, float sum, int index) { return vec4(top, sum, intBitsToFloat(index), 0.0); }

uint prediction_word(bool valid, int index, float sum) {
    uint confidence = uint(floor(255.0 / sum + 0.5));
    return valid ? uint(index) | (confidence << 16) | (uint(WRITTEN_ALPHA) << 24) : uint(REFUSED_WORD);
}
