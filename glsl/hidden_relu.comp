// Pass 2: T_hidden[prompt][h] = relu(sum_d T_embed[prompt][d] * hidden[d][h] + b_hidden[h]).
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
layout(binding = BINDING_EMBED_IN, r32f) uniform readonly image2D embed_in;
layout(binding = BINDING_HIDDEN_OUT, r32f) uniform writeonly image2D hidden_out;

void main() {
    int h = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (h >= HIDDEN_DIM) return;

    float sum = 0.0;
    for (int d = 0; d < EMBED_DIM; d++) {
        sum += imageLoad(embed_in, ivec2(d, prompt)).r * W_HIDDEN(d, h);
    }
    imageStore(hidden_out, ivec2(h, prompt), vec4(max(sum + W_B_HIDDEN(h), 0.0)));
}
