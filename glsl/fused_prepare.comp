// Fused executor, once at load: turn the weight texture into the float buffers the fused kernels read.
//   P[v][j]    = sum_d embed[v][d] * hidden[d][j]   (mean(embed[t]) . hidden = mean(P[t]): linear before ReLU)
//   OUT_W[j][k] = out[j][k], rows padded to VOCAB_PAD columns with zeros
//   BIAS       = b_hidden[HIDDEN_DIM], then b_out padded to VOCAB_PAD
// One invocation per output float; the grid may be 2-D when there are more than 65535 groups.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
layout(std430, binding = BINDING_POOLED_HIDDEN) writeonly restrict buffer PooledHidden { float P[]; };
layout(std430, binding = BINDING_OUT_WEIGHTS) writeonly restrict buffer OutWeights { float OUT_W[]; };
layout(std430, binding = BINDING_BIASES) writeonly restrict buffer Biases { float BIAS[]; };

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * LOCAL_SIZE);
    if (e < VOCAB * HIDDEN_DIM) {
        int v = e / HIDDEN_DIM, j = e % HIDDEN_DIM;
        float sum = 0.0;
        for (int d = 0; d < EMBED_DIM; d++) sum += W_EMBED(v, d) * W_HIDDEN(d, j);
        P[e] = sum;
        return;
    }
    e -= VOCAB * HIDDEN_DIM;
    if (e < HIDDEN_DIM * VOCAB_PAD) {
        int j = e / VOCAB_PAD, k = e % VOCAB_PAD;
        OUT_W[e] = k < VOCAB ? W_OUT(j, k) : 0.0;
        return;
    }
    e -= HIDDEN_DIM * VOCAB_PAD;
    if (e < HIDDEN_DIM) {
        BIAS[e] = W_B_HIDDEN(e);
        return;
    }
    e -= HIDDEN_DIM;
    if (e < VOCAB_PAD) BIAS[HIDDEN_DIM + e] = e < VOCAB ? W_B_OUT(e) : 0.0;
}
