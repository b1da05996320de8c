// Logits: logit k of a prompt = sum_h T_hidden[prompt][h] * out.weight[h][k] + out.bias[k] over the last
// hidden layer, stored in the prompt's LOGITS_SIDE x LOGITS_SIDE cell of T_logits.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "logits_grid.glsl"
layout(binding = BINDING_HIDDEN_IN, r32f) uniform readonly image2D hidden_in;
layout(binding = BINDING_LOGITS_OUT, r32f) uniform writeonly image2D logits_out;

void main() {
    int k = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (k >= VOCAB) return;

    float sum = 0.0;
    for (int h = 0; h < LAST_HIDDEN; h++) {
        sum += imageLoad(hidden_in, ivec2(h, prompt)).r * WEIGHT(OUT_WEIGHT, h * VOCAB + k);
    }
    imageStore(logits_out, logits_pixel(prompt, k), vec4(sum + WEIGHT(OUT_BIAS, k)));
}
