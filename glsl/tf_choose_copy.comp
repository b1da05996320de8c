// Choosing (docs/FORMATS.md §11), a repetition penalty's first step: the chosen rows' logits copied, so the
// penalty changes the copy and the model's own logits stay for the log-probabilities. One invocation an element.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_LOGITS) readonly restrict buffer Logits { float logits[]; };
layout(std430, binding = BINDING_CHOSEN) writeonly restrict buffer Chosen { float chosen[]; };
uniform int count, vocab, logit0, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= count) return;
    chosen[e] = logits[logit0 * vocab + e];
}
