// Version 2, embed: x[i] = embed[token of row i], then (a second run with by_position) x[i] += pos[position of
// row i]; row i is (slot, position) in `rows`, its token tokens[slot * context + position]. One invocation per
// element of x; the grid folds into x and y. The bound matrix is rows table_row0.. of the table, table_rows of
// them (a table past one storage buffer is bound a piece at a time; q8/q4 packed as tf_blocks.glsl reads them):
// other rows' elements are left alone.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_blocks.glsl"
layout(std430, binding = BINDING_TOKENS) readonly restrict buffer Tokens { int tokens[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
uniform int width, positions, context, by_position, table_row0, table_rows, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= width * positions) return;
    int i = e / width, c = e % width;
    ivec2 row_at = rows[i];
    int row = (by_position != 0 ? row_at.y : tokens[row_at.x * context + row_at.y]) - table_row0;
    if (row < 0 || row >= table_rows) return;
    float value = packed_at(row, c, table_rows, width);
    target[e] = by_position != 0 ? target[e] + value : value;
}
