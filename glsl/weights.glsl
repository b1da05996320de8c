// The weight texture (RGB8UI, the .pxi as uploaded) and per-tensor dequantization, shared by every pass.
// Byte i of the stream lives in pixel i / 3 (row-major, WEIGHTS_WIDTH wide), channel i % 3.
// Constants injected from the model's meta: WEIGHTS_WIDTH and, for each tensor T (its name upper-cased,
// '.' as '_': EMBED, ATTN_POS, LAYER0_WEIGHT, OUT_BIAS, ...), T_OFFSET (byte offset), T_SCALE and T_ZERO
// (w = (q - zero) * scale).
layout(binding = BINDING_WEIGHTS) uniform usampler2D weights;

float dequant(int offset, float scale, float zero_point, int index) {
    int byte_index = offset + index;
    int p = byte_index / 3;
    uint q = texelFetch(weights, ivec2(p % WEIGHTS_WIDTH, p / WEIGHTS_WIDTH), 0)[byte_index % 3];
    return (float(q) - zero_point) * scale;
}

// Element i of tensor T (row-major), dequantized.
#define WEIGHT(T, i) dequant(T##_OFFSET, T##_SCALE, T##_ZERO, (i))
