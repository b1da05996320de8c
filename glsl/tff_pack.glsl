// The fused executor's weights (engine/transformer/fused/packs.py): each dispatch binds one pack, a buffer of
// the tensors it reads laid end to end at byte offsets that are multiples of 16, and a record of ints in
// `params` saying where each tensor lies and how it is quantized. u8, f16 and vectors hold docs/FORMATS.md
// §14.3's bytes; a q8/q4 matrix is regrouped so a block's quants are whole aligned words: every block's 32
// (q8) or 16 (q4) quant bytes in order, then every block's float16 d at `scales`.
layout(std430, binding = BINDING_WEIGHTS) readonly buffer Weights { uint weights[]; };  // aliased: not restrict
layout(std430, binding = BINDING_WEIGHTS) readonly buffer Quads { uvec4 quads[]; };
layout(std430, binding = BINDING_PARAMS) readonly restrict buffer Params { int params[]; };

#include "tf_half.glsl"

uint weight_byte(int i) {
    return (weights[i >> 2] >> ((i & 3) << 3)) & 0xFFu;
}

float weight_half(int i) {  // the float16 at byte i (even)
    uint word = weights[i >> 2];
    return unpackHalf2x16((i & 2) != 0 ? word >> 16 : word).x;
}

// Element `index` (row-major) of the matrix at byte `at`: d × q per q8/q4 block (`aux`: the byte of its
// scales), (q − zero) × scale for u8 (`aux`: the scale's float bits), or its float16.
float element_at(int at, int quant, int aux, float zero, int index) {
    if (quant == QUANT_F16) return weight_half(at + 2 * index);
    if (quant == QUANT_U8) return (float(weight_byte(at + index)) - zero) * intBitsToFloat(aux);
    float d = weight_half(aux + 2 * (index / BLOCK));
    if (quant == QUANT_Q8) {
        uint q = weight_byte(at + index);
        return d * float(int(q) - int((q & 128u) << 1));
    }
    int j = index % BLOCK;
    uint nibbles = weight_byte(at + index / BLOCK * (BLOCK / 2) + j % (BLOCK / 2));
    return d * (float(j < BLOCK / 2 ? nibbles & 15u : nibbles >> 4) - 8.0);
}
