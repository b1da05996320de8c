// Version 2, attend (3/3): merge the segments' partials (m_s, l_s, acc_s) of one (position, head) into
// o = Σ_s acc_s exp(m_s − M) / Σ_s l_s exp(m_s − M), M = max_s m_s. One work group per (head, position).
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_PARTIAL) readonly restrict buffer Partial { float partial[]; };
layout(std430, binding = BINDING_TARGET) writeonly restrict buffer Target { float target[]; };
uniform int heads, head_dim, segments, first_query;

void main() {
    int h = int(gl_WorkGroupID.x), i = int(gl_WorkGroupID.y);
    int base = (i * heads + h) * segments * (head_dim + 2);
    float most = uintBitsToFloat(0xFF800000u);
    for (int s = 0; s < segments; s++) most = max(most, partial[base + s * (head_dim + 2)]);
    float total = 0.0;
    for (int s = 0; s < segments; s++) {
        int at = base + s * (head_dim + 2);
        total += partial[at + 1] == 0.0 ? 0.0 : partial[at + 1] * exp(partial[at] - most);
    }
    for (int d = int(gl_LocalInvocationID.x); d < head_dim; d += LOCAL_SIZE) {
        float sum = 0.0;
        for (int s = 0; s < segments; s++) {
            int at = base + s * (head_dim + 2);
            sum += partial[at + 1] == 0.0 ? 0.0 : partial[at + 2 + d] * exp(partial[at] - most);
        }
        target[((first_query + i) * heads + h) * head_dim + d] = sum / total;
    }
}
