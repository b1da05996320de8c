// Generation (docs/FORMATS.md §11), after each step's logits: one work group per row chooses the next token
// (greedy, or a draw of the counter-based generator over the temperature's weights, cut by top-k and top-p),
// stores it as a token pixel in column n + step of the generated texture and its log-probability in
// column step of T_logprobs. Kept weights go through `kept` (a texture laid out like T_logits). A top-k or
// top-p cut ranks each token against every other: VOCAB^2 comparisons per row and step, shared by the group.
layout(local_size_x = LOCAL_SIZE) in;  // a power of two

#include "logits_grid.glsl"
layout(binding = BINDING_LOGITS_IN, r32f) uniform readonly image2D logits_in;
layout(binding = BINDING_KEPT, r32f) uniform coherent image2D kept;
layout(binding = BINDING_LENGTHS, rgba8ui) uniform readonly uimage2D lengths;
layout(binding = BINDING_GENERATED, rgba8ui) uniform writeonly uimage2D generated;
layout(binding = BINDING_LOGPROBS_OUT, r32f) uniform writeonly image2D logprobs_out;
uniform int step;
uniform uint seed;
uniform int row_base;      // this tile's first row in its request: the generator's row is row_base + row
uniform float temperature; // 0: greedy
uniform int top_k;         // VOCAB: no cut
uniform float top_p;       // 1: no cut

#define TOP1_VALUE(prompt, k) imageLoad(logits_in, logits_pixel(prompt, k)).r
#include "top1_softmax.glsl"

uint pcg(uint x) {
    uint s = x * 747796405u + 2891336453u;
    uint w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

float draw(int row) {
    return float(pcg(pcg(pcg(seed) ^ uint(row)) ^ uint(step)) >> 8u) * (1.0 / 16777216.0);
}

// Thread t owns the ids [t * CHUNK, (t + 1) * CHUNK): contiguous, so the walk below runs in id order.
const int CHUNK = (VOCAB + LOCAL_SIZE - 1) / LOCAL_SIZE;

float sum_partials() {
    memoryBarrierShared();
    barrier();
    float total = 0.0;
    for (int c = 0; c < LOCAL_SIZE; c++) total += partial[c];
    barrier();  // every invocation has read partial[] before it is written again
    return total;
}

int sample_token(int t, int row, float top) {
    int first = t * CHUNK, last = min(first + CHUNK, VOCAB);
    bool cut = top_k < VOCAB || top_p < 1.0;
    // kept[i]: w_i, or (with a cut) first the mass ranked before i (-1 when i is past the top-k).
    float mass_k = 0.0;
    for (int i = first; i < last; i++) {
        float l = TOP1_VALUE(row, i);
        float w = exp((l - top) / temperature);
        float stored = w;
        if (cut) {
            int rank = 0;
            float before = 0.0;
            for (int j = 0; j < VOCAB; j++) {
                float lj = TOP1_VALUE(row, j);
                if (lj > l || (lj == l && j < i)) {
                    rank++;
                    before += exp((lj - top) / temperature);
                }
            }
            stored = rank < top_k ? before : -1.0;
            if (rank < top_k) mass_k += w;
        }
        imageStore(kept, logits_pixel(row, i), vec4(stored));
    }
    if (cut) {
        partial[t] = mass_k;
        float limit = top_p * sum_partials();
        memoryBarrierImage();
        for (int i = first; i < last; i++) {
            float before = imageLoad(kept, logits_pixel(row, i)).r;
            bool keep = before >= 0.0 && before < limit;
            float w = exp((TOP1_VALUE(row, i) - top) / temperature);
            imageStore(kept, logits_pixel(row, i), vec4(keep ? w : 0.0));
        }
    }
    memoryBarrierImage();
    barrier();
    float mass = 0.0;
    for (int i = first; i < last; i++) mass += imageLoad(kept, logits_pixel(row, i)).r;
    partial[t] = mass;
    memoryBarrierShared();
    barrier();
    int chosen = -1;
    if (t == 0) {
        float total = 0.0;
        for (int c = 0; c < LOCAL_SIZE; c++) total += partial[c];
        float r = draw(row_base + row) * total;
        // The chunk where the running sum passes r (else the last chunk holding a kept token), then its ids.
        float c_sum = 0.0;
        int chunk = -1, last_kept_chunk = 0;
        for (int c = 0; c < LOCAL_SIZE && chunk < 0; c++) {
            if (partial[c] > 0.0) last_kept_chunk = c;
            if (partial[c] > 0.0 && c_sum + partial[c] > r) chunk = c;
            else c_sum += partial[c];
        }
        if (chunk < 0) {
            chunk = last_kept_chunk;
            r = 1.0 / 0.0;
        }
        int last_kept = chunk * CHUNK;
        for (int i = chunk * CHUNK; i < min((chunk + 1) * CHUNK, VOCAB) && chosen < 0; i++) {
            float w = imageLoad(kept, logits_pixel(row, i)).r;
            if (w > 0.0) {
                c_sum += w;
                last_kept = i;
                if (c_sum > r) chosen = i;
            }
        }
        if (chosen < 0) chosen = last_kept;
    }
    return chosen;
}

void main() {
    int t = int(gl_LocalInvocationID.x);
    int row = int(gl_WorkGroupID.x);
    int index;
    float exp_sum;
    top1_softmax(t, row, VOCAB, index, exp_sum);
    float top = TOP1_VALUE(row, index);
    int chosen = temperature > 0.0 ? sample_token(t, row, top) : index;
    if (t == 0) {
        uvec4 length_px = imageLoad(lengths, ivec2(0, row));
        int column = int(length_px.r + 256u * length_px.g) + step;
        uint id = uint(chosen);
        imageStore(generated, ivec2(column, row), uvec4(id & 255u, id >> 8u, uint(TOKEN_MARK), uint(WRITTEN_ALPHA)));
        float logp = TOP1_VALUE(row, chosen) - top - log(exp_sum);
        imageStore(logprobs_out, ivec2(step, row), vec4(logp));
    }
}
