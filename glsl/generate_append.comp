// Generation (docs/FORMATS.md §11) for an executor without logits on the GPU (greedy only): after each
// step, copy every row's prediction pixel's id into column n + step of the generated texture, keeping the
// pixel's alpha (WRITTEN_ALPHA only where the step wrote its prediction), and the pixel's bytes as the step's
// prediction word at [step * rows + row]. One invocation per row.
layout(local_size_x = LOCAL_SIZE) in;

layout(binding = BINDING_PREDICTION_IN, rgba8ui) uniform readonly uimage2D prediction_in;
layout(binding = BINDING_LENGTHS, rgba8ui) uniform readonly uimage2D lengths;
layout(binding = BINDING_GENERATED, rgba8ui) uniform writeonly uimage2D generated;
layout(std430, binding = BINDING_WORDS) writeonly restrict buffer Words { uint WORDS[]; };
uniform int step;
uniform int rows;

void main() {
    int row = int(gl_GlobalInvocationID.x);
    if (row >= rows) return;
    uvec4 prediction = imageLoad(prediction_in, ivec2(0, row));
    uvec4 length_px = imageLoad(lengths, ivec2(0, row));
    int column = int(length_px.r + 256u * length_px.g) + step;
    imageStore(generated, ivec2(column, row), uvec4(prediction.r, prediction.g, uint(TOKEN_MARK), prediction.a));
    WORDS[step * rows + row] = prediction.r | (prediction.g << 8u) | (prediction.b << 16u) | (prediction.a << 24u);
}
