// Version 2, activate: the MLP's gelu_tanh or exact gelu (docs/FORMATS.md §14.4) of source into target, one
// invocation an element. GLSL has no erf: erf_f32 below is float32-accurate (tests/test_transformer_passes.py measures it).
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_SOURCE) readonly restrict buffer Source { float source[]; };
layout(std430, binding = BINDING_TARGET) writeonly restrict buffer Target { float target[]; };
uniform int count, exact, groups_x;

// erf(x) to float32 precision: its Maclaurin series below 0.75 (relative error under 1e-7), else
// 1 − erfc(|x|) with Numerical Recipes' erfcc (relative error of erfc under 1.2e-7), odd in x.
float erf_f32(float x) {
    float z = abs(x);
    if (z < 0.75) {
        float s = z * z;
        float series = 1.0 + s * (-1.0 / 3.0 + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 + s * (-1.0 / 1320.0
            + s * (1.0 / 9360.0 + s * (-1.0 / 75600.0 + s * (1.0 / 685440.0))))))));
        return x * 1.1283791670955126 * series;  // 2/√π
    }
    float t = 1.0 / (1.0 + 0.5 * z);
    float poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    float erfc = t * exp(-z * z + poly);
    return sign(x) * (1.0 - erfc);
}

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= count) return;
    float x = source[e];
    if (exact != 0) {
        target[e] = 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
    } else {
        // tanh's argument clamped: tanh(±10) is ±1 in float32, and exp-based tanh overflows to NaN past ~44
        float inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -10.0, 10.0);
        target[e] = 0.5 * x * (1.0 + tanh(inner));
    }
}
