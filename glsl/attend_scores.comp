// Attention, step 1: T_scores[prompt][j] = (q · k_j) / sqrt(HEAD_DIM) for each context token j < n (j counts
// back from the last), u_j = embed[t] + pos[j], q = u_0 · query, k_j = u_j · key (docs/FORMATS.md §3).
// One invocation per (j, prompt); context.comp turns the scores into the head's output.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "tails.glsl"
layout(binding = BINDING_SCORES_OUT, r32f) uniform writeonly image2D scores_out;

float u(int token, int j, int e) { return WEIGHT(EMBED, token * EMBED_DIM + e) + WEIGHT(ATTN_POS, j * EMBED_DIM + e); }

void main() {
    int j = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    int n = token_count(prompt);
    if (j >= n) return;
    int last = token_back(prompt, n, 0), token = token_back(prompt, n, j);
    float score = 0.0;
    for (int dd = 0; dd < HEAD_DIM; dd++) {
        float q = 0.0, k = 0.0;
        for (int e = 0; e < EMBED_DIM; e++) {
            q += u(last, 0, e) * WEIGHT(ATTN_QUERY, e * HEAD_DIM + dd);
            k += u(token, j, e) * WEIGHT(ATTN_KEY, e * HEAD_DIM + dd);
        }
        score += q * k;
    }
    imageStore(scores_out, ivec2(j, prompt), vec4(score / sqrt(float(HEAD_DIM))));
}
