// Version 2, embed: x[i] = embed[token of row i], then (a second run with by_position) x[i] += pos[position of
// row i]; row i is (slot, position) in `rows`, its token tokens[slot * context + position]. One invocation per
// element of x; the grid folds into x and y.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_weights.glsl"
layout(std430, binding = BINDING_TOKENS) readonly restrict buffer Tokens { int tokens[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
uniform int width, positions, context, by_position, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= width * positions) return;
    int i = e / width, c = e % width;
    ivec2 row_at = rows[i];
    int row = by_position != 0 ? row_at.y : tokens[row_at.x * context + row_at.y];
    float value = matrix_at(row * width + c);
    target[e] = by_position != 0 ? target[e] + value : value;
}
