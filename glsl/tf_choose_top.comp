// Choosing (docs/FORMATS.md §11), alternatives (1/2): for logits row logit0 + r and one segment of the
// vocabulary, its top_count likeliest tokens, likeliest first (rank: logit descending, lower id first): round j
// takes the best token ranked after round j − 1's. Written as (logit, id) candidates, id −1 past the segment's
// tokens. One work group per (segment, row).
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_LOGITS) readonly restrict buffer Logits { float logits[]; };
layout(std430, binding = BINDING_CANDIDATES) writeonly restrict buffer Candidates { vec2 candidates[]; };
uniform int vocab, segment, segments, logit0, top_count;

void main() {
    int s = int(gl_WorkGroupID.x), r = int(gl_WorkGroupID.y), lane = int(gl_LocalInvocationID.x);
    int row = (logit0 + r) * vocab, end = min(vocab, (s + 1) * segment);
    float previous = 1.0 / 0.0;
    int previous_index = -1;
    for (int j = 0; j < TOP_MAX && j < top_count; j++) {
        float value = -1.0 / 0.0;
        int best = vocab;
        for (int k = s * segment + lane; k < end; k += LOCAL_SIZE) {
            float v = logits[row + k];
            bool after = v < previous || (v == previous && k > previous_index);
            if (after && beats(v, k, value, best)) { value = v; best = k; }
        }
        best_value[lane] = value;
        best_index[lane] = best;
        barrier();
        for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
            if (lane < half_size && beats(best_value[lane + half_size], best_index[lane + half_size], best_value[lane], best_index[lane])) {
                best_value[lane] = best_value[lane + half_size];
                best_index[lane] = best_index[lane + half_size];
            }
            barrier();
        }
        previous = best_value[0];
        previous_index = best_index[0];
        if (lane == 0) {
            int id = previous_index < vocab ? previous_index : -1;
            candidates[(r * segments + s) * top_count + j] = vec2(previous, intBitsToFloat(id));
        }
        barrier();  // every invocation has read the winner before the next round writes the arrays
    }
}
