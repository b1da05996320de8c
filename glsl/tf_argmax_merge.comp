// Version 2, the prediction (2/2): each row's segment partials merged into (id, Σ exp(logit − top)) — the
// confidence is 1 / that sum (§14.4). One work group per row.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_top1.glsl"
layout(std430, binding = BINDING_PARTIAL) readonly restrict buffer Partial { float partial[]; };
layout(std430, binding = BINDING_PREDICTIONS) writeonly restrict buffer Predictions { uint predictions[]; };
uniform int segments, out0;  // row i's prediction is written as out0 + i

void main() {
    int i = int(gl_WorkGroupID.x), lane = int(gl_LocalInvocationID.x);
    float top = uintBitsToFloat(0xFF800000u), sum = 0.0;
    int index = -1;
    for (int s = lane; s < segments; s += LOCAL_SIZE) {
        int at = (i * segments + s) * 3;
        merge(top, sum, index, partial[at], partial[at + 1], floatBitsToInt(partial[at + 2]));
    }
    top_value[lane] = top; top_sum[lane] = sum; top_index[lane] = index;
    MERGE_GROUP(lane)
    if (lane == 0) {
        predictions[2 * (out0 + i)] = uint(top_index[0]);
        predictions[2 * (out0 + i) + 1] = floatBitsToUint(top_sum[0]);
    }
}
