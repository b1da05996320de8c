// Choosing (docs/FORMATS.md §11), one pass of a top-k or top-p cut: for chosen row r and one segment of the
// vocabulary, the count (top-k) or weight (top-p) of the tokens at or above the row's floor whose key's digits
// before this pass's equal tau's, binned by this pass's digit (16 bins). tf_choose_cut.comp then fixes the digit.
// One work group per (segment, row); each invocation owns a column of the shared bins.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_CHOICE) readonly restrict buffer Choice { float choice[]; };
layout(std430, binding = BINDING_PREDICTIONS) readonly restrict buffer Predictions { uint predictions[]; };
layout(std430, binding = BINDING_CHOOSING) readonly restrict buffer Choosing { uint choosing[]; };
layout(std430, binding = BINDING_BINS) writeonly restrict buffer Bins { float bins[]; };
uniform int vocab, segment, segments, choice0, top0, pass_index, id_digits, by_count;

void main() {
    int s = int(gl_WorkGroupID.x), r = int(gl_WorkGroupID.y), lane = int(gl_LocalInvocationID.x);
    int at = r * ROW_WORDS;
    if (choosing[at + S_ACTIVE] == 0u) return;  // the whole group: the row is the group's
    uvec2 tau = uvec2(choosing[at + S_TAU], choosing[at + S_TAU + 1]);
    uvec2 floor_key = uvec2(choosing[at + S_FLOOR], choosing[at + S_FLOOR + 1]);
    float temperature = uintBitsToFloat(choosing[at + C_TEMPERATURE]);
    int row = (choice0 + r) * vocab;
    float top = choice[row + int(predictions[2 * (top0 + r)])];
    for (int b = 0; b < DIGITS; b++) shared_bins[b * LOCAL_SIZE + lane] = 0.0;
    int end = min(vocab, (s + 1) * segment);
    for (int k = s * segment + lane; k < end; k += LOCAL_SIZE) {
        float l = choice[row + k];
        uvec2 key = rank_key(l, k, vocab);
        if (at_least(key, floor_key) && same_prefix(key, tau, pass_index, id_digits)) {
            int b = int(digit_of(key, pass_index, id_digits));
            shared_bins[b * LOCAL_SIZE + lane] += by_count != 0 ? 1.0 : weight(l, top, temperature);
        }
    }
    barrier();
    for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
        if (lane < half_size) {
            for (int b = 0; b < DIGITS; b++) shared_bins[b * LOCAL_SIZE + lane] += shared_bins[b * LOCAL_SIZE + lane + half_size];
        }
        barrier();
    }
    if (lane < DIGITS) bins[(r * segments + s) * DIGITS + lane] = shared_bins[lane * LOCAL_SIZE];
}
