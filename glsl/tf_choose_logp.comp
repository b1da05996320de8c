// Choosing (docs/FORMATS.md §11), each row's log p of its chosen token (or, for evaluation, its target) under
// the model itself: l_id − m − log Σ exp(l − m) from the model's logits and tf_argmax's (id of m, sum). One
// invocation per row.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_CHOOSING) readonly restrict buffer Choosing { uint choosing[]; };
layout(std430, binding = BINDING_LOGITS) readonly restrict buffer Logits { float logits[]; };
layout(std430, binding = BINDING_PREDICTIONS) readonly restrict buffer Predictions { uint predictions[]; };
layout(std430, binding = BINDING_OUT_WORDS) restrict buffer Out { uint out_words[]; };
uniform int vocab, logit0, out_step, rows_out, record_words, by_target;

void main() {
    int r = int(gl_GlobalInvocationID.x);
    if (r >= rows_out) return;
    int record = (out_step * rows_out + r) * record_words;
    int id = by_target != 0 ? int(choosing[r * ROW_WORDS + C_TARGET]) : int(out_words[record]);
    int row = (logit0 + r) * vocab;
    float top = logits[row + int(predictions[2 * r])];
    float logp = logits[row + id] - top - log(uintBitsToFloat(predictions[2 * r + 1]));
    if (by_target != 0) out_words[record] = uint(id);
    out_words[record + 1] = floatBitsToUint(logp);
}
