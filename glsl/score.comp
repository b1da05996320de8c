// Scoring (docs/FORMATS.md §9): one work group per prompt reads its logits cell and its target token
// (a pixel (id % 256, id / 256, ...) of T_targets) and writes log p(target) = logit[target] - logit[top]
// - log(sum_k exp(logit[k] - logit[top])) into T_logprobs.
layout(local_size_x = LOCAL_SIZE) in;  // a power of two

#include "logits_grid.glsl"
layout(binding = BINDING_LOGITS_IN, r32f) uniform readonly image2D logits_in;
layout(binding = BINDING_TARGETS) uniform usampler2D targets;
layout(binding = BINDING_LOGPROBS_OUT, r32f) uniform writeonly image2D logprobs_out;

#define TOP1_VALUE(prompt, k) imageLoad(logits_in, logits_pixel(prompt, k)).r
#include "top1_softmax.glsl"

void main() {
    int t = int(gl_LocalInvocationID.x);
    int prompt = int(gl_WorkGroupID.x);
    int index;
    float exp_sum;
    top1_softmax(t, prompt, VOCAB, index, exp_sum);
    if (t == 0) {
        uvec4 px = texelFetch(targets, ivec2(0, prompt), 0);
        int target = int(px.r + 256u * px.g);
        float logp = TOP1_VALUE(prompt, target) - TOP1_VALUE(prompt, index) - log(exp_sum);
        imageStore(logprobs_out, ivec2(0, prompt), vec4(logp));
    }
}
