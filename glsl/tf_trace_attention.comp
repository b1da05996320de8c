// Version 2, the trace pxgl viz draws (docs/FORMATS.md §14.8): the attention weights that tf_attend.comp never
// writes, p_ij = exp(s_ij − max_j s_ij) / Σ_j exp(s_ij − max_j s_ij) with s_ij = (q_i · K_j) × scale over
// j ≤ i (§14.4: q after RoPE, K the layer's float16 cache), and 0 for the keys past i (causal), into
// weights[h][i][j]: a trace runs positions 0..rows−1 of one slot, row i being position i, whose cache rows
// begin at slot_row. One work group per (row i, head h); each invocation takes keys lane, lane + LOCAL_SIZE,
// ...: scores written, their max, exp and sum, then the quotients.
// Loop counts: engine/transformer/gpu/trace.py trace_attention_loops.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_half.glsl"
layout(std430, binding = BINDING_Q) readonly restrict buffer Q { float q[]; };
layout(std430, binding = BINDING_KEYS) readonly restrict buffer Keys { uint keys[]; };
layout(std430, binding = BINDING_WEIGHTS) restrict buffer Weights { float weights[]; };
uniform int heads, group_size, head_dim, row_words, slot_row, rows;
uniform float scale;

void main() {
    int i = int(gl_WorkGroupID.x), h = int(gl_WorkGroupID.y), lane = int(gl_LocalInvocationID.x);
    int query = (i * heads + h) * head_dim, kv = (h / group_size) * head_dim;
    int seen = i + 1;
    int row = (h * rows + i) * rows;
    float largest = uintBitsToFloat(0xFF800000u);  // -infinity: nothing seen
    for (int j = lane; j < seen; j += LOCAL_SIZE) {
        float dot_qk = 0.0;
        int key = (slot_row + j) * row_words * 2 + kv;
        for (int d = 0; d < head_dim; d++) dot_qk += q[query + d] * HALF_AT(keys, key + d);
        float score = dot_qk * scale;
        weights[row + j] = score;
        largest = max(largest, score);
    }
    reduce[lane] = largest;
    barrier();
    for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
        if (lane < half_size) reduce[lane] = max(reduce[lane], reduce[lane + half_size]);
        barrier();
    }
    float top = reduce[0];
    barrier();  // every invocation has read the max before the sums overwrite it
    float total = 0.0;
    for (int j = lane; j < seen; j += LOCAL_SIZE) {
        float e = exp(weights[row + j] - top);
        weights[row + j] = e;
        total += e;
    }
    reduce[lane] = total;
    barrier();
    for (int half_size = LOCAL_SIZE / 2; half_size > 0; half_size >>= 1) {
        if (lane < half_size) reduce[lane] += reduce[lane + half_size];
        barrier();
    }
    float sum = reduce[0];
    for (int j = lane; j < rows; j += LOCAL_SIZE) weights[row + j] = j < seen ? weights[row + j] / sum : 0.0;
}
