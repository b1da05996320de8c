// Generation (docs/FORMATS.md §11), after each step's logits: one work group per row chooses the next token
// (greedy, or a draw of the counter-based generator over the temperature's weights, cut by top-k and top-p),
// stores it as a token pixel in column n + step of the generated texture, and the step's outputs: its
// prediction word (§5 bytes of the chosen token) and log-probability at [step * rows + row], and the
// top_count likeliest tokens (id, log p) after them at [(step * rows + row) * top_count + j]. A top-k or top-p
// cut is found by bisection on the tokens' rank keys with group-wide counts and sums, so an invocation's loops
// stay within what every driver runs at every vocabulary (engine/executors/generation.py counts them).
layout(local_size_x = LOCAL_SIZE) in;  // a power of two

#include "logits_grid.glsl"
layout(binding = BINDING_LOGITS_IN, r32f) uniform readonly image2D logits_in;
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

// The sum over the group of each invocation's `value` (a tree: LOG2(LOCAL_SIZE) steps); every invocation
// gets it.
float group_sum(int t, float value) {
    partial[t] = value;
    memoryBarrierShared();
    barrier();
    for (int stride = LOCAL_SIZE / 2; stride > 0; stride /= 2) {
        if (t < stride) partial[t] += partial[t + stride];
        memoryBarrierShared();
        barrier();
    }
    float total = partial[0];
    // Without the memory barrier llvmpipe read partial[0] after the barrier (the next sum's), not before.
    memoryBarrierShared();
    barrier();  // every invocation has read the total before partial[] is written again
    return total;
}

// A token's rank as a 48-bit key, larger first: its logit's bits ordered as unsigned integers (equal logits
// equal: -0 as +0), then VOCAB - 1 - id, so on equal logits the lower id ranks first (docs/FORMATS.md §11).
uvec2 rank_key(float logit, int i) {
    uint bits = logit == 0.0 ? 0u : floatBitsToUint(logit);
    return uvec2((bits >> 31u) != 0u ? ~bits : bits | 0x80000000u, uint(VOCAB - 1 - i));
}

bool at_least(uvec2 key, uvec2 bound) { return key.x > bound.x || (key.x == bound.x && key.y >= bound.y); }

float weight(float logit, float top) { return exp((logit - top) / temperature); }

// The largest key tau whose tokens ranked at or above it (key >= tau), of those at or above `floor_key`,
// count (`by_count`) or weigh at least `bound`: the kept set {key >= tau} is then the shortest ranked prefix
// reaching the bound. Built a bit at a time, most significant first: RANK_KEY_BITS passes over the row, so each
// invocation loops RANK_KEY_BITS * (CHUNK + LOG2(LOCAL_SIZE) + 1) times, not VOCAB^2 / LOCAL_SIZE.
uvec2 largest_reaching(int t, int row, float top, uvec2 floor_key, bool by_count, float bound) {
    int first = t * CHUNK, last = min(first + CHUNK, VOCAB);
    uvec2 tau = uvec2(0u);
    for (int b = RANK_KEY_BITS - 1; b >= 0; b--) {
        uvec2 candidate = tau;
        if (b >= 16) candidate.x |= 1u << uint(b - 16);
        else candidate.y |= 1u << uint(b);
        float reached = 0.0;
        for (int i = first; i < last; i++) {
            float l = TOP1_VALUE(row, i);
            uvec2 key = rank_key(l, i);
            if (at_least(key, candidate) && at_least(key, floor_key)) reached += by_count ? 1.0 : weight(l, top);
        }
        if (group_sum(t, reached) >= bound) tau = candidate;
    }
    return tau;
}

int sample_token(int t, int row, float top) {
    int first = t * CHUNK, last = min(first + CHUNK, VOCAB);
    // Kept: the tokens whose key is at least kept_from (every token without a cut). Top-k: the K first-ranked;
    // top-p: of those, the shortest ranked prefix whose mass reaches top_p * S_K.
    uvec2 kept_from = uvec2(0u);
    if (top_k < VOCAB) kept_from = largest_reaching(t, row, top, kept_from, true, float(top_k));
    if (top_p < 1.0) {
        float mass_k = 0.0;
        for (int i = first; i < last; i++) {
            float l = TOP1_VALUE(row, i);
            if (at_least(rank_key(l, i), kept_from)) mass_k += weight(l, top);
        }
        kept_from = largest_reaching(t, row, top, kept_from, false, top_p * group_sum(t, mass_k));
    }
    float mass = 0.0;
    for (int i = first; i < last; i++) {
        float l = TOP1_VALUE(row, i);
        if (at_least(rank_key(l, i), kept_from)) mass += weight(l, top);
    }
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
            float l = TOP1_VALUE(row, i);
            float w = at_least(rank_key(l, i), kept_from) ? weight(l, top) : 0.0;
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
