// Version 2, the prediction (1/2): for logits row row0 + i and one segment of the vocabulary, the top logit, its lowest
// index and Σ exp(logit − top), as a partial for tf_argmax_merge.comp. One work group per (segment, row).
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_top1.glsl"
layout(std430, binding = BINDING_LOGITS) readonly restrict buffer Logits { float logits[]; };
layout(std430, binding = BINDING_PARTIAL) writeonly restrict buffer Partial { float partial[]; };
uniform int vocab, segment, segments, row0;

void main() {
    int s = int(gl_WorkGroupID.x), i = int(gl_WorkGroupID.y), lane = int(gl_LocalInvocationID.x);
    float top = uintBitsToFloat(0xFF800000u), sum = 0.0;
    int index = -1;
    int end = min(vocab, (s + 1) * segment);
    for (int k = s * segment + lane; k < end; k += LOCAL_SIZE) consider(top, sum, index, logits[(row0 + i) * vocab + k], k);
    top_value[lane] = top; top_sum[lane] = sum; top_index[lane] = index;
    MERGE_GROUP(lane)
    if (lane == 0) {
        int at = (i * segments + s) * 3;
        partial[at] = top_value[0];
        partial[at + 1] = top_sum[0];
        partial[at + 2] = intBitsToFloat(top_index[0]);
    }
}
