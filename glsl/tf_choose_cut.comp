// Choosing (docs/FORMATS.md §11), each chosen row's cut state, one work group per row (its first invocation):
// mode 0 starts top-k (bound K, every token above the floor), mode 1 fixes one digit of tau from the bins of
// tf_choose_bins.comp (the largest digit whose tokens ranked at or above it still reach the bound), mode 2 ends
// top-k and starts top-p (floor = top-k's tau, bound P · S_K from tf_choose_mass.comp's segment masses).
// After every pass the kept set {key ≥ tau} is the shortest ranked prefix reaching the bound.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_CHOOSING) restrict buffer Choosing { uint choosing[]; };
layout(std430, binding = BINDING_BINS) readonly restrict buffer Bins { float bins[]; };
layout(std430, binding = BINDING_MASSES) readonly restrict buffer Masses { float masses[]; };
uniform int mode, vocab, segments, pass_index, id_digits;

void main() {
    int r = int(gl_WorkGroupID.x);
    if (gl_LocalInvocationID.x != 0u) return;
    int at = r * ROW_WORDS;
    float temperature = uintBitsToFloat(choosing[at + C_TEMPERATURE]);
    if (mode == 0) {
        int top_k = int(choosing[at + C_TOP_K]);
        bool cutting = temperature > 0.0 && top_k > 0 && top_k < vocab;
        for (int w = S_TAU; w < S_ACTIVE; w++) choosing[at + w] = 0u;
        choosing[at + S_BOUND] = floatBitsToUint(float(top_k));
        choosing[at + S_ACTIVE] = cutting ? 1u : 0u;
    } else if (mode == 2) {
        float top_p = uintBitsToFloat(choosing[at + C_TOP_P]);
        bool cutting = temperature > 0.0 && top_p < 1.0;
        float mass_k = 0.0;
        for (int s = 0; s < segments; s++) mass_k += masses[r * segments + s];
        choosing[at + S_FLOOR] = choosing[at + S_TAU];
        choosing[at + S_FLOOR + 1] = choosing[at + S_TAU + 1];
        if (cutting) {
            choosing[at + S_TAU] = 0u;
            choosing[at + S_TAU + 1] = 0u;
        }
        choosing[at + S_ABOVE] = floatBitsToUint(0.0);
        choosing[at + S_BOUND] = floatBitsToUint(top_p * mass_k);
        choosing[at + S_ACTIVE] = cutting ? 1u : 0u;
    } else if (choosing[at + S_ACTIVE] != 0u) {
        float totals[DIGITS];
        for (int d = 0; d < DIGITS; d++) totals[d] = 0.0;
        for (int s = 0; s < segments; s++) {
            for (int d = 0; d < DIGITS; d++) totals[d] += bins[(r * segments + s) * DIGITS + d];
        }
        float above = uintBitsToFloat(choosing[at + S_ABOVE]), bound = uintBitsToFloat(choosing[at + S_BOUND]);
        int digit = 0;
        float reached = 0.0;
        for (int d = DIGITS - 1; d >= 0; d--) {
            reached += totals[d];
            digit = d;
            if (above + reached >= bound) break;
        }
        choosing[at + S_ABOVE] = floatBitsToUint(above + reached - totals[digit]);
        int word = pass_index < 8 ? S_TAU : S_TAU + 1;
        choosing[at + word] |= uint(digit) << uint(digit_shift(pass_index, id_digits));
    }
}
