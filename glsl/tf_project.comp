// Version 2, project (and logits): target[i][r] = Σ_c W[r][c] · source[source_row0 + i][c] (+ bias[r]), W
// dequantized inside the sum (tf_weights.glsl). One work group per output row r and TILE positions: each
// invocation walks the columns c ≡ lane (mod LOCAL_SIZE), dequantizes W[r][c] once for the TILE positions,
// and the partial sums meet in shared memory. Loop counts: engine/transformer/gpu/loops.py project_loops.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_weights.glsl"
layout(std430, binding = BINDING_SOURCE) readonly restrict buffer Source { float source[]; };
layout(std430, binding = BINDING_TARGET) writeonly restrict buffer Target { float target[]; };
layout(std430, binding = BINDING_BIAS) readonly restrict buffer Bias { uint bias_words[]; };
uniform int in_dim, out_dim, positions, source_row0, has_bias, groups_x;

void main() {
    int r = int(gl_WorkGroupID.x + gl_WorkGroupID.y * groups_x);
    if (r >= out_dim) return;  // the whole group: r is the group's
    int first = int(gl_WorkGroupID.z) * TILE, lane = int(gl_LocalInvocationID.x);
    int count = min(TILE, positions - first);
    float acc[TILE];
    for (int t = 0; t < TILE; t++) acc[t] = 0.0;
    if (m_quant == QUANT_Q8 || m_quant == QUANT_Q4) {
        // a block at a time: its d read once, its quants a word (4 of them, or 8 nibbles) at a time, d × Σ q x
        bool q8 = m_quant == QUANT_Q8;
        int blocks = in_dim / BLOCK, block_bytes = q8 ? Q8_BLOCK_BYTES : Q4_BLOCK_BYTES;
        for (int b = lane; b < blocks; b += LOCAL_SIZE) {
            int at = (r * blocks + b) * block_bytes;
            float sums[TILE];
            for (int t = 0; t < TILE; t++) sums[t] = 0.0;
            for (int word = 0; word < (q8 ? BLOCK / 4 : BLOCK / 8); word++) {
                uint bytes = matrix_word(at + 2 + 4 * word);
                for (int k = 0; k < (q8 ? 4 : 8); k++) {
                    // q8: byte k of the word, signed; q4: low nibbles are elements 4·word + k, high ones 16 later
                    int nibble = k < 4 ? 8 * k : 8 * (k - 4) + 4;
                    float q = q8 ? float(bitfieldExtract(int(bytes), 8 * k, 8))
                                 : float(bitfieldExtract(bytes, nibble, 4)) - 8.0;
                    int c = b * BLOCK + (q8 ? 4 * word + k : 4 * word + (k % 4) + (k / 4) * (BLOCK / 2));
                    for (int t = 0; t < count; t++) sums[t] += q * source[(source_row0 + first + t) * in_dim + c];
                }
            }
            float d = matrix_half(at);
            for (int t = 0; t < TILE; t++) acc[t] += d * sums[t];
        }
    } else {
        for (int c = lane; c < in_dim; c += LOCAL_SIZE) {
            float w = matrix_at(r * in_dim + c);
            for (int t = 0; t < count; t++) acc[t] += w * source[(source_row0 + first + t) * in_dim + c];
        }
    }
    for (int t = 0; t < TILE; t++) partial[t * LOCAL_SIZE + lane] = acc[t];
    barrier();
    for (int s = LOCAL_SIZE / 2; s > 0; s >>= 1) {
        if (lane < s) {
            for (int t = 0; t < TILE; t++) partial[t * LOCAL_SIZE + lane] += partial[t * LOCAL_SIZE + lane + s];
        }
        barrier();
    }
    if (lane < count) {
        float bias = has_bias != 0 ? HALF_AT(bias_words, r) : 0.0;
        target[(first + lane) * out_dim + r] = partial[lane * LOCAL_SIZE] + bias;
    }
}
