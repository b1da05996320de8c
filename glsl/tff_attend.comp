// Fused executor, attention: for row i (slot, position p), head h and one segment of the slot's cached keys
// (positions s·ATTEND_SEGMENT.. up to p), the online softmax of s_j = (q · K_j) × SCALE and Σ_j exp(s_j − m) V_j,
// written as a partial (m, l, acc[HEAD_DIM]); the out projection (tff_matvec.comp, INPUT_ATTENTION) merges a
// row's segments as it reads them. The keys are walked LOCAL_SIZE at a time, a score each, then folded into
// the dimensions each invocation owns: no score matrix is written. One work group per (segment, head, row).
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_half.glsl"
layout(std430, binding = BINDING_Q) readonly restrict buffer Q { float q[]; };
layout(std430, binding = BINDING_KEYS) readonly restrict buffer Keys { uint keys[]; };
layout(std430, binding = BINDING_VALUES) readonly restrict buffer Values { uint values[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };
layout(std430, binding = BINDING_PARTIAL) writeonly restrict buffer Partial { float partial[]; };
uniform ivec2 run;  // (the block's first row, segments); partials are the block's rows

void main() {
    int s = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), i = int(gl_WorkGroupID.z);
    int lane = int(gl_LocalInvocationID.x);
    ivec2 row = rows[run.x + i];
    int query = ((run.x + i) * HEADS + h) * HEAD_DIM, kv = (h / (HEADS / KV_HEADS)) * HEAD_DIM;
    int cache = row.x * CONTEXT;
    int begin = s * ATTEND_SEGMENT, end = min(begin + ATTEND_SEGMENT, row.y + 1);
    float m = uintBitsToFloat(0xFF800000u), l = 0.0;  // -infinity: nothing seen
    float acc[ATTEND_DIMS];
    for (int t = 0; t < ATTEND_DIMS; t++) acc[t] = 0.0;
    for (int chunk = begin; chunk < end; chunk += LOCAL_SIZE) {
        int j = chunk + lane;
        float score = uintBitsToFloat(0xFF800000u);
        if (j < end) {
            int key = (cache + j) * 2 * KV_ROW_WORDS + kv;
            float dot_qk = 0.0;
            for (int d = 0; d < HEAD_DIM; d++) dot_qk += q[query + d] * HALF_AT(keys, key + d);
            score = dot_qk * SCALE;
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
            int value = (cache + chunk + u) * 2 * KV_ROW_WORDS + kv;
            for (int t = 0; t < ATTEND_DIMS; t++) {
                int d = lane + t * LOCAL_SIZE;
                if (d < HEAD_DIM) acc[t] += p * HALF_AT(values, value + d);
            }
        }
        m = newest;
        barrier();  // before the next chunk overwrites the scores
    }
    int at = ((i * HEADS + h) * run.y + s) * (HEAD_DIM + 2);
    if (lane == 0) {
        partial[at] = m;
        partial[at + 1] = l;
    }
    for (int t = 0; t < ATTEND_DIMS; t++) {
        int d = lane + t * LOCAL_SIZE;
        if (d < HEAD_DIM) partial[at + 2 + d] = acc[t];
    }
}
