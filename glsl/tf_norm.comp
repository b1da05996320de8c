// Version 2, norm: per position (one work group each), layernorm (x − μ) / sqrt(σ² + eps) ⊙ w + b or
// rmsnorm x / sqrt(mean(x²) + eps) ⊙ w over `width` elements; weight and bias float16 (§14.4).
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_SOURCE) readonly restrict buffer Source { float source[]; };
layout(std430, binding = BINDING_TARGET) writeonly restrict buffer Target { float target[]; };
layout(std430, binding = BINDING_WEIGHT) readonly restrict buffer Weight { uint weight_words[]; };
layout(std430, binding = BINDING_BIAS) readonly restrict buffer Bias { uint bias_words[]; };
uniform int width, layernorm;
uniform float eps;

#include "tf_half.glsl"

// The work group's mean of its invocations' partial sums `own` (a tree in shared memory), into `mean`. A macro,
// not a function: llvmpipe mis-ran the barriers of a function called twice (the variance came out wrong).
#define MEAN_OF(own, mean) \
    sums[lane] = own; \
    barrier(); \
    for (int s = LOCAL_SIZE / 2; s > 0; s >>= 1) { \
        if (lane < s) sums[lane] += sums[lane + s]; \
        barrier(); \
    } \
    float mean = sums[0] / float(width); \
    barrier();

void main() {
    int row = int(gl_WorkGroupID.x) * width, lane = int(gl_LocalInvocationID.x);
    float sum = 0.0;
    for (int c = lane; c < width; c += LOCAL_SIZE) sum += source[row + c];
    MEAN_OF(sum, mean)
    float centre = layernorm != 0 ? mean : 0.0;
    float squares = 0.0;
    for (int c = lane; c < width; c += LOCAL_SIZE) {
        float d = source[row + c] - centre;
        squares += d * d;
    }
    MEAN_OF(squares, variance)
    float inverse = 1.0 / sqrt(variance + eps);
    for (int c = lane; c < width; c += LOCAL_SIZE) {
        float y = (source[row + c] - centre) * inverse * HALF_AT(weight_words, c);
        target[row + c] = layernorm != 0 ? y + HALF_AT(bias_words, c) : y;
    }
}
