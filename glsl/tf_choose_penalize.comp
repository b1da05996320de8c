// Choosing (docs/FORMATS.md §11), the repetition penalty r of each chosen row: for every position p ≤ the row's
// position in its slot, the id there gets logit / r (logit > 0) or logit · r in the copy, from the model's own
// logit — so an id seen twice is penalized once (both invocations write the same value). One invocation per
// (row, position).
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_LOGITS) readonly restrict buffer Logits { float logits[]; };
layout(std430, binding = BINDING_CHOSEN) restrict buffer Chosen { float chosen[]; };
layout(std430, binding = BINDING_CHOOSING) readonly restrict buffer Choosing { uint choosing[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
layout(std430, binding = BINDING_TOKENS) readonly restrict buffer Tokens { int tokens[]; };
uniform int count, vocab, context, logit0, entry0, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= count) return;
    int r = e / context, p = e % context;
    ivec2 row = rows[entry0 + r];
    float penalty = uintBitsToFloat(choosing[r * ROW_WORDS + C_PENALTY]);
    if (p > row.y || penalty == 1.0) return;
    int id = tokens[row.x * context + p];
    float logit = logits[(logit0 + r) * vocab + id];
    chosen[r * vocab + id] = logit > 0.0 ? logit / penalty : logit * penalty;
}
