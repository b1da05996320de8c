// Fused executor, at load: DST[AT + r * DST_COLS + c] = T[ROW0 + r][c] for c < COLS, 0 for COLS <= c < DST_COLS:
// a tensor (or some of its rows) dequantized into a float buffer, rows padded with zeros (places and
// quantization as uniforms). One invocation per output float; the grid may be 2-D.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
layout(std430, binding = BINDING_DST) writeonly restrict buffer Dst { float DST[]; };
uniform int t_offset, rows, cols, dst_cols, row0, at;
uniform float t_scale, t_zero;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * LOCAL_SIZE);
    if (e >= rows * dst_cols) return;
    int r = e / dst_cols, c = e % dst_cols;
    DST[at + e] = c < cols ? dequant(t_offset, t_scale, t_zero, (row0 + r) * cols + c) : 0.0;
}
