// A q8/q4 matrix (or a piece of its rows) as the passes executor uploads it (engine/transformer/gpu/executor.py,
// pack_blocks): every block's quants first, in row-major block order, 32 (q8) or 16 (q4) bytes each, so each is
// whole uvec4s; then every block's float16 d in the same order. u8 and f16 matrices keep §14.3's bytes.
#include "tf_weights.glsl"
layout(std430, binding = BINDING_MATRIX) readonly buffer MatrixVectors { uvec4 matrix_vectors[]; };

// The byte where the scales begin, after `blocks` blocks of quants.
int scales_at(int blocks) {
    return blocks * (m_quant == QUANT_Q8 ? BLOCK : BLOCK / 2);
}

// Element (row, c) of a bound piece of `rows` rows and `columns` columns in any quantization, as float32.
float packed_at(int row, int c, int rows, int columns) {
    if (m_quant != QUANT_Q8 && m_quant != QUANT_Q4) return matrix_at(row * columns + c);
    int blocks = columns / BLOCK, block = row * blocks + c / BLOCK, j = c % BLOCK;
    float d = matrix_half(scales_at(rows * blocks) + 2 * block);
    if (m_quant == QUANT_Q8) {
        uint q = matrix_byte(block * BLOCK + j);
        return d * float(int(q) - int((q & 128u) << 1));
    }
    uint nibbles = matrix_byte(block * (BLOCK / 2) + j % (BLOCK / 2));  // element j low, j + 16 high
    return d * (float(j < BLOCK / 2 ? nibbles & 15u : nibbles >> 4) - 8.0);
}
