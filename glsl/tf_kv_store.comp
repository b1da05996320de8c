// Version 2, attend (1/3): store the rows' k and v in the layer's float16 KV cache (docs/FORMATS.md §14.4),
// two elements a word (packHalf2x16 rounds to nearest even). Cache row slot * context + p of a layer holds the
// slot's position p, kv_width elements in row_words words. One invocation per word of a new row.
layout(local_size_x = LOCAL_SIZE) in;

layout(std430, binding = BINDING_K) readonly restrict buffer K { float k[]; };
layout(std430, binding = BINDING_V) readonly restrict buffer V { float v[]; };
layout(std430, binding = BINDING_KEYS) writeonly restrict buffer Keys { uint keys[]; };
layout(std430, binding = BINDING_VALUES) writeonly restrict buffer Values { uint values[]; };
layout(std430, binding = BINDING_ROWS) readonly restrict buffer Rows { ivec2 rows[]; };  // (slot, position)
uniform int kv_width, row_words, positions, context, groups_x;

void main() {
    int e = int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * groups_x * LOCAL_SIZE);
    if (e >= positions * row_words) return;
    int i = e / row_words, word = e % row_words;
    int at = i * kv_width + 2 * word;
    bool second = 2 * word + 1 < kv_width;
    int cached = (rows[i].x * context + rows[i].y) * row_words + word;
    keys[cached] = packHalf2x16(vec2(k[at], second ? k[at + 1] : 0.0));
    values[cached] = packHalf2x16(vec2(v[at], second ? v[at + 1] : 0.0));
}
