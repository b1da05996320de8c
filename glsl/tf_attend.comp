// Version 2, attend (2/3): for query row i (its slot's position p, rows[i]), head h and one segment of the
// keys, the online softmax of s_j = (q · K_j) × scale over the segment's keys j ≤ p of the row's slot, and
// Σ_j exp(s_j − m) V_j: written as a partial (m, l, acc[D]) that tf_attend_combine.comp merges. The keys are walked LOCAL_SIZE at a time
// (a score each, then every invocation folds them into the dimensions it owns): no score matrix is written.
// One work group per (segment, head, position); loop counts: loops.py attend_loops.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_half.glsl"
layout(std430, binding = BINDING_Q) readonly restrict buffer Q { float q[]; };
layout(std430, binding = BINDING_KEYS) readonly restrict buffer Keys { uint keys[]; };
layout(std430, binding = BINDING_VALUES) readonly restrict buffer Values { uint values[]; };
layout(std430, binding = BINDING_PARTIAL) writeonly restrict buffer Partial { float partial[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
uniform int heads, group_size, head_dim, row_words, context, first_query, segment, segments;
uniform float scale;

void main() {
    int s = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), i = first_query + int(gl_WorkGroupID.z);
    int lane = int(gl_LocalInvocationID.x);
    int query = (i * heads + h) * head_dim, kv = (h / group_size) * head_dim;
    int begin = s * segment, end = min(begin + segment, rows[i].y + 1);
    int slot_row = rows[i].x * context;  // the slot's position 0 in the cache
    float m = uintBitsToFloat(0xFF800000u), l = 0.0;  // -infinity: nothing seen
    float acc[ATTEND_DIMS];
    for (int t = 0; t < ATTEND_DIMS; t++) acc[t] = 0.0;
    for (int chunk = begin; chunk < end; chunk += LOCAL_SIZE) {
        int j = chunk + lane;
        float score = uintBitsToFloat(0xFF800000u);
        if (j < end) {
            float dot_qk = 0.0;
            int key = (slot_row + j) * row_words * 2 + kv;
            for (int d = 0; d < head_dim; d++) dot_qk += q[query + d] * HALF_AT(keys, key + d);
            score = dot_qk * scale;
        }
        scores[lane] = score;
        top[lane] = score;
        barrier();
        for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
            if (lane < half_size) top[lane] = max(top[lane], top[lane + half_size]);
            barrier();
        }
        float newest = max(m, top[0]);
        float carried = exp(m - newest);
        l *= carried;
        for (int t = 0; t < ATTEND_DIMS; t++) acc[t] *= carried;
        int count = min(LOCAL_SIZE, end - chunk);
        for (int u = 0; u < count; u++) {
            float p = exp(scores[u] - newest);
            l += p;
            int row = (slot_row + chunk + u) * row_words * 2 + kv;
            for (int t = 0; t < ATTEND_DIMS; t++) {
                int d = lane + t * LOCAL_SIZE;
                if (d < head_dim) acc[t] += p * HALF_AT(values, row + d);
            }
        }
        m = newest;
        barrier();  // before the next chunk overwrites the scores
    }
    int at = ((int(gl_WorkGroupID.z) * heads + h) * segments + s) * (head_dim + 2);
    if (lane == 0) {
        partial[at] = m;
        partial[at + 1] = l;
    }
    for (int t = 0; t < ATTEND_DIMS; t++) {
        int d = lane + t * LOCAL_SIZE;
        if (d < head_dim) partial[at + 2 + d] = acc[t];
    }
}
