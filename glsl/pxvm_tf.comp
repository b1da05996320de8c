// pxVM version 2 (docs/FORMATS.md §7.7): one instruction of a transformer program a dispatch. The opcode and
// its operands are read here from the program (one pixel a word, R | G << 8 | B << 16: every valid operand is
// below 2^24, so its low pixel holds it); the host reads them only to size the grid. Each opcode splits its
// work as the passes executor's kernel of the same operation does (glsl/tf_*.comp), with the same loop counts
// (engine/transformer/gpu/loops.py). Rows: row i of the run is position start + i; an instruction runs on rows
// row0 .. row0 + rows − 1 (LAST: the predicted rows), each row's activations row_floats floats of act.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_WEIGHTS) readonly restrict buffer Weights { uint weight_words[]; };
layout(std430, binding = BINDING_TABLE) readonly restrict buffer Table { uint table[]; };  // 4 words a tensor
layout(std430, binding = BINDING_PROGRAM) readonly restrict buffer Program { uint program[]; };
layout(std430, binding = BINDING_ACT) restrict buffer Act { float act[]; };
layout(std430, binding = BINDING_KEYS) restrict buffer Keys { uint keys[]; };
layout(std430, binding = BINDING_VALUES) restrict buffer Values { uint values[]; };
layout(std430, binding = BINDING_TOKENS) restrict buffer Tokens { int tokens[]; };
layout(std430, binding = BINDING_ROPE_TABLE) readonly restrict buffer RopeTable { vec2 cos_sin[]; };
layout(std430, binding = BINDING_PARTIAL) restrict buffer Partial { float partial[]; };
layout(std430, binding = BINDING_PREDICTIONS) writeonly restrict buffer Predictions { uint predictions[]; };
uniform int pc, row0, rows, start, row_floats, groups_x, first_query, segment, segments, token_at;

#include "tf_half.glsl"
#include "tf_top1.glsl"

int operand(int i) { return int(program[pc + 1 + 2 * i]); }
int element() { return int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE); }
int at(int row, int address) { return row * row_floats + address; }  // float `address` of run row `row`

// --- WEIGHTS: the tensor a table entry describes (byte offset, quantization, u8 scale and zero point) --------
int w_base, w_quant;
float w_scale, w_zero;

void use_tensor(int index) {
    w_base = int(table[4 * index]);
    w_quant = int(table[4 * index + 1]);
    w_scale = uintBitsToFloat(table[4 * index + 2]);
    w_zero = uintBitsToFloat(table[4 * index + 3]);
}

uint w_byte(int i) {
    i += w_base;
    return (weight_words[i >> 2] >> ((i & 3) << 3)) & 0xFFu;
}

float w_half(int i) {  // the float16 at byte i (even) of the tensor
    i += w_base;
    uint word = weight_words[i >> 2];
    return unpackHalf2x16((i & 2) != 0 ? word >> 16 : word).x;
}

uint w_word(int i) {  // the 4 bytes at byte i (even): q8/q4 blocks start 2 bytes apart from words
    i += w_base;
    uint low = weight_words[i >> 2];
    return (i & 2) == 0 ? low : (low >> 16) | (weight_words[(i >> 2) + 1] << 16);
}

float w_at(int index) {  // element `index` (row-major), dequantized (§14.3)
    if (w_quant == QUANT_F16) return w_half(2 * index);
    if (w_quant == QUANT_U8) return (float(w_byte(index)) - w_zero) * w_scale;
    int block = index / BLOCK, j = index % BLOCK;
    if (w_quant == QUANT_Q8) {
        int b = block * Q8_BLOCK_BYTES;
        uint q = w_byte(b + 2 + j);
        return w_half(b) * float(int(q) - int((q & 128u) << 1));
    }
    int b = block * Q4_BLOCK_BYTES;
    uint nibbles = w_byte(b + 2 + (j % (BLOCK / 2)));
    return w_half(b) * (float(j < BLOCK / 2 ? nibbles & 15u : nibbles >> 4) - 8.0);
}

float vector_at(int tensor, int i) {  // element i of a float16 vector tensor
    return HALF_AT(weight_words, int(table[4 * tensor]) / 2 + i);
}

// --- elementwise opcodes: one invocation an element of the rows' ranges -----------------------------------
void embed(int tensor, int width, int dst, bool by_position) {
    int e = element();
    if (e >= rows * width) return;
    int row = row0 + e / width, c = e % width;
    use_tensor(tensor);
    int source = by_position ? start + row : tokens[start + row];
    float value = w_at(source * width + c);
    act[at(row, dst + c)] = by_position ? act[at(row, dst + c)] + value : value;
}

void add_vector(int tensor, int len, int dst) {
    int e = element();
    if (e >= rows * len) return;
    int row = row0 + e / len, c = e % len;
    act[at(row, dst + c)] += vector_at(tensor, c);
}

// erf(x) to float32 precision, as glsl/tf_activate.comp's (its accuracy is measured there).
float erf_f32(float x) {
    float z = abs(x);
    if (z < 0.75) {
        float s = z * z;
        float series = 1.0 + s * (-1.0 / 3.0 + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 + s * (-1.0 / 1320.0
            + s * (1.0 / 9360.0 + s * (-1.0 / 75600.0 + s * (1.0 / 685440.0))))))));
        return x * 1.1283791670955126 * series;
    }
    float t = 1.0 / (1.0 + 0.5 * z);
    float poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return sign(x) * (1.0 - t * exp(-z * z + poly));
}

void activate(int src, int len, int dst, bool exact) {
    int e = element();
    if (e >= rows * len) return;
    int row = row0 + e / len, c = e % len;
    float x = act[at(row, src + c)];
    float inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -10.0, 10.0);
    act[at(row, dst + c)] = exact ? 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752)) : 0.5 * x * (1.0 + tanh(inner));
}

void silu_gate(int gate, int up, int len, int dst) {
    int e = element();
    if (e >= rows * len) return;
    int row = row0 + e / len, c = e % len;
    float g = act[at(row, gate + c)];
    act[at(row, dst + c)] = g / (1.0 + exp(-g)) * act[at(row, up + c)];
}

void add(int dst, int src, int len) {
    int e = element();
    if (e >= rows * len) return;
    int row = row0 + e / len, c = e % len;
    act[at(row, dst + c)] += act[at(row, src + c)];
}

void rope(int dst, int heads) {
    int half_dim = HEAD_DIM / 2;
    int e = element();
    if (e >= rows * heads * half_dim) return;
    int k = e % half_dim, head = e / half_dim % heads, row = row0 + e / (half_dim * heads);
    int first = at(row, dst + head * HEAD_DIM);
    int a = ROPE_PAIRS != 0 ? first + 2 * k : first + k;
    int b = ROPE_PAIRS != 0 ? a + 1 : a + half_dim;
    vec2 turn = cos_sin[(start + row) * half_dim + k];
    float u = act[a], w = act[b];
    act[a] = u * turn.x - w * turn.y;
    act[b] = w * turn.x + u * turn.y;
}

// --- norms: one work group a row (glsl/tf_norm.comp's sums) ----------------------------------------------
#define MEAN_OF(own, mean) \
    sums[lane] = own; \
    barrier(); \
    for (int s = LOCAL_SIZE / 2; s > 0; s >>= 1) { \
        if (lane < s) sums[lane] += sums[lane + s]; \
        barrier(); \
    } \
    float mean = sums[0] / float(width); \
    barrier();

void norm(int src, int width, int weight, int bias, int dst, bool layernorm) {
    int row = row0 + int(gl_WorkGroupID.x), lane = int(gl_LocalInvocationID.x);
    int source = at(row, src), target = at(row, dst);
    float sum = 0.0;
    for (int c = lane; c < width; c += LOCAL_SIZE) sum += act[source + c];
    MEAN_OF(sum, mean)
    float centre = layernorm ? mean : 0.0;
    float squares = 0.0;
    for (int c = lane; c < width; c += LOCAL_SIZE) {
        float d = act[source + c] - centre;
        squares += d * d;
    }
    MEAN_OF(squares, variance)
    float inverse = 1.0 / sqrt(variance + NORM_EPS);
    for (int c = lane; c < width; c += LOCAL_SIZE) {
        float y = (act[source + c] - centre) * inverse * vector_at(weight, c);
        act[target + c] = layernorm ? y + vector_at(bias, c) : y;
    }
}

// --- MATVEC: one work group an output r and TILE rows (glsl/tf_project.comp's walk) -----------------------
void matvec(int src, int in_len, int tensor, int out_len, int dst) {
    int r = int(gl_WorkGroupID.x + gl_WorkGroupID.y * groups_x);
    if (r >= out_len) return;  // the whole group: r is the group's
    int first = int(gl_WorkGroupID.z) * TILE, lane = int(gl_LocalInvocationID.x);
    int count = min(TILE, rows - first);
    use_tensor(tensor);
    float acc[TILE];
    for (int t = 0; t < TILE; t++) acc[t] = 0.0;
    if (w_quant == QUANT_Q8 || w_quant == QUANT_Q4) {
        bool q8 = w_quant == QUANT_Q8;
        int blocks = in_len / BLOCK, block_bytes = q8 ? Q8_BLOCK_BYTES : Q4_BLOCK_BYTES;
        for (int b = lane; b < blocks; b += LOCAL_SIZE) {
            int base = (r * blocks + b) * block_bytes;
            float sums_t[TILE];
            for (int t = 0; t < TILE; t++) sums_t[t] = 0.0;
            for (int word = 0; word < (q8 ? BLOCK / 4 : BLOCK / 8); word++) {
                uint bytes = w_word(base + 2 + 4 * word);
                for (int k = 0; k < (q8 ? 4 : 8); k++) {
                    int nibble = k < 4 ? 8 * k : 8 * (k - 4) + 4;
                    float q = q8 ? float(bitfieldExtract(int(bytes), 8 * k, 8)) : float(bitfieldExtract(bytes, nibble, 4)) - 8.0;
                    int c = b * BLOCK + (q8 ? 4 * word + k : 4 * word + (k % 4) + (k / 4) * (BLOCK / 2));
                    for (int t = 0; t < count; t++) sums_t[t] += q * act[at(row0 + first + t, src + c)];
                }
            }
            float d = w_half(base);
            for (int t = 0; t < TILE; t++) acc[t] += d * sums_t[t];
        }
    } else {
        for (int c = lane; c < in_len; c += LOCAL_SIZE) {
            float w = w_at(r * in_len + c);
            for (int t = 0; t < count; t++) acc[t] += w * act[at(row0 + first + t, src + c)];
        }
    }
    // only the lanes that had a block (or column) hold sums: the tree spans the next power of two of them
    int holding = min(LOCAL_SIZE, w_quant == QUANT_Q8 || w_quant == QUANT_Q4 ? in_len / BLOCK : in_len);
    int span = holding <= 1 ? 1 : 2 << findMSB(holding - 1);
    for (int t = 0; t < TILE; t++) tile_sums[t * LOCAL_SIZE + lane] = acc[t];
    barrier();
    for (int s = span / 2; s > 0; s >>= 1) {
        if (lane < s) {
            for (int t = 0; t < TILE; t++) tile_sums[t * LOCAL_SIZE + lane] += tile_sums[t * LOCAL_SIZE + lane + s];
        }
        barrier();
    }
    if (lane < count) act[at(row0 + first + lane, dst + r)] = tile_sums[lane * LOCAL_SIZE];
}

// --- ATTEND: phase 0 stores k, v; phase 1 a segment's online softmax; phase 2 merges (glsl/tf_attend*.comp) --
int cache_half(int layer, int position) { return (layer * CONTEXT + position) * ROW_WORDS * 2; }

void attend_store(int k, int v, int layer) {
    int e = element();
    if (e >= rows * ROW_WORDS) return;
    int row = row0 + e / ROW_WORDS, word = e % ROW_WORDS;
    int from = at(row, 0) + 2 * word;
    bool second = 2 * word + 1 < KV_WIDTH;
    int cached = cache_half(layer, start + row) / 2 + word;
    keys[cached] = packHalf2x16(vec2(act[from + k], second ? act[from + k + 1] : 0.0));
    values[cached] = packHalf2x16(vec2(act[from + v], second ? act[from + v + 1] : 0.0));
}

void attend_segment(int q, int layer) {
    int s = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), i = first_query + int(gl_WorkGroupID.z);
    int lane = int(gl_LocalInvocationID.x);
    int query = at(row0 + i, q + h * HEAD_DIM), kv = (h / (HEADS / KV_HEADS)) * HEAD_DIM;
    int begin = s * segment, end = min(begin + segment, start + row0 + i + 1);
    float m = uintBitsToFloat(0xFF800000u), l = 0.0;
    float acc[ATTEND_DIMS];
    for (int t = 0; t < ATTEND_DIMS; t++) acc[t] = 0.0;
    for (int chunk = begin; chunk < end; chunk += LOCAL_SIZE) {
        int j = chunk + lane;
        float score = uintBitsToFloat(0xFF800000u);
        if (j < end) {
            float dot_qk = 0.0;
            int key = cache_half(layer, j) + kv;
            for (int d = 0; d < HEAD_DIM; d++) dot_qk += act[query + d] * HALF_AT(keys, key + d);
            score = dot_qk * ATTENTION_SCALE;
        }
        scores[lane] = score;
        top[lane] = score;
        barrier();
        for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
            if (lane < half_size) top[lane] = max(top[lane], top[lane + half_size]);
            barrier();
        }
        float newest = max(m, top[0]);
        float carried = exp(m - newest);
        l *= carried;
        for (int t = 0; t < ATTEND_DIMS; t++) acc[t] *= carried;
        int count = min(LOCAL_SIZE, end - chunk);
        for (int u = 0; u < count; u++) {
            float p = exp(scores[u] - newest);
            l += p;
            int value = cache_half(layer, chunk + u) + kv;
            for (int t = 0; t < ATTEND_DIMS; t++) {
                int d = lane + t * LOCAL_SIZE;
                if (d < HEAD_DIM) acc[t] += p * HALF_AT(values, value + d);
            }
        }
        m = newest;
        barrier();
    }
    int into = ((int(gl_WorkGroupID.z) * HEADS + h) * segments + s) * (HEAD_DIM + 2);
    if (lane == 0) {
        partial[into] = m;
        partial[into + 1] = l;
    }
    for (int t = 0; t < ATTEND_DIMS; t++) {
        int d = lane + t * LOCAL_SIZE;
        if (d < HEAD_DIM) partial[into + 2 + d] = acc[t];
    }
}

void attend_combine(int dst) {
    int h = int(gl_WorkGroupID.x), i = int(gl_WorkGroupID.y);
    int base = (i * HEADS + h) * segments * (HEAD_DIM + 2);
    float most = uintBitsToFloat(0xFF800000u);
    for (int s = 0; s < segments; s++) most = max(most, partial[base + s * (HEAD_DIM + 2)]);
    float total = 0.0;
    for (int s = 0; s < segments; s++) {
        int p = base + s * (HEAD_DIM + 2);
        total += partial[p + 1] == 0.0 ? 0.0 : partial[p + 1] * exp(partial[p] - most);
    }
    for (int d = int(gl_LocalInvocationID.x); d < HEAD_DIM; d += LOCAL_SIZE) {
        float sum = 0.0;
        for (int s = 0; s < segments; s++) {
            int p = base + s * (HEAD_DIM + 2);
            sum += partial[p + 1] == 0.0 ? 0.0 : partial[p + 2 + d] * exp(partial[p] - most);
        }
        act[at(row0 + first_query + i, dst + h * HEAD_DIM + d)] = sum / total;
    }
}

// --- PREDICT: phase 0 a vocabulary segment's top logit; phase 1 merges each row's (glsl/tf_argmax*.comp) ----
void predict_segment(int src, int len) {
    int s = int(gl_WorkGroupID.x), i = int(gl_WorkGroupID.y), lane = int(gl_LocalInvocationID.x);
    float best = uintBitsToFloat(0xFF800000u), sum = 0.0;
    int index = -1;
    int end = min(len, (s + 1) * segment), logits = at(row0 + i, src);
    for (int k = s * segment + lane; k < end; k += LOCAL_SIZE) consider(best, sum, index, act[logits + k], k);
    top_value[lane] = best; top_sum[lane] = sum; top_index[lane] = index;
    MERGE_GROUP(lane)
    if (lane == 0) {
        int p = (i * segments + s) * 3;
        partial[p] = top_value[0];
        partial[p + 1] = top_sum[0];
        partial[p + 2] = intBitsToFloat(top_index[0]);
    }
}

void predict_merge() {
    int i = int(gl_WorkGroupID.x), lane = int(gl_LocalInvocationID.x);
    float best = uintBitsToFloat(0xFF800000u), sum = 0.0;
    int index = -1;
    for (int s = lane; s < segments; s += LOCAL_SIZE) {
        int p = (i * segments + s) * 3;
        merge(best, sum, index, partial[p], partial[p + 1], floatBitsToInt(partial[p + 2]));
    }
    top_value[lane] = best; top_sum[lane] = sum; top_index[lane] = index;
    MERGE_GROUP(lane)
    if (lane == 0) {
        predictions[2 * i] = uint(top_index[0]);
        predictions[2 * i + 1] = floatBitsToUint(top_sum[0]);
        if (token_at >= 0 && i == rows - 1) tokens[token_at] = top_index[0];  // greedy: the next position's token
    }
}

// One variant of this file is compiled for each (opcode, phase) a program uses (VARIANT = 4 · opcode + phase):
// llvmpipe runs every branch of a shader under lane masks, so one shader of every opcode took three times the
// time of the opcode alone. Each variant still reads its opcode and operands from the program.
#define PHASE_OF(op, phase) (4 * (op) + (phase))
void main() {
    if (int(program[pc] & 0xFFu) != VARIANT / 4) return;  // the host dispatched the program's instruction
    // never so (the host sets them); reading every uniform keeps each one in every variant, bound by name
    if (min(min(min(row0, rows), min(start, row_floats)), min(min(groups_x, first_query), min(segment, segments))) < 0
        || token_at < -1) return;
#if VARIANT == PHASE_OF(OP_EMBED, 0)
    embed(operand(0), operand(1), operand(2), false);
#elif VARIANT == PHASE_OF(OP_ADD_POSITION, 0)
    embed(operand(0), operand(1), operand(2), true);
#elif VARIANT == PHASE_OF(OP_LAYERNORM, 0)
    norm(operand(0), operand(1), operand(2), operand(3), operand(4), true);
#elif VARIANT == PHASE_OF(OP_RMSNORM, 0)
    norm(operand(0), operand(1), operand(2), 0, operand(3), false);
#elif VARIANT == PHASE_OF(OP_MATVEC, 0)
    matvec(operand(0), operand(1), operand(2), operand(3), operand(4));
#elif VARIANT == PHASE_OF(OP_ADD_VECTOR, 0)
    add_vector(operand(0), operand(1), operand(2));
#elif VARIANT == PHASE_OF(OP_ROPE, 0)
    rope(operand(0), operand(1));
#elif VARIANT == PHASE_OF(OP_ATTEND, 0)
    attend_store(operand(1), operand(2), operand(3));
#elif VARIANT == PHASE_OF(OP_ATTEND, 1)
    attend_segment(operand(0), operand(3));
#elif VARIANT == PHASE_OF(OP_ATTEND, 2)
    attend_combine(operand(4));
#elif VARIANT == PHASE_OF(OP_GELU_TANH, 0)
    activate(operand(0), operand(1), operand(2), false);
#elif VARIANT == PHASE_OF(OP_GELU, 0)
    activate(operand(0), operand(1), operand(2), true);
#elif VARIANT == PHASE_OF(OP_SILU_GATE, 0)
    silu_gate(operand(0), operand(1), operand(2), operand(3));
#elif VARIANT == PHASE_OF(OP_ADD, 0)
    add(operand(0), operand(1), operand(2));
#elif VARIANT == PHASE_OF(OP_PREDICT, 0)
    predict_segment(operand(0), operand(1));
#elif VARIANT == PHASE_OF(OP_PREDICT, 1)
    predict_merge();
#endif
}
