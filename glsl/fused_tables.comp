// Fused executor, at load: DST[at + r * n + c] = sum_d A[r][d] * B[b_row0 + d][c] for r < rows, c < n, d < k,
// A and B tensors of the weight texture (their places and quantization as uniforms): the first layer's
// token tables (embed · layer0.weight slot) and the attention head's (embed · query, pos · key, ...).
// One invocation per output float; the grid may be 2-D when there are more than 65535 groups.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
layout(std430, binding = BINDING_DST) writeonly restrict buffer Dst { float DST[]; };
uniform int a_offset, b_offset, rows, n, k, b_row0, at;
uniform float a_scale, a_zero, b_scale, b_zero;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * LOCAL_SIZE);
    if (e >= rows * n) return;
    int r = e / n, c = e % n;
    float sum = 0.0;
    for (int d = 0; d < k; d++) {
        sum += dequant(a_offset, a_scale, a_zero, r * k + d) * dequant(b_offset, b_scale, b_zero, (b_row0 + d) * n + c);
    }
    DST[at + e] = sum;
}
