// Version 2, the prediction (2/2): each row's segment partials merged into (id, Σ exp(logit − top)) — the
// confidence is 1 / that sum (§14.4) — and, for a greedy step, the id written as the next position's token,
// so the next step's embed reads it without the host. One work group per row.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_top1.glsl"
layout(std430, binding = BINDING_PARTIAL) readonly restrict buffer Partial { float partial[]; };
layout(std430, binding = BINDING_PREDICTIONS) writeonly restrict buffer Predictions { uint predictions[]; };
layout(std430, binding = BINDING_TOKENS) restrict buffer Tokens { int tokens[]; };
uniform int segments, token_at;  // token_at < 0: no token written

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
        predictions[2 * i] = uint(top_index[0]);
        predictions[2 * i + 1] = floatBitsToUint(top_sum[0]);
        if (token_at >= 0) tokens[token_at] = top_index[0];
    }
}
