// Version 2, project (and logits): target[i][row0 + r] (+)= Σ_c W[r][c] · source[source_row0 + i][c] over the
// columns c of one chunk [column0, column0 + columns), + bias[row0 + r] with the first chunk. PROJECT_SPLIT
// invocations per PROJECT_ROWS rows of the bound piece of the matrix and PROJECT_TILE positions, each over
// every PROJECT_SPLIT-th block (or column) of the chunk, their sums met in shared memory (none where the split
// is 1: no barrier); each weight dequantized once (q8/q4 blocks as tf_blocks.glsl packs them, 16 quants a
// uvec4) for the tile's positions, each source value read once for the rows. llvmpipe runs a work group's
// invocations as SIMD lanes and pays per lane for every storage load: the tile and the uvec4s share them
// (engine/transformer/gpu/loops.py: PROJECT_SHAPES, and the loop counts).
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_blocks.glsl"
// The source twice: as vec4 (q8/q4: rows of a multiple of 32 floats) and as floats (u8/f16: any width).
layout(std430, binding = BINDING_SOURCE) readonly buffer Source { vec4 source[]; };
layout(std430, binding = BINDING_SOURCE) readonly buffer SourceFloats { float source_floats[]; };
layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
layout(std430, binding = BINDING_BIAS) readonly restrict buffer Bias { uint bias_words[]; };
uniform int in_dim, out_dim, rows, row0, positions, source_row0, column0, columns, has_bias, groups_x;

const int R = PROJECT_ROWS, T = PROJECT_TILE, S = PROJECT_SPLIT;

void main() {
    int id = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    int r0 = id / S * R, part = id % S;  // every invocation reaches the barriers: rows past `rows` write nothing
    int first = int(gl_WorkGroupID.z) * T;
    int x_at[T];  // each position's source row (the tile's last repeated past `positions`)
    for (int t = 0; t < T; t++) x_at[t] = (source_row0 + min(first + t, positions - 1)) * in_dim;
    int row[R];  // the piece's rows (its last repeated past `rows`)
    for (int i = 0; i < R; i++) row[i] = min(r0 + i, rows - 1);
    float acc[R * T];
    for (int a = 0; a < R * T; a++) acc[a] = 0.0;
    int end = column0 + columns;
    int blocks = in_dim / BLOCK, scales = scales_at(rows * blocks);
    if (m_quant == QUANT_Q8) {
        for (int b = column0 / BLOCK + part; b < end / BLOCK; b += S) {
            float d[R];
            for (int i = 0; i < R; i++) d[i] = matrix_half(scales + 2 * (row[i] * blocks + b));
            for (int h = 0; h < 2; h++) {  // the block's columns 16h.., a uvec4 of 16 quants
                vec4 x[T * 4];
                for (int t = 0; t < T; t++) {
                    for (int j = 0; j < 4; j++) x[t * 4 + j] = source[((x_at[t] + b * BLOCK + 16 * h) >> 2) + j];
                }
                for (int i = 0; i < R; i++) {
                    uvec4 q = matrix_vectors[2 * (row[i] * blocks + b) + h];
                    for (int j = 0; j < 4; j++) {
                        vec4 w = d[i] * vec4((ivec4(int(q[j])) << ivec4(24, 16, 8, 0)) >> 24);  // signed bytes
                        for (int t = 0; t < T; t++) acc[i * T + t] += dot(w, x[t * 4 + j]);
                    }
                }
            }
        }
    } else if (m_quant == QUANT_Q4) {
        for (int b = column0 / BLOCK + part; b < end / BLOCK; b += S) {
            float d[R];
            uvec4 q[R];
            for (int i = 0; i < R; i++) {
                d[i] = matrix_half(scales + 2 * (row[i] * blocks + b));
                q[i] = matrix_vectors[row[i] * blocks + b];
            }
            for (int h = 0; h < 2; h++) {  // low nibbles: the block's columns 0..15; high ones: 16..31
                vec4 x[T * 4];
                for (int t = 0; t < T; t++) {
                    for (int j = 0; j < 4; j++) x[t * 4 + j] = source[((x_at[t] + b * BLOCK + 16 * h) >> 2) + j];
                }
                for (int i = 0; i < R; i++) {
                    for (int j = 0; j < 4; j++) {
                        uvec4 nibbles = (uvec4(q[i][j]) >> (uvec4(0, 8, 16, 24) + uint(4 * h))) & 15u;
                        vec4 w = d[i] * (vec4(nibbles) - 8.0);
                        for (int t = 0; t < T; t++) acc[i * T + t] += dot(w, x[t * 4 + j]);
                    }
                }
            }
        }
    } else {
        for (int c = column0 + part; c < end; c += S) {
            float x[T];
            for (int t = 0; t < T; t++) x[t] = source_floats[x_at[t] + c];
            for (int i = 0; i < R; i++) {
                float w = matrix_at(row[i] * in_dim + c);
                for (int t = 0; t < T; t++) acc[i * T + t] += w * x[t];
            }
        }
    }
#if PROJECT_SPLIT > 1
    int lane = int(gl_LocalInvocationID.x);
    for (int a = 0; a < R * T; a++) partial[a * LOCAL_SIZE + lane] = acc[a];
    barrier();
    for (int s = S / 2; s > 0; s >>= 1) {
        if (part < s) {
            for (int a = 0; a < R * T; a++) partial[a * LOCAL_SIZE + lane] += partial[a * LOCAL_SIZE + lane + s];
        }
        barrier();
    }
    if (part > 0) return;
    for (int a = 0; a < R * T; a++) acc[a] = partial[a * LOCAL_SIZE + lane];
#endif
    bool later_chunk = column0 > 0;
    for (int i = 0; i < R && r0 + i < rows; i++) {
        int r = row0 + r0 + i;
        float bias = has_bias != 0 && !later_chunk ? HALF_AT(bias_words, r) : 0.0;
        for (int t = 0; t < T && first + t < positions; t++) {
            int at = (first + t) * out_dim + r;
            target[at] = (later_chunk ? target[at] : bias) + acc[i * T + t];
        }
    }
}
