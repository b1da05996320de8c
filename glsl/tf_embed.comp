// Version 2, embed: x[i] = embed[tokens[start + i]], then (a second run with by_position) x[i] += pos[start + i].
// One invocation per element of x; the grid folds into x and y.
layout(local_size_x = LOCAL_SIZE) in;

#include "tf_weights.glsl"
layout(std430, binding = BINDING_TOKENS) readonly restrict buffer Tokens { int tokens[]; };
layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
uniform int width, positions, start, by_position, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= width * positions) return;
    int i = e / width, c = e % width;
    int row = by_position != 0 ? start + i : tokens[start + i];
    float value = matrix_at(row * width + c);
    target[e] = by_position != 0 ? target[e] + value : value;
}
