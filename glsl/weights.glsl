// The weight texture (RGB8UI, the .pxi as uploaded) and per-tensor dequantization, shared by every pass.
// Byte i of the stream lives in pixel i / 3 (row-major, WEIGHTS_WIDTH wide), channel i % 3.
// Constants injected from the model's meta: WEIGHTS_WIDTH and, for each tensor T,
// T_OFFSET (byte offset), T_SCALE and T_ZERO (w = (q - zero) * scale).
layout(binding = BINDING_WEIGHTS) uniform usampler2D weights;

float dequant(int offset, float scale, float zero_point, int index) {
    int byte_index = offset + index;
    int p = byte_index / 3;
    uint q = texelFetch(weights, ivec2(p % WEIGHTS_WIDTH, p / WEIGHTS_WIDTH), 0)[byte_index % 3];
    return (float(q) - zero_point) * scale;
}

#define W_B_HIDDEN(i) dequant(B_HIDDEN_OFFSET, B_HIDDEN_SCALE, B_HIDDEN_ZERO, (i))
#define W_B_OUT(i) dequant(B_OUT_OFFSET, B_OUT_SCALE, B_OUT_ZERO, (i))
#define W_EMBED(token, d) dequant(EMBED_OFFSET, EMBED_SCALE, EMBED_ZERO, (token) * EMBED_DIM + (d))
#define W_HIDDEN(d, h) dequant(HIDDEN_OFFSET, HIDDEN_SCALE, HIDDEN_ZERO, (d) * HIDDEN_DIM + (h))
#define W_OUT(h, k) dequant(OUT_OFFSET, OUT_SCALE, OUT_ZERO, (h) * VOCAB + (k))
