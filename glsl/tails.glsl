// The token texture the texture executors read: each prompt's last tokens (at most CONTEXT_WINDOW), one
// row each, left-aligned, (id % 256, id / 256, TOKEN_MARK) a pixel, then (0, 0, 0).
layout(binding = BINDING_TOKENS) uniform usampler2D tokens;

int token_count(int prompt) {
    int n = 0;
    while (n < CONTEXT_WINDOW && texelFetch(tokens, ivec2(n, prompt), 0).b == uint(TOKEN_MARK)) n++;
    return n;
}

// The token `back` places before the last of the prompt's n tokens (back < n).
int token_back(int prompt, int n, int back) {
    uvec4 px = texelFetch(tokens, ivec2(n - 1 - back, prompt), 0);
    return int(px.r + 256u * px.g);
}
