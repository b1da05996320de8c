// What the fused kernels share: the prepared weights (glsl/fused_prepare.comp), the prompts and
// prediction buffers, reading a prompt's tokens, its hidden units, and the online softmax.
//
// Prompts: a header [n, row_len, 0, 0] then n rows of row_len tokens, either
//   PROMPTS_AS_PIXELS = 1: token-texture pixels, 3 bytes each (id % 256, id / 256, 255), a row ending at
//                          the first pixel whose blue is not 255 (docs/FORMATS.md §4), or
//   PROMPTS_AS_PIXELS = 0: uint16 ids, two to a word, every row exactly row_len tokens.
// Predictions: a header [error_at, 0, 0, 0] then one word per prompt, the bytes of its prediction pixel
// (id % 256, id / 256, round(255 p), 255). error_at is the lowest flat token index holding an id >= VOCAB
// (0xFFFFFFFF when none): the host refuses the whole run when it is set.

layout(std430, binding = 0) readonly restrict buffer PooledHidden { float P[]; };
layout(std430, binding = 1) readonly restrict buffer OutWeights { vec4 OUT_W4[]; };
layout(std430, binding = 2) readonly restrict buffer Biases { float BIAS[]; };
layout(std430, binding = 3) readonly restrict buffer Prompts { uint PROMPTS[]; };
layout(std430, binding = 4) restrict buffer Predictions { uint error_at; uint reserved[3]; uint PREDICTIONS[]; };

const int HEADER_WORDS = 4;
#define NO_LOGIT uintBitsToFloat(0xFF800000u)  // -infinity

int prompt_count() { return int(PROMPTS[0]); }
int prompt_row_len() { return int(PROMPTS[1]); }

#if PROMPTS_AS_PIXELS
uint prompt_byte(int index) { return (PROMPTS[HEADER_WORDS + index / 4] >> (8 * (index % 4))) & 255u; }

int prompt_length(int p, int row_len) {
    int n = 0;
    while (n < row_len && prompt_byte((p * row_len + n) * 3 + 2) == 255u) n++;
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

// A token id, checked: an id past the vocabulary is recorded (the run is refused) and read as 0.
int token(int p, int row_len, int i) {
    uint id = raw_token(p, row_len, i);
    if (id >= uint(VOCAB)) {
        atomicMin(error_at, uint(p * row_len + i));
        return 0;
    }
    return int(id);
}

// Hidden unit j of prompt p: relu(mean of P over its last CONTEXT_WINDOW tokens + b_hidden[j]).
float hidden_unit(int p, int row_len, int j) {
    int n = prompt_length(p, row_len);
    int first = max(0, n - CONTEXT_WINDOW);
    float sum = 0.0;
    for (int i = first; i < n; i++) sum += P[token(p, row_len, i) * HIDDEN_DIM + j];
    return max(sum / float(n - first) + BIAS[j], 0.0);
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

uint prediction_pixel(int index, float sum) {
    uint confidence = uint(floor(255.0 / sum + 0.5));
    return uint(index) | (confidence << 16) | (255u << 24);
}
