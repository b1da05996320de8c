// Attention, pass 2 (attention.glsl): the keyed query r[e] = key[e, :] . q, so that q . k_j = u_j . r, one
// invocation per (e, prompt).
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
layout(binding = BINDING_QUERY_IN, r32f) uniform readonly image2D query_in;
layout(binding = BINDING_KEYED_OUT, r32f) uniform writeonly image2D keyed_out;

void main() {
    int e = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (e >= EMBED_DIM) return;
    float r = 0.0;
    for (int dd = 0; dd < HEAD_DIM; dd++) r += WEIGHT(ATTN_KEY, e * HEAD_DIM + dd) * imageLoad(query_in, ivec2(dd, prompt)).r;
    imageStore(keyed_out, ivec2(e, prompt), vec4(r));
}
