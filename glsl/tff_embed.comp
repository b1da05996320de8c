// Fused executor, embed: x[i] = embed[token of row i] (+ pos[position of row i] for learned positions), row i
// being (slot, position) in `rows`, its token tokens[slot × CONTEXT + position]. One invocation an element.
// Record (engine/transformer/fused/packs.py): [embed at, quant, aux, zero bits, pos at (-1: none), pos
// quant, aux, zero bits] (aux: element_at's, tff_pack.glsl).
layout(local_size_x = LOCAL_SIZE) in;

#include "tff_pack.glsl"
layout(std430, binding = BINDING_TOKENS) readonly restrict buffer Tokens { int tokens[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };
layout(std430, binding = BINDING_TARGET) writeonly restrict buffer Target { float target[]; };
uniform ivec4 run;  // (record, positions, first row, groups_x)

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * run.w * LOCAL_SIZE);
    if (e >= WIDTH * run.y) return;
    int i = e / WIDTH, c = e % WIDTH, r = run.x;
    ivec2 row = rows[run.z + i];
    float value = element_at(params[r], params[r + 1], params[r + 2], intBitsToFloat(params[r + 3]),
                             tokens[row.x * CONTEXT + row.y] * WIDTH + c);
    if (params[r + 4] >= 0) {
        value += element_at(params[r + 4], params[r + 5], params[r + 6], intBitsToFloat(params[r + 7]), row.y * WIDTH + c);
    }
    target[e] = value;
}
