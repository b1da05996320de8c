// Generation (docs/FORMATS.md §11), before each step: copy each row's window — its last
// min(n + step, CONTEXT_WINDOW) tokens of the generated texture, the columns ending at n + step - 1 — into
// the token texture the forward pass reads, left-aligned, then (0, 0, 0, 0). One invocation per pixel.
layout(local_size_x = LOCAL_SIZE) in;

layout(binding = BINDING_GENERATED, rgba8ui) uniform readonly uimage2D generated;
layout(binding = BINDING_LENGTHS, rgba8ui) uniform readonly uimage2D lengths;
layout(binding = BINDING_WINDOW_OUT, rgba8ui) uniform writeonly uimage2D window_out;
uniform int step;

void main() {
    int x = int(gl_GlobalInvocationID.x);
    int row = int(gl_WorkGroupID.y);
    if (x >= CONTEXT_WINDOW) return;
    uvec4 length_px = imageLoad(lengths, ivec2(0, row));
    int end = int(length_px.r + 256u * length_px.g) + step;  // tokens the row holds now
    int count = min(end, CONTEXT_WINDOW);
    uvec4 px = x < count ? imageLoad(generated, ivec2(end - count + x, row)) : uvec4(0u);
    imageStore(window_out, ivec2(x, row), px);
}
