// Attention, pass 4 (attention.glsl): a_j = softmax_j(T_scores[prompt])[j] over the prompt's n tokens, one work
// group per prompt reducing through the shared array `reduced` (LOCAL_SIZE, a power of two).
layout(local_size_x = LOCAL_SIZE) in;

#include "tails.glsl"
layout(binding = BINDING_SCORES_IN, r32f) uniform readonly image2D scores_in;
layout(binding = BINDING_ATTENTION_OUT, r32f) uniform writeonly image2D attention_out;

float group_reduce(int t, float value, bool take_max) {
    reduced[t] = value;
    memoryBarrierShared();
    barrier();
    for (int stride = LOCAL_SIZE / 2; stride > 0; stride /= 2) {
        if (t < stride) reduced[t] = take_max ? max(reduced[t], reduced[t + stride]) : reduced[t] + reduced[t + stride];
        memoryBarrierShared();
        barrier();
    }
    float result = reduced[0];
    memoryBarrierShared();  // llvmpipe otherwise reads reduced[0] after the barrier
    barrier();
    return result;
}

void main() {
    int t = int(gl_LocalInvocationID.x);
    int prompt = int(gl_WorkGroupID.x);
    int n = token_count(prompt);
    float top = -1.0 / 0.0;
    for (int j = t; j < n; j += LOCAL_SIZE) top = max(top, imageLoad(scores_in, ivec2(j, prompt)).r);
    top = group_reduce(t, top, true);
    float total = 0.0;
    for (int j = t; j < n; j += LOCAL_SIZE) total += exp(imageLoad(scores_in, ivec2(j, prompt)).r - top);
    total = group_reduce(t, total, false);
    for (int j = t; j < n; j += LOCAL_SIZE) {
        imageStore(attention_out, ivec2(j, prompt), vec4(exp(imageLoad(scores_in, ivec2(j, prompt)).r - top) / total));
    }
}
