// Choosing (docs/FORMATS.md §11), alternatives (2/2): each row's segment candidates merged into its top_count
// likeliest tokens, written after the row's (id, log p) as (id, log p) pairs, log p = l − m − log Σ exp(l − m)
// (the model's own, tf_argmax's sum). One work group per row.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_choose.glsl"
layout(std430, binding = BINDING_CANDIDATES) readonly restrict buffer Candidates { vec2 candidates[]; };
layout(std430, binding = BINDING_PREDICTIONS) readonly restrict buffer Predictions { uint predictions[]; };
layout(std430, binding = BINDING_OUT_WORDS) restrict buffer Out { uint out_words[]; };
uniform int vocab, segments, top_count, out_step, rows_out, record_words;

void main() {
    int r = int(gl_WorkGroupID.x), lane = int(gl_LocalInvocationID.x);
    int count = segments * top_count, first = r * count;
    float log_sum = log(uintBitsToFloat(predictions[2 * r + 1]));
    float previous = 1.0 / 0.0, top = 0.0;
    int previous_index = -1;
    for (int j = 0; j < TOP_MAX && j < top_count; j++) {
        float value = -1.0 / 0.0;
        int best = vocab;
        for (int c = lane; c < count; c += LOCAL_SIZE) {
            vec2 candidate = candidates[first + c];
            int k = floatBitsToInt(candidate.y);
            bool after = candidate.x < previous || (candidate.x == previous && k > previous_index);
            if (k >= 0 && after && beats(candidate.x, k, value, best)) { value = candidate.x; best = k; }
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
        if (j == 0) top = previous;
        if (lane == 0) {
            int record = (out_step * rows_out + r) * record_words + 2 + 2 * j;
            out_words[record] = uint(previous_index);
            out_words[record + 1] = floatBitsToUint(previous - top - log_sum);
        }
        barrier();
    }
}
