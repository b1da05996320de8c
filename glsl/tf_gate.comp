// Version 2, gate: target = silu(gate) ⊙ up = gate / (1 + exp(−gate)) ⊙ up, one invocation an element.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_GATE) readonly restrict buffer Gate { float gate[]; };
layout(std430, binding = BINDING_UP) readonly restrict buffer Up { float up[]; };
layout(std430, binding = BINDING_TARGET) writeonly restrict buffer Target { float target[]; };
uniform int count, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= count) return;
    float g = gate[e];
    target[e] = g / (1.0 + exp(-g)) * up[e];
}
