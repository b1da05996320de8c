// Version 2, rope: rotate each head of q or k (in place) by its row's position (docs/FORMATS.md §14.4): pair k
// of a head is (v[k], v[k + D/2]) for halves, (v[2k], v[2k+1]) for pairs, turned by the angle whose cos and sin
// the table holds (float64 maths rounded once, made on the host). One invocation per pair.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_TARGET) restrict buffer Target { float target[]; };
layout(std430, binding = BINDING_TABLE) readonly restrict buffer Table { vec2 cos_sin[]; };  // [position][k]
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
uniform int heads, head_dim, positions, pairs, groups_x;

void main() {
    int half_dim = head_dim / 2;
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= positions * heads * half_dim) return;
    int k = e % half_dim, head = e / half_dim % heads, i = e / (half_dim * heads);
    int at = (i * heads + head) * head_dim;
    int a = pairs != 0 ? at + 2 * k : at + k;
    int b = pairs != 0 ? a + 1 : a + half_dim;
    vec2 turn = cos_sin[rows[i].y * half_dim + k];
    float u = target[a], w = target[b];
    target[a] = u * turn.x - w * turn.y;
    target[b] = w * turn.x + u * turn.y;
}
