// Attention, pass 5 (attention.glsl): m[e] = sum_j a_j u_j[e] over the prompt's n tokens (0 when n = 0), one
// invocation per (e, prompt); the context pass turns m into the head's output m . value.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "tails.glsl"
#include "attention.glsl"
layout(binding = BINDING_ATTENTION_IN, r32f) uniform readonly image2D attention_in;
layout(binding = BINDING_MIXED_OUT, r32f) uniform writeonly image2D mixed_out;

void main() {
    int e = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (e >= EMBED_DIM) return;
    int n = token_count(prompt);
    float m = 0.0;
    for (int j = 0; j < n; j++) m += imageLoad(attention_in, ivec2(j, prompt)).r * attention_u(token_back(prompt, n, j), j, e);
    imageStore(mixed_out, ivec2(e, prompt), vec4(m));
}
