// Choosing (docs/FORMATS.md §11): for sampled row r and one segment of the vocabulary, Σ w over the tokens kept
// so far (key ≥ tau): S_K before top-p, S for the draw. One work group per (segment, row).
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_CHOICE) readonly restrict buffer Choice { float choice[]; };
layout(std430, binding = BINDING_PREDICTIONS) readonly restrict buffer Predictions { uint predictions[]; };
layout(std430, binding = BINDING_CHOOSING) readonly restrict buffer Choosing { uint choosing[]; };
layout(std430, binding = BINDING_MASSES) writeonly restrict buffer Masses { float masses[]; };
uniform int vocab, segment, segments, choice0, top0;

void main() {
    int s = int(gl_WorkGroupID.x), r = int(gl_WorkGroupID.y), lane = int(gl_LocalInvocationID.x);
    int at = r * ROW_WORDS;
    float temperature = uintBitsToFloat(choosing[at + C_TEMPERATURE]);
    if (temperature <= 0.0) return;
    uvec2 tau = uvec2(choosing[at + S_TAU], choosing[at + S_TAU + 1]);
    int row = (choice0 + r) * vocab;
    float top = choice[row + int(predictions[2 * (top0 + r)])];
    float mass = 0.0;
    int end = min(vocab, (s + 1) * segment);
    for (int k = s * segment + lane; k < end; k += LOCAL_SIZE) {
        float l = choice[row + k];
        if (at_least(rank_key(l, k, vocab), tau)) mass += weight(l, top, temperature);
    }
    sums[lane] = mass;
    barrier();
    for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
        if (lane < half_size) sums[lane] += sums[lane + half_size];
        barrier();
    }
    if (lane == 0) masses[r * segments + s] = sums[0];
}
