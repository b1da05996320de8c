// Pass 1: x, the first layer's input, for each prompt by the model's context mode (docs/FORMATS.md §3).
// One invocation per (element of x, prompt); x is stored in T_context (vectors.glsl layout, X_WIDTH x X_ROWS).
//   mean       the average of the last min(n, W) embedding rows
//   concat     the last W embedding rows side by side, oldest first, missing positions zero
//   attention  the last CONCAT rows side by side, then the head: m . value, m = sum_j a_j u_j (attention.glsl)
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "vectors.glsl"
#include "tails.glsl"
layout(binding = BINDING_X_OUT, r32f) uniform writeonly image2D x_out;
#if CONTEXT_MODE == MODE_ATTENTION
layout(binding = BINDING_MIXED_IN, r32f) uniform readonly image2D mixed_in;
#endif

// Embedding element e of the token at concatenated slot `slot` of `slots` (slot 0 the oldest): zero
// before the prompt's first token.
float slot_embedding(int prompt, int n, int slots, int slot, int e) {
    int back = slots - 1 - slot;
    return back < n ? WEIGHT(EMBED, token_back(prompt, n, back) * EMBED_DIM + e) : 0.0;
}

void main() {
    int d = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (d >= CONTEXT_DIM) return;
    int n = token_count(prompt);
    float value = 0.0;
#if CONTEXT_MODE == MODE_MEAN
    for (int back = 0; back < n; back++) value += WEIGHT(EMBED, token_back(prompt, n, back) * EMBED_DIM + d);
    value = n > 0 ? value / float(n) : 0.0;
#elif CONTEXT_MODE == MODE_CONCAT
    value = slot_embedding(prompt, n, CONTEXT_WINDOW, d / EMBED_DIM, d % EMBED_DIM);
#else
    if (d < CONCAT * EMBED_DIM) {
        value = slot_embedding(prompt, n, CONCAT, d / EMBED_DIM, d % EMBED_DIM);
    } else {
        int dd = d - CONCAT * EMBED_DIM;  // element of the head's output
        for (int e = 0; e < EMBED_DIM; e++) value += imageLoad(mixed_in, ivec2(e, prompt)).r * WEIGHT(ATTN_VALUE, e * HEAD_DIM + dd);
    }
#endif
    imageStore(x_out, vector_pixel(prompt, d, X_WIDTH, X_ROWS), vec4(value));
}
