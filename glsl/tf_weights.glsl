// Version-2 weights read from the raw byte stream (docs/FORMATS.md §14.3), bound as uint words: a matrix in
// any quantization through `matrix_words`, dequantized element by element inside the caller's loop, and
// float16 vectors (norms, biases) through any word buffer with HALF_AT. Each tensor is a buffer of its own,
// its byte 0 the buffer's; QUANT_* and *_BLOCK_BYTES come from engine/transformer/gpu/kernels.py.
layout(std430, binding = BINDING_MATRIX) readonly restrict buffer Matrix { uint matrix_words[]; };
uniform int m_quant;
uniform float m_scale, m_zero;  // u8 only

#include "tf_half.glsl"

uint matrix_byte(int i) {
    return (matrix_words[i >> 2] >> ((i & 3) << 3)) & 0xFFu;
}

float matrix_half(int i) {  // the float16 at byte i (even)
    uint word = matrix_words[i >> 2];
    return unpackHalf2x16((i & 2) != 0 ? word >> 16 : word).x;
}

// The 4 bytes at byte i (even) as one little-endian word: q8/q4 blocks start 2 bytes apart from words.
uint matrix_word(int i) {
    uint low = matrix_words[i >> 2];
    return (i & 2) == 0 ? low : (low >> 16) | (matrix_words[(i >> 2) + 1] << 16);
}

// Element `index` (row-major) of the bound matrix, as float32: w = d × q per block, (q − zero) × scale, f16.
float matrix_at(int index) {
    if (m_quant == QUANT_F16) return matrix_half(2 * index);
    if (m_quant == QUANT_U8) return (float(matrix_byte(index)) - m_zero) * m_scale;
    int block = index / BLOCK, j = index % BLOCK;
    if (m_quant == QUANT_Q8) {
        int at = block * Q8_BLOCK_BYTES;
        uint q = matrix_byte(at + 2 + j);
        return matrix_half(at) * float(int(q) - int((q & 128u) << 1));
    }
    int at = block * Q4_BLOCK_BYTES;
    uint nibbles = matrix_byte(at + 2 + (j % (BLOCK / 2)));
    uint q = j < BLOCK / 2 ? nibbles & 15u : nibbles >> 4;
    return matrix_half(at) * (float(q) - 8.0);
}
