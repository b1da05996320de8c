// Generation (docs/FORMATS.md §11), after each step's logits: one work group per row chooses the next token
// (greedy, or a draw of the counter-based generator over the temperature's weights, cut by top-k and top-p),
// stores it as a token pixel in column n + step of the generated texture, and the step's outputs: its
// prediction word (§5 bytes of the chosen token) and log-probability at [step * rows + row], and the
// top_count likeliest tokens (id, log p) after them at [(step * rows + row) * top_count + j]. Kept weights go
// through `kept` (a texture laid out like T_logits). A top-k or top-p cut ranks each token against every
// other: VOCAB^2 comparisons per row and step, shared by the group.
layout(local_size_x = LOCAL_SIZE) in;  // a power of two

#include "logits_grid.glsl"
layout(binding = BINDING_LOGITS_IN, r32f) uniform readonly image2D logits_in;
layout(binding = BINDING_KEPT, r32f) uniform coherent image2D kept;
layout(binding = BINDING_LENGTHS, rgba8ui) uniform readonly uimage2D lengths;
layout(binding = BINDING_GENERATED, rgba8ui) uniform writeonly uimage2D generated;
layout(std430, binding = BINDING_DRAW_ROWS) readonly restrict buffer DrawRows { uint DRAW_ROWS[]; };  // §11's row
layout(std430, binding = BINDING_WORDS) writeonly restrict buffer Words { uint WORDS[]; };
layout(std430, binding = BINDING_LOGPROBS) writeonly restrict buffer Logprobs { float LOGPROBS[]; };
layout(std430, binding = BINDING_ALTERNATIVES) writeonly restrict buffer Alternatives { uvec2 ALTERNATIVES[]; };
uniform int step;
uniform int rows;
uniform int top_count;     // alternatives to report, 0..MAX_TOP_LOGPROBS
uniform uint seed;
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

float draw(uint row) {
    return float(pcg(pcg(pcg(seed) ^ row) ^ uint(step)) >> 8u) * (1.0 / 16777216.0);
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
        float r = draw(DRAW_ROWS[row]) * total;
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

// The top_count likeliest tokens, likeliest first (rank: logit descending, lower id first): round j takes the
// best token ranked after round j - 1's, through top1_softmax's shared arrays.
void alternatives(int t, int row, float top, float exp_sum) {
    float previous = 1.0 / 0.0;
    int previous_index = -1;
    for (int j = 0; j < top_count; j++) {
        float value = -1.0 / 0.0;
        int best = VOCAB;
        for (int i = t; i < VOCAB; i += LOCAL_SIZE) {
            float v = TOP1_VALUE(row, i);
            bool after = v < previous || (v == previous && i > previous_index);
            if (after && beats(v, i, value, best)) { value = v; best = i; }
        }
        top1_value[t] = value;
        top1_index[t] = best;
        memoryBarrierShared();
        barrier();
        for (int stride = LOCAL_SIZE / 2; stride > 0; stride /= 2) {
            if (t < stride && beats(top1_value[t + stride], top1_index[t + stride], top1_value[t], top1_index[t])) {
                top1_value[t] = top1_value[t + stride];
                top1_index[t] = top1_index[t + stride];
            }
            memoryBarrierShared();
            barrier();
        }
        previous = top1_value[0];
        previous_index = top1_index[0];
        if (t == 0) {
            float logp = previous - top - log(exp_sum);
            ALTERNATIVES[(step * rows + row) * top_count + j] = uvec2(uint(previous_index), floatBitsToUint(logp));
        }
        barrier();  // every invocation has read the winner before the next round writes the arrays
    }
}

void main() {
    int t = int(gl_LocalInvocationID.x);
    int row = int(gl_WorkGroupID.x);
    int index;
    float exp_sum;
    top1_softmax(t, row, VOCAB, index, exp_sum);
    float top = TOP1_VALUE(row, index);
    barrier();  // every invocation has read top1_softmax's result before alternatives() reuses its arrays
    alternatives(t, row, top, exp_sum);
    int chosen = temperature > 0.0 ? sample_token(t, row, top) : index;
    if (t == 0) {
        uvec4 length_px = imageLoad(lengths, ivec2(0, row));
        int column = int(length_px.r + 256u * length_px.g) + step;
        uint id = uint(chosen);
        imageStore(generated, ivec2(column, row), uvec4(id & 255u, id >> 8u, uint(TOKEN_MARK), uint(WRITTEN_ALPHA)));
        float logp = TOP1_VALUE(row, chosen) - top - log(exp_sum);
        // as glsl/argmax.comp rounds it for the top token (exp(0) = 1): the prediction pixel infer gives
        uint confidence = uint(floor(255.0 * exp(TOP1_VALUE(row, chosen) - top) / exp_sum + 0.5));
        WORDS[step * rows + row] = id | (confidence << 16u) | (uint(WRITTEN_ALPHA) << 24u);
        LOGPROBS[step * rows + row] = logp;
    }
}
