// Fused executor, the matrix products of a layer with what comes before and after them, one dispatch each:
// INPUT_KIND: PLAIN (source rows), NORM (source rows normalized on the way in: the work group computes each
// row's mean and variance first) or ATTENTION (the attention partials of tff_attend.comp, a row's segments
// merged as they are read); EPILOGUE: QKV (bias, RoPE, q written, k and v stored float16 in the cache),
// RESIDUAL (x += W·in + bias), GELU (inner = gelu(W·in + bias)), GATED (inner = silu(gate) ⊙ up), LOGITS.
//
// Each invocation owns a unit of two output rows (a, b) — consecutive rows, a RoPE pair, or for GATED the same
// row of gate and up — for TILE rows of input: every weight is dequantized once, a q8/q4 block at a time,
// for both rows and the tile, and each input element read once from shared memory for both rows. The input
// is staged CHUNK columns at a time (the whole work group), so its norm or merge is computed once per work
// group, not once per output row. A dispatch walks the columns column0 .. column0 + columns: a long
// reduction is split over dispatches, the running sums carried in `scratch` (flags: 1 first, 2 last).
// Record (engine/transformer/fused/packs.py): [in_dim, norm weight, norm bias (half indices, -1: none),
// parts, 0 × 4], then per part [at, quant, aux (tff_pack.glsl's element_at), zero bits, rows, bias (half
// index, -1), units, first work group]. Loop counts: engine/transformer/fused/kernels.py matvec_loops.
layout(local_size_x = LOCAL_SIZE) in;

#include "tff_pack.glsl"
layout(std430, binding = BINDING_SOURCE) readonly restrict buffer Source { float source[]; };
layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };
layout(std430, binding = BINDING_KEYS) restrict buffer Keys { uint keys[]; };
layout(std430, binding = BINDING_VALUES) restrict buffer Values { uint values[]; };
layout(std430, binding = BINDING_TABLE) readonly restrict buffer Table { vec2 cos_sin[]; };  // [position][k]
layout(std430, binding = BINDING_SCRATCH) restrict buffer Scratch { float scratch[]; };
uniform ivec4 run;    // (record, rows, row0: the first row's index in the activations, groups_x)
uniform ivec4 split;  // (column0, columns, flags, attention segments)

#define PART(p, field) params[run.x + 8 + 8 * (p) + (field)]
#if TILE == 1
#define SUM(s0, s1, t) (s0.x + s0.y + s0.z + s0.w)
#define SET_SUM(s0, s1, t, value) s0 = vec4(value, 0.0, 0.0, 0.0)
#else
#define SUM(s0, s1, t) ((t) < 4 ? s0[(t) & 3] : s1[(t) & 3])
#define SET_SUM(s0, s1, t, value) if ((t) < 4) s0[(t) & 3] = value; else s1[(t) & 3] = value
#endif

// Four weights of rows a and b (columns c .. c + 3 of the chunk) times the staged input, added to the tile's
// sums: TILE 1 keeps four columns' partial sums in s0's lanes; TILE 8 keeps rows 0-3 in s0, 4-7 in s1.
void add_quads(vec4 qa, vec4 qb, int c, inout vec4 a0, inout vec4 a1, inout vec4 b0, inout vec4 b1) {
#if TILE == 1
    vec4 x = staged[c >> 2];
    a0 += qa * x;
    b0 += qb * x;
#else
    for (int e = 0; e < 4; e++) {
        vec4 x0 = staged[2 * (c + e)], x1 = staged[2 * (c + e) + 1];
        a0 += qa[e] * x0;
        a1 += qa[e] * x1;
        b0 += qb[e] * x0;
        b1 += qb[e] * x1;
    }
#endif
}

// A part's matrix as its record gives it, read once (an invocation's loads are paid per SIMD lane on llvmpipe).
struct Matrix {
    int at, quant, aux;  // aux: tff_pack.glsl's element_at
    float zero;
};

Matrix matrix_of(int p) {
    return Matrix(PART(p, 0), PART(p, 1), PART(p, 2), intBitsToFloat(PART(p, 3)));
}

// A q8/q4 block of row `row` at column `column`: its quant bytes (q8: 32 in lo, hi; q4: 16 in lo) and its d.
void block_words(Matrix m, int row, int column, int in_dim, out uvec4 lo, out uvec4 hi, out float d) {
    bool q8 = m.quant == QUANT_Q8;
    int first = (m.at + (q8 ? row * in_dim + column : (row * in_dim + column) / 2)) >> 4;
    lo = quads[first];
    hi = q8 ? quads[first + 1] : uvec4(0u);
    d = weight_half(m.aux + 2 * ((row * in_dim + column) / BLOCK));
}

vec4 q8_quad(uvec4 lo, uvec4 hi, int k) {  // quants 4k .. 4k + 3, signed bytes
    int word = int(k < 4 ? lo[k] : hi[k - 4]);
    return vec4(bitfieldExtract(word, 0, 8), bitfieldExtract(word, 8, 8), bitfieldExtract(word, 16, 8),
                bitfieldExtract(word, 24, 8));
}

vec4 q4_quad(uvec4 lo, int k, uint nibble) {  // quants 4k .. 4k + 3 (nibble 0) or 4k + 16 .. 4k + 19 (nibble 4)
    uvec4 bytes = uvec4(lo[k], lo[k] >> 8, lo[k] >> 16, lo[k] >> 24) >> nibble;
    return vec4(bytes & 15u) - 8.0;
}

// HAS_Q8, HAS_Q4, HAS_ELEMENTS (u8 or f16): which matrices the model holds; the code of the others is left
// out (less for the driver to compile).
// Rows a and b, both q8 or both q4, over the BLOCK columns from chunk + c: each staged input read once for
// both, Σ q·x per row, then × its d.
void blocks_dot(Matrix ma, int ra, Matrix mb, int rb, int chunk, int c, int in_dim,
                inout vec4 a0, inout vec4 a1, inout vec4 b0, inout vec4 b1) {
    uvec4 la, ha, lb, hb;
    float da, db;
    block_words(ma, ra, chunk + c, in_dim, la, ha, da);
    block_words(mb, rb, chunk + c, in_dim, lb, hb, db);
    vec4 ta0 = vec4(0.0), ta1 = vec4(0.0), tb0 = vec4(0.0), tb1 = vec4(0.0);
#if HAS_Q8
    if (ma.quant == QUANT_Q8) {
        for (int k = 0; k < 8; k++) add_quads(q8_quad(la, ha, k), q8_quad(lb, hb, k), c + 4 * k, ta0, ta1, tb0, tb1);
    }
#endif
#if HAS_Q4
    if (ma.quant == QUANT_Q4) {
        for (int k = 0; k < 4; k++) {
            add_quads(q4_quad(la, k, 0u), q4_quad(lb, k, 0u), c + 4 * k, ta0, ta1, tb0, tb1);
            add_quads(q4_quad(la, k, 4u), q4_quad(lb, k, 4u), c + 4 * k + BLOCK / 2, ta0, ta1, tb0, tb1);
        }
    }
#endif
    a0 += da * ta0;
    a1 += da * ta1;
    b0 += db * tb0;
    b1 += db * tb1;
}

// Row r1 of m1 over the BLOCK columns from chunk + c into s0, s1, and, both q8 or both q4, row r2 of m2 into
// u0, u1 (u8 and f16 rows go one at a time).
void block_dot(Matrix m1, int r1, Matrix m2, int r2, int chunk, int c, int in_dim,
               inout vec4 s0, inout vec4 s1, inout vec4 u0, inout vec4 u1) {
    int quant = m1.quant;
    if (quant == QUANT_Q8 || quant == QUANT_Q4) {
        blocks_dot(m1, r1, m2, r2, chunk, c, in_dim, s0, s1, u0, u1);
        return;
    }
#if HAS_ELEMENTS
    int at = m1.at + (quant == QUANT_F16 ? 2 : 1) * r1 * in_dim;
    float scale = intBitsToFloat(m1.aux), zero = m1.zero;
    int columns = min(BLOCK, in_dim - chunk - c);  // not a constant: the loop stays a loop (less to compile)
    for (int j = 0; j < columns; j += 4) {
        vec4 w = vec4(0.0);
        for (int e = 0; e < min(4, columns - j); e++) {
            int column = chunk + c + j + e;
            w[e] = quant == QUANT_F16 ? weight_half(at + 2 * column) : (float(weight_byte(at + column)) - zero) * scale;
        }
        add_quads(w, vec4(0.0), c + j, s0, s1, u0, u1);  // u0, u1 gain zeros: row 2 is not read
    }
#endif
}

float bias_of(int p, int row) {
    int at = PART(p, 5);
    return at >= 0 ? HALF_AT(weights, at + row) : 0.0;
}

#if EPILOGUE == EPILOGUE_GELU
// erf(x) to float32 precision: its Maclaurin series below 0.75, else 1 − erfc(|x|) (Numerical Recipes' erfcc)
float erf_f32(float x) {
    float z = abs(x);
    if (z < 0.75) {
        float s = z * z;
        float series = 1.0 + s * (-1.0 / 3.0 + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 + s * (-1.0 / 1320.0
            + s * (1.0 / 9360.0 + s * (-1.0 / 75600.0 + s * (1.0 / 685440.0))))))));
        return x * 1.1283791670955126 * series;  // 2/√π
    }
    float t = 1.0 / (1.0 + 0.5 * z);
    float poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return sign(x) * (1.0 - t * exp(-z * z + poly));
}

float gelu(float x) {
    if (GELU_EXACT != 0) return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
    float inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -10.0, 10.0);  // tanh(±10) is ±1
    return 0.5 * x * (1.0 + tanh(inner));
}
#endif

#if EPILOGUE == EPILOGUE_QKV
// One float16 of a cache row written alone: its word's other half belongs to another invocation.
#define STORE_HALF(CACHE, index, value) { \
    int word_ = (index) >> 1; \
    uint shift_ = uint((index) & 1) * 16u; \
    atomicAnd(CACHE[word_], ~(0xFFFFu << shift_)); \
    atomicOr(CACHE[word_], (packHalf2x16(vec2(value, 0.0)) & 0xFFFFu) << shift_); }
#endif

void main() {
    int lane = int(gl_LocalInvocationID.x);
    int group = int(gl_WorkGroupID.x + gl_WorkGroupID.y * run.w);
    int first = int(gl_WorkGroupID.z) * TILE, positions = run.y, row0 = run.z;
    int count = min(TILE, positions - first);
    int in_dim = params[run.x];
    int part = 0;
    for (int p = 1; p < params[run.x + 3]; p++) {
        if (group >= PART(p, 7)) part = p;
    }
#if EPILOGUE == EPILOGUE_GATED
    part = 0;  // part 0 is the gate, part 1 the up projection: a unit is the same row of both
#endif
    int unit = (group - PART(part, 7)) * LOCAL_SIZE + lane;
    bool working = unit < PART(part, 6);
    int rows_of_part = PART(part, 4);
    int row_a = 2 * unit, row_b = 2 * unit + 1, part_b = part;
#if EPILOGUE == EPILOGUE_GATED
    row_a = unit; row_b = unit; part_b = 1;
#elif EPILOGUE == EPILOGUE_QKV && ROPE != 0
    int pair = unit % (HEAD_DIM / 2);
    if (part < 2) {
        int head_start = unit / (HEAD_DIM / 2) * HEAD_DIM;
        row_a = head_start + (ROPE_PAIRS != 0 ? 2 * pair : pair);
        row_b = row_a + (ROPE_PAIRS != 0 ? 1 : HEAD_DIM / 2);
    }
#endif
    bool has_b = working && row_b < PART(part_b, 4);

#if INPUT_KIND == INPUT_NORM
    // each row's statistics over the whole width, before any column is staged
    for (int t = 0; t < TILE; t++) {
        int at = (row0 + first + t) * WIDTH;
        float sum = 0.0;
        for (int c = lane; c < WIDTH; c += LOCAL_SIZE) sum += t < count ? source[at + c] : 0.0;
        reduced[lane] = sum;
        barrier();
        for (int s = LOCAL_SIZE / 2; s > 0; s >>= 1) {
            if (lane < s) reduced[lane] += reduced[lane + s];
            barrier();
        }
        float centre = LAYERNORM != 0 ? reduced[0] / float(WIDTH) : 0.0;
        barrier();
        float squares = 0.0;
        for (int c = lane; c < WIDTH; c += LOCAL_SIZE) {
            float d = t < count ? source[at + c] - centre : 0.0;
            squares += d * d;
        }
        reduced[lane] = squares;
        barrier();
        for (int s = LOCAL_SIZE / 2; s > 0; s >>= 1) {
            if (lane < s) reduced[lane] += reduced[lane + s];
            barrier();
        }
        if (lane == 0) {
            statistics[2 * t] = centre;
            statistics[2 * t + 1] = 1.0 / sqrt(reduced[0] / float(WIDTH) + NORM_EPS);
        }
        barrier();
    }
    int norm_weight = params[run.x + 1], norm_bias = params[run.x + 2];
#endif

    vec4 a0 = vec4(0.0), a1 = vec4(0.0), b0 = vec4(0.0), b1 = vec4(0.0);  // row a's and b's sums (add_quad)
    int slot = group * LOCAL_SIZE + lane;  // this unit's place in the scratch of a split reduction
    int slots = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * LOCAL_SIZE;
    if ((split.z & 1) == 0) {
        for (int t = 0; t < count; t++) {
            int at = ((first + t) * slots + slot) * 2;
            SET_SUM(a0, a1, t, scratch[at]);
            SET_SUM(b0, b1, t, scratch[at + 1]);
        }
    }
    int end = min(split.x + split.y, in_dim);
    Matrix ma = matrix_of(part), mb = matrix_of(part_b);
    bool paired = has_b && mb.quant == ma.quant && (ma.quant == QUANT_Q8 || ma.quant == QUANT_Q4);
    for (int chunk = split.x; chunk < end; chunk += CHUNK) {
        barrier();  // the chunk before is no longer read
        for (int i = lane; i < TILE * CHUNK; i += LOCAL_SIZE) {
            int t = i % TILE, c = chunk + i / TILE;
            float value = 0.0;
            if (t < count && c < in_dim) {
                int row = (INPUT_KIND == INPUT_ATTENTION ? 0 : row0) + first + t;  // partials: the block's rows
#if INPUT_KIND == INPUT_PLAIN
                value = source[row * in_dim + c];
#elif INPUT_KIND == INPUT_NORM
                value = (source[row * in_dim + c] - statistics[2 * t]) * statistics[2 * t + 1];
                value = value * HALF_AT(weights, norm_weight + c) + (norm_bias >= 0 ? HALF_AT(weights, norm_bias + c) : 0.0);
#else
                // o = Σ_s acc_s exp(m_s − M) / Σ_s l_s exp(m_s − M) over the row's segments (empty ones: l = 0)
                int h = c / HEAD_DIM, d = c % HEAD_DIM, segments = split.w;
                int base = (row * HEADS + h) * segments * (HEAD_DIM + 2);
                float most = uintBitsToFloat(0xFF800000u), total = 0.0, sum = 0.0;
                for (int s = 0; s < segments; s++) most = max(most, source[base + s * (HEAD_DIM + 2)]);
                for (int s = 0; s < segments; s++) {
                    int at = base + s * (HEAD_DIM + 2);
                    float weight = source[at + 1] == 0.0 ? 0.0 : exp(source[at] - most);
                    total += source[at + 1] * weight;
                    sum += source[at + 2 + d] * weight;
                }
                value = sum / total;
#endif
            }
            staged[i >> 2][i & 3] = value;  // element (t, c) at float (c − chunk) · TILE + t
        }
        barrier();
        if (working) {
            for (int c = 0; c < CHUNK && chunk + c < end; c += BLOCK) {
                // both rows at once when paired, else a, then b: block_dot appears once (less to compile)
                for (int pass = 0; pass < (paired || !has_b ? 1 : 2); pass++) {
                    Matrix m1 = pass == 0 ? ma : mb;
                    int r1 = pass == 0 ? row_a : row_b;
                    vec4 s0 = vec4(0.0), s1 = vec4(0.0), u0 = vec4(0.0), u1 = vec4(0.0);
                    block_dot(m1, r1, paired ? mb : m1, paired ? row_b : r1, chunk, c, in_dim, s0, s1, u0, u1);
                    if (pass == 0) {
                        a0 += s0;
                        a1 += s1;
                    }
                    if (pass == 1 || paired) {
                        b0 += pass == 1 ? s0 : u0;
                        b1 += pass == 1 ? s1 : u1;
                    }
                }
            }
        }
    }
    if (!working) return;
    if ((split.z & 2) == 0) {
        for (int t = 0; t < count; t++) {
            int at = ((first + t) * slots + slot) * 2;
            scratch[at] = SUM(a0, a1, t);
            scratch[at + 1] = SUM(b0, b1, t);
        }
        return;
    }
    float bias_a = bias_of(part, row_a), bias_b = has_b ? bias_of(part_b, row_b) : 0.0;
    for (int t = 0; t < count; t++) {
        float a = SUM(a0, a1, t) + bias_a, b = SUM(b0, b1, t) + bias_b;
        int i = (EPILOGUE == EPILOGUE_LOGITS ? 0 : row0) + first + t;  // logits: rows of their own
#if EPILOGUE == EPILOGUE_QKV
        ivec2 at = rows[i];
#if ROPE != 0
        if (part < 2) {
            vec2 turn = cos_sin[at.y * (HEAD_DIM / 2) + pair];
            float rotated_a = a * turn.x - b * turn.y;
            b = b * turn.x + a * turn.y;
            a = rotated_a;
        }
#endif
        if (part == 0) {
            target[i * Q_WIDTH + row_a] = a;
            target[i * Q_WIDTH + row_b] = b;  // q's rows come in pairs: Q_WIDTH is even
        } else {
            int cached = (at.x * CONTEXT + at.y) * 2 * KV_ROW_WORDS;
            if (row_b == row_a + 1 && (row_a & 1) == 0) {  // one whole word
                uint word = packHalf2x16(vec2(a, has_b ? b : 0.0));
                if (part == 1) keys[(cached + row_a) >> 1] = word;
                else values[(cached + row_a) >> 1] = word;
            } else {  // RoPE halves: a and b lie in two words shared with other units
                STORE_HALF(keys, cached + row_a, a)
                STORE_HALF(keys, cached + row_b, b)
            }
        }
#elif EPILOGUE == EPILOGUE_RESIDUAL
        target[i * rows_of_part + row_a] += a;
        if (has_b) target[i * rows_of_part + row_b] += b;
#elif EPILOGUE == EPILOGUE_GELU
        target[i * rows_of_part + row_a] = gelu(a);
        if (has_b) target[i * rows_of_part + row_b] = gelu(b);
#elif EPILOGUE == EPILOGUE_GATED
        target[i * rows_of_part + row_a] = a / (1.0 + exp(-a)) * b;
#else
        target[i * rows_of_part + row_a] = a;
        if (has_b) target[i * rows_of_part + row_b] = b;
#endif
    }
}
