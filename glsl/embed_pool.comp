// Pass 1: T_embed[prompt][d] = mean of embed[token][d] over the prompt's last CONTEXT_WINDOW tokens.
// One invocation per (dimension, prompt). A token pixel is (id % 256, id / 256, TOKEN_MARK); a row ends at
// the first pixel whose blue is not TOKEN_MARK.
layout(local_size_x = LOCAL_SIZE) in;

#include "weights.glsl"
layout(binding = BINDING_TOKENS) uniform usampler2D tokens;
layout(binding = BINDING_EMBED_OUT, r32f) uniform writeonly image2D embed_out;

void main() {
    int d = int(gl_GlobalInvocationID.x);
    int prompt = int(gl_WorkGroupID.y);
    if (d >= EMBED_DIM) return;

    int width = textureSize(tokens, 0).x;
    int n = 0;
    while (n < width && texelFetch(tokens, ivec2(n, prompt), 0).b == uint(TOKEN_MARK)) n++;
    int first = max(0, n - CONTEXT_WINDOW);

    float sum = 0.0;
    for (int i = first; i < n; i++) {
        uvec4 px = texelFetch(tokens, ivec2(i, prompt), 0);
        sum += W_EMBED(int(px.r + 256u * px.g), d);
    }
    imageStore(embed_out, ivec2(d, prompt), vec4(sum / float(n - first)));
}
