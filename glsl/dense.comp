// Hidden layer l: out[o] = relu(sum_i in[i] * weight[i][o] + bias[o]) (+ in[o] when residual), for each
// (output unit, prompt). The same shader serves every layer: IN_DIM, OUT_DIM, the layer's tensors
// (DENSE_WEIGHT_*, DENSE_BIAS_*), RESIDUAL and the textures' layouts are injected per layer. A sum longer than
// PART_TERMS runs in PARTS dispatches (uniform `part`), each adding its terms in order to the sum the part
// before stored in vector_out; the last applies the bias and ReLU (an invocation's loops stay bounded).
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
#include "vectors.glsl"
layout(binding = BINDING_VECTOR_IN, r32f) uniform readonly image2D vector_in;
layout(binding = BINDING_VECTOR_OUT, r32f) uniform image2D vector_out;
uniform int part;

float input_at(int prompt, int i) { return imageLoad(vector_in, vector_pixel(prompt, i, IN_WIDTH, IN_ROWS)).r; }

void main() {
    int o = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (o >= OUT_DIM) return;
    float sum = part == 0 ? 0.0 : imageLoad(vector_out, ivec2(o, prompt)).r;
    for (int i = part * PART_TERMS; i < min((part + 1) * PART_TERMS, IN_DIM); i++) {
        sum += input_at(prompt, i) * WEIGHT(DENSE_WEIGHT, i * OUT_DIM + o);
    }
    if (part < PARTS - 1) {
        imageStore(vector_out, ivec2(o, prompt), vec4(sum));
        return;
    }
    float h = max(sum + WEIGHT(DENSE_BIAS, o), 0.0);
#if RESIDUAL
    h += input_at(prompt, o);
#endif
    imageStore(vector_out, ivec2(o, prompt), vec4(h));
}
