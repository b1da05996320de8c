// Pass 4: one work group per prompt reduces its logits to the prediction pixel
// (id % 256, id / 256, round(255 * p), WRITTEN_ALPHA), p = softmax probability of the argmax; ties -> lowest id.
layout(local_size_x = LOCAL_SIZE) in;  // a power of two

#include "logits_grid.glsl"
layout(binding = BINDING_LOGITS_IN, r32f) uniform readonly image2D logits_in;
layout(binding = BINDING_PREDICTION_OUT, rgba8ui) uniform writeonly uimage2D prediction_out;

#define TOP1_VALUE(prompt, k) imageLoad(logits_in, logits_pixel(prompt, k)).r
#include "top1_softmax.glsl"

void main() {
    int t = int(gl_LocalInvocationID.x);
    int prompt = int(gl_WorkGroupID.x);
    int index;
    float exp_sum;
    top1_softmax(t, prompt, VOCAB, index, exp_sum);
    if (t == 0) {
        uint id = uint(index);
        uint confidence = uint(floor(255.0 / exp_sum + 0.5));
        imageStore(prediction_out, ivec2(0, prompt), uvec4(id & 255u, id >> 8u, confidence, uint(WRITTEN_ALPHA)));
    }
}
