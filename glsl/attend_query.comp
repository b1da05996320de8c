// Attention, pass 1 (attention.glsl): the query q[dd] = u_0 . query[:, dd] of each prompt's last token, one
// invocation per (dd, prompt).
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "tails.glsl"
#include "attention.glsl"
layout(binding = BINDING_QUERY_OUT, r32f) uniform writeonly image2D query_out;

void main() {
    int dd = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (dd >= HEAD_DIM) return;
    int n = token_count(prompt);
    float q = 0.0;
    if (n > 0) {
        int last = token_back(prompt, n, 0);
        for (int e = 0; e < EMBED_DIM; e++) q += attention_u(last, 0, e) * WEIGHT(ATTN_QUERY, e * HEAD_DIM + dd);
    }
    imageStore(query_out, ivec2(dd, prompt), vec4(q));
}
