// Choosing (docs/FORMATS.md §11), the token of each chosen row, by its first invocation: greedy, the argmax of
// the (penalized) logits, lowest id on ties; sampled, r = u(seed, draw row, step) · S, then the kept tokens in id
// order — the segment whose running mass passes r (tf_choose_mass.comp's), then its ids — the first whose
// running sum passes r, else the last kept. The id is written as the slot's pending token (its position + 1)
// and as the step's output. One work group per row.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_CHOOSING) readonly restrict buffer Choosing { uint choosing[]; };
layout(std430, binding = BINDING_MASSES) readonly restrict buffer Masses { float masses[]; };
layout(std430, binding = BINDING_CHOICE) readonly restrict buffer Choice { float choice[]; };
layout(std430, binding = BINDING_PREDICTIONS) readonly restrict buffer Predictions { uint predictions[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
layout(std430, binding = BINDING_TOKENS) restrict buffer Tokens { int tokens[]; };
layout(std430, binding = BINDING_OUT_WORDS) restrict buffer Out { uint out_words[]; };
uniform int vocab, segment, segments, choice0, top0, entry0, context, out_step, rows_out, record_words;

uint pcg(uint x) {
    uint s = x * 747796405u + 2891336453u;
    uint w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

void main() {
    int r = int(gl_WorkGroupID.x);
    if (gl_LocalInvocationID.x != 0u) return;
    int at = r * ROW_WORDS;
    float temperature = uintBitsToFloat(choosing[at + C_TEMPERATURE]);
    int chosen = int(predictions[2 * (top0 + r)]);
    if (temperature > 0.0) {
        int row = (choice0 + r) * vocab;
        float top = choice[row + chosen];
        uvec2 tau = uvec2(choosing[at + S_TAU], choosing[at + S_TAU + 1]);
        uvec2 floor_key = uvec2(choosing[at + S_FLOOR], choosing[at + S_FLOOR + 1]);
        float total = 0.0;
        for (int s = 0; s < segments; s++) total += masses[r * segments + s];
        uint step = choosing[at + C_STEP] + uint(out_step);
        uint draw = pcg(pcg(pcg(choosing[at + C_SEED]) ^ choosing[at + C_DRAW_ROW]) ^ step) >> 8u;
        float threshold = float(draw) * (1.0 / 16777216.0) * total;
        float running = 0.0;
        int found = -1, last_kept_segment = 0;
        for (int s = 0; s < segments && found < 0; s++) {
            float mass = masses[r * segments + s];
            if (mass > 0.0) last_kept_segment = s;
            if (mass > 0.0 && running + mass > threshold) found = s;
            else running += mass;
        }
        if (found < 0) {
            found = last_kept_segment;
            threshold = 1.0 / 0.0;
        }
        chosen = -1;
        int last_kept = found * segment;
        for (int k = found * segment; k < min(vocab, (found + 1) * segment) && chosen < 0; k++) {
            float l = choice[row + k];
            uvec2 key = rank_key(l, k, vocab);
            float w = at_least(key, tau) && at_least(key, floor_key) ? weight(l, top, temperature) : 0.0;
            if (w > 0.0) {
                running += w;
                last_kept = k;
                if (running > threshold) chosen = k;
            }
        }
        if (chosen < 0) chosen = last_kept;
    }
    ivec2 slot_position = rows[entry0 + r];
    if (slot_position.y + 1 < context) tokens[slot_position.x * context + slot_position.y + 1] = chosen;
    out_words[(out_step * rows_out + r) * record_words] = uint(chosen);
}
