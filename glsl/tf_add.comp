// Version 2, add: the residual stream plus the input, in place, one invocation an element.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
layout(std430, binding = BINDING_SOURCE) readonly restrict buffer Source { float source[]; };
uniform int count, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= count) return;
    target[e] += source[e];
}
