// Attention, pass 3 (attention.glsl): T_scores[prompt][j] = (q . k_j) / sqrt(HEAD_DIM) = (u_j . r) / sqrt(HEAD_DIM)
// for each context token j < n (j counts back from the last), one invocation per (j, prompt).
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "tails.glsl"
#include "attention.glsl"
layout(binding = BINDING_KEYED_IN, r32f) uniform readonly image2D keyed_in;
layout(binding = BINDING_SCORES_OUT, r32f) uniform writeonly image2D scores_out;

void main() {
    int j = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    int n = token_count(prompt);
    if (j >= n) return;
    int token = token_back(prompt, n, j);
    float score = 0.0;
    for (int e = 0; e < EMBED_DIM; e++) score += attention_u(token, j, e) * imageLoad(keyed_in, ivec2(e, prompt)).r;
    imageStore(scores_out, ivec2(j, prompt), vec4(score / sqrt(float(HEAD_DIM))));
}
