// Fused forward pass for few prompts (one prompt: the latency path). Work group (slice, p) stages prompt
// p's tokens, computes its hidden layers in shared memory (the first from the prepared token tables and,
// for an attention context, the head; the others as dense layers), then the logits of vocabulary slice
// `slice`: its threads split the slice's columns (a vec4 of weights each) and, when there are more
// threads than columns, the hidden units too, adding their partial sums through shared memory; each
// column's logit is folded into an online softmax and a tree in shared memory merges the threads. With
// SPLIT > 1 slices, each group leaves its partial result in Scratch and the last group of the prompt to
// arrive (an atomic count) merges them. RESIDENT: the group loops, taking one prompt at a time from the host
// until told to stop or idle for IDLE_POLLS polls (engine/executors/fused_resident.py).
layout(local_size_x = LOCAL_SIZE) in;  // SMALL_THREADS, a power of two

#include "fused_common.glsl"
layout(std430, binding = BINDING_SCRATCH) coherent restrict buffer Scratch { uint arrivals[SMALL_MAX]; vec4 partials[]; };
// Generation and the resident kernel read the output weights as their quantized bytes, four columns a word (a
// quarter of the float traffic: one group streams them every step): w = (q - OUT_WEIGHT_ZERO) *
// OUT_WEIGHT_SCALE, the scale applied once to the column's sum.
#define OUT_BYTES (GENERATE || RESIDENT)
#if OUT_BYTES
layout(std430, binding = BINDING_OUT_BYTES) readonly restrict buffer OutBytes { uint OUT_Q[]; };
#endif

// COLUMN_THREADS (injected): threads along the columns, a power of two <= SMALL_THREADS (below SLICE4: rounds of
// columns; above it, as the resident kernel may have: lanes past SLICE4 idle)
const int SLICE4 = VOCAB_PAD / 4 / SPLIT;                // vec4 columns per slice
const int HIDDEN_SPLIT = SMALL_THREADS / COLUMN_THREADS; // threads sharing one column's hidden units
const int ROUNDS = (SLICE4 + COLUMN_THREADS - 1) / COLUMN_THREADS;
const int PART_ROWS = (LAST_HIDDEN + HIDDEN_SPLIT - 1) / HIDDEN_SPLIT;  // hidden rows a thread sums, at most

#if OUT_BYTES
// SUBGROUP_SIZE > 0 (injected where compute shaders have subgroup shuffles, the kernel enabling them): a
// column's HIDDEN_SPLIT threads are neighbours in one subgroup and add their partial sums by shuffles, and
// the softmax states merge by shuffles within each subgroup, then once across subgroups: one barrier where
// the shared-memory tree takes log2(COLUMN_THREADS) + 2.
#define COLUMN_SUBGROUPS (SUBGROUP_SIZE > 0)
#else
#define COLUMN_SUBGROUPS 0
#endif

#if COLUMN_SUBGROUPS && SPLIT != 1
#error "subgroup merges finish the prompt in one work group: SPLIT must be 1"
#endif

#if COLUMN_SUBGROUPS
// The subgroups this kernel was compiled for: SUBGROUP_SIZE lanes, every subgroup full. GL promises
// neither (a driver may run another width or leave a subgroup part empty); where they do not hold, no
// step's word is written, and the host reports the GPU's unwritten token instead of a wrong one.
bool subgroups_as_compiled() {
    return gl_SubgroupSize == uint(SUBGROUP_SIZE) && gl_NumSubgroups * gl_SubgroupSize == uint(SMALL_THREADS);
}

// The thread's place in subgroup order (subgroups of consecutive invocations are not promised by GL).
int column_order(int t) { return int(gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID); }
int column_lane(int t) { return column_order(t) / HIDDEN_SPLIT; }
int column_part(int t) { return column_order(t) % HIDDEN_SPLIT; }

vec4 merged_in_subgroup(float top, float sum, int index, float target, int width) {
    for (int d = 1; d < width; d *= 2) merge(top, sum, index, target, subgroupShuffleXor(packed_state(top, sum, index, target), d));
    return packed_state(top, sum, index, target);
}
#else
int column_lane(int t) { return t % COLUMN_THREADS; }
int column_part(int t) { return t / COLUMN_THREADS; }
#endif

#if OUT_BYTES && OUT_CACHED
// ROUNDS == 1 and few rows a thread (engine/executors/fused_generation.py, fused_resident.py decide): each
// thread's output weights and biases of its slice stay in registers for the whole dispatch.
uint out_cache[PART_ROWS];
vec4 out_bias4 = vec4(0.0);

void cache_out_weights(int t) {
    int lane = column_lane(t), part = column_part(t);
    int c4 = int(gl_WorkGroupID.x) * SLICE4 + lane;
    bool working = lane < SLICE4 && part < HIDDEN_SPLIT;
    for (int i = 0; i < PART_ROWS; i++) {
        int j = part + i * HIDDEN_SPLIT;
        out_cache[i] = working && j < LAST_HIDDEN ? OUT_Q[j * (VOCAB_PAD / 4) + c4] : 0u;
    }
    for (int r = 0; r < 4; r++) {
        int k = 4 * c4 + r;
        out_bias4[r] = working && k < VOCAB ? BIASES[OUT_BIAS_AT + k] : 0.0;
    }
}
#endif

#if GENERATE
void start_steps() {
    int t = int(gl_LocalInvocationID.x);
    load_own_row(int(gl_WorkGroupID.y), t);
#if OUT_CACHED
    cache_out_weights(t);
#endif
}
#endif

// Output bias of column k, the r-th of its vec4 column.
float column_bias(int r, int k) {
#if OUT_BYTES && OUT_CACHED
    return out_bias4[r];
#else
    return BIASES[OUT_BIAS_AT + k];
#endif
}

// Shared arrays (declared by engine/executors/fused_config.py): h[HIDDEN_MAX], h_next[NEXT_MAX] (layers after the
// first), head_q[HEAD_SPAN], head_s[SCORE_SPAN], head_out[HEAD_SPAN], head_keys[KEYS_SPAN],
// head_values[KEYS_SPAN] (attention), partial_sums[SMALL_THREADS],
// states[COLUMN_THREADS], last_arrival[1], and the staging arrays of fused_common.glsl.

void forward() {
    int t = int(gl_LocalInvocationID.x);
    int slice = int(gl_WorkGroupID.x);
    int p = int(gl_WorkGroupID.y);
    int row_len = prompt_row_len();
    stage_windows(p, p + 1, row_len, t, SMALL_THREADS);
    for (int j = t; j < HIDDEN0; j += SMALL_THREADS) h[j] = 0.0;
    barrier();
    for (int chunk = 0; chunk < staged_count[0]; chunk += STAGE_W) {
        stage_chunk(p, row_len, chunk, t, SMALL_THREADS);
        barrier();
        for (int j = t; j < HIDDEN0; j += SMALL_THREADS) h[j] += staged_sum(0, chunk, j);
        barrier();
    }
#if CONTEXT_MODE == MODE_ATTENTION
    int count = staged_count[0];  // the whole window is staged (CONTEXT_WINDOW <= STAGE_W)
    // The query and every key and value row at once, a global load or two a thread: the loops below then
    // read shared memory instead of waiting on HEAD_DIM loads in a row.
    for (int dd = t; dd < HEAD_DIM; dd += SMALL_THREADS) head_q[dd] = count > 0 ? head_q_of(0, dd) : 0.0;
#if KEYS_SPAN > 1
    for (int e = t; e < count * HEAD_DIM; e += SMALL_THREADS) {
        head_keys[e] = head_k(0, e / HEAD_DIM, e % HEAD_DIM);
        head_values[e] = head_v(0, e / HEAD_DIM, e % HEAD_DIM);
    }
#define WINDOW_KEY(j, dd) head_keys[(j) * HEAD_DIM + (dd)]
#define WINDOW_VALUE(j, dd) head_values[(j) * HEAD_DIM + (dd)]
#else  // they do not fit in shared memory (FusedConfig.keys_in_shared)
#define WINDOW_KEY(j, dd) head_k(0, j, dd)
#define WINDOW_VALUE(j, dd) head_v(0, j, dd)
#endif
    barrier();
    for (int j = t; j < CONTEXT_WINDOW; j += SMALL_THREADS) {
        float s = 0.0;
        if (j < count) {
            for (int dd = 0; dd < HEAD_DIM; dd++) s += head_q[dd] * WINDOW_KEY(j, dd);
        }
        head_s[j] = j < count ? s / sqrt(float(HEAD_DIM)) : NO_LOGIT;
    }
    barrier();
    for (int dd = t; dd < HEAD_DIM; dd += SMALL_THREADS) {
        float top = NO_LOGIT, total = 0.0, weighted = 0.0;
        for (int j = 0; j < count; j++) top = max(top, head_s[j]);
        for (int j = 0; j < count; j++) {
            float a = exp(head_s[j] - top);
            total += a;
            weighted += a * WINDOW_VALUE(j, dd);
        }
        head_out[dd] = count > 0 ? weighted / total : 0.0;
    }
    barrier();
    for (int j = t; j < HIDDEN0; j += SMALL_THREADS) {
        float sum = 0.0;
        for (int dd = 0; dd < HEAD_DIM; dd++) sum += head_out[dd] * HEAD[W0H_AT + dd * HIDDEN0 + j];
        h[j] += sum;
    }
    barrier();
#endif
    for (int j = t; j < HIDDEN0; j += SMALL_THREADS) h[j] = first_activation(0, h[j], j);
    barrier();
#if DEPTH > 1
    for (int l = 1; l < DEPTH; l++) {
        int width_in = LAYER_WIDTH[l - 1], width = LAYER_WIDTH[l];
        for (int o = t; o < width; o += SMALL_THREADS) {
            float sum = BIASES[LAYER_BIAS[l] + o];
            for (int i = 0; i < width_in; i++) sum += h[i] * DENSE[LAYER_DENSE[l] + i * width + o];
            h_next[o] = max(sum, 0.0) + (LAYER_RESIDUAL[l] != 0 ? h[o] : 0.0);
        }
        barrier();
        for (int o = t; o < width; o += SMALL_THREADS) h[o] = h_next[o];
        barrier();
    }
#endif

    int lane = column_lane(t), part = column_part(t);
    float top = NO_LOGIT, sum = 0.0, target = NO_LOGIT;
    int index = VOCAB;
    for (int round = 0; round < ROUNDS; round++) {
        int c4 = slice * SLICE4 + round * COLUMN_THREADS + lane;
        bool working = round * COLUMN_THREADS + lane < SLICE4 && part < HIDDEN_SPLIT;
        vec4 acc = vec4(0.0);
        if (working) {
#if OUT_BYTES
            for (int i = 0; i < PART_ROWS; i++) {  // a constant trip count: the loads are issued together
                int j = part + i * HIDDEN_SPLIT;
                if (j < LAST_HIDDEN) {
#if OUT_CACHED
                    uint q = out_cache[i];
#else
                    uint q = OUT_Q[j * (VOCAB_PAD / 4) + c4];
#endif
                    vec4 w = vec4(q & 255u, (q >> 8u) & 255u, (q >> 16u) & 255u, q >> 24u) - OUT_WEIGHT_ZERO;
                    acc += h[j] * w;
                }
            }
            acc *= OUT_WEIGHT_SCALE;
#else
            for (int j = part; j < LAST_HIDDEN; j += HIDDEN_SPLIT) acc += h[j] * OUT_W4[j * (VOCAB_PAD / 4) + c4];
#endif
        }
#if COLUMN_SUBGROUPS
        for (int d = 1; d < HIDDEN_SPLIT; d *= 2) acc += subgroupShuffleXor(acc, d);
        // every thread of the column holds its four sums: thread `part` considers logits part, part + HIDDEN_SPLIT...
        for (int r = part; r < 4; r += HIDDEN_SPLIT) {
            int k = 4 * c4 + r;
            if (working && k < VOCAB) consider(top, sum, index, acc[r] + column_bias(r, k), k);
        }
    }
    vec4 merged = merged_in_subgroup(top, sum, index, target, SUBGROUP_SIZE);
    if (gl_SubgroupInvocationID == 0u) states[gl_SubgroupID] = merged;
    barrier();
    if (gl_SubgroupID == 0u) {
        vec4 own = gl_SubgroupInvocationID < gl_NumSubgroups ? states[gl_SubgroupInvocationID]
                                                             : packed_state(NO_LOGIT, 0.0, VOCAB, NO_LOGIT);
        vec4 all = merged_in_subgroup(own.x, own.y, floatBitsToInt(own.z), own.w, SUBGROUP_SIZE);
        if (gl_SubgroupInvocationID == 0u && subgroups_as_compiled())
            finish(p, staged_valid[0], floatBitsToInt(all.z), all.x, all.y, all.w);
#if RESIDENT
        else if (gl_SubgroupInvocationID == 0u)
            answer(UNANSWERED_WORD);  // never a wrong prediction: the host reports the kernel's failure
#endif
    }
#else
        partial_sums[t] = acc;
        barrier();
        if (working && part == 0) {
            for (int s = 1; s < HIDDEN_SPLIT; s++) acc += partial_sums[s * COLUMN_THREADS + lane];
            for (int r = 0; r < 4; r++) {
                int k = 4 * c4 + r;
                if (k < VOCAB) {
                    float logit = acc[r] + column_bias(r, k);
                    consider(top, sum, index, logit, k);
                    target = max(target, target_logit(p, k, logit));
                }
            }
        }
        barrier();
    }
    if (t < COLUMN_THREADS) states[t] = packed_state(top, sum, index, target);
    barrier();
    for (int stride = COLUMN_THREADS / 2; stride > 0; stride /= 2) {
        if (t < stride) {
            merge(top, sum, index, target, states[t + stride]);
            states[t] = packed_state(top, sum, index, target);
        }
        barrier();
    }
#if SPLIT == 1
    if (t == 0) finish(p, staged_valid[0], index, top, sum, target);
#else
    if (t == 0) {
        // A group that refused its window says so in its state (a negative sum no merge makes): the resident
        // kernel's groups each read the request, so one may have read it torn where the others did not.
        partials[p * SPLIT + slice] = staged_valid[0] ? states[0] : vec4(NO_LOGIT, -1.0, intBitsToFloat(VOCAB), NO_LOGIT);
        memoryBarrierBuffer();
        last_arrival[0] = atomicAdd(arrivals[p], 1u) == uint(SPLIT - 1);
    }
    barrier();
    if (t == 0 && last_arrival[0]) {
        top = NO_LOGIT; sum = 0.0; index = VOCAB; target = NO_LOGIT;
        bool valid = true;
        for (int s = 0; s < SPLIT; s++) {
            vec4 part = partials[p * SPLIT + s];
            valid = valid && part.y >= 0.0;
            if (part.y >= 0.0) merge(top, sum, index, target, part);
        }
        arrivals[p] = 0u;  // before the answer: a resident kernel's next prompt may follow it at once
        memoryBarrierBuffer();
        finish(p, valid, index, top, sum, target);
    }
#endif
#endif
}

#if RESIDENT
uniform uint served_seq;  // the last request answered before this dispatch: the next one has another number
uniform uint epoch;       // written to MAILBOX_EXITED when the group leaves

// Thread 0 waits for a request other than `served` and copies its length into `request`; the request's
// number, or `served` when the wait idled out, the host said stop or the request never arrived whole.
void take_request(int t, uint served) {
    if (t == 0) {
        uint seq = served, length_word = 0u;
        for (int poll = 0; poll < IDLE_POLLS && seq == served; poll++) {
            seq = MAILBOX[MAILBOX_SEQ];
            length_word = MAILBOX[MAILBOX_LENGTH];  // in the same trip over the bus, most often already whole
        }
        uint tag = seq & 0xFFFFu;
        for (int poll = 0; poll < TAG_POLLS && length_word >> 16 != tag; poll++) length_word = MAILBOX[MAILBOX_LENGTH];
        uint length = length_word & 0xFFFFu;
        bool whole = seq != STOP_SEQ && length_word >> 16 == tag && length >= 1u && length <= uint(CONTEXT_WINDOW);
        request[REQUEST_SEQ] = whole ? seq : served;
        request[REQUEST_LENGTH] = whole ? length : 0u;
    }
    barrier();
    int length = int(request[REQUEST_LENGTH]);
    if (t < length) {
        uint tag = request[REQUEST_SEQ] & 0xFFFFu, word = MAILBOX[MAILBOX_IDS + t];
        for (int poll = 0; poll < TAG_POLLS && word >> 16 != tag; poll++) word = MAILBOX[MAILBOX_IDS + t];
        request[REQUEST_IDS + t] = word >> 16 == tag ? word & 0xFFFFu : uint(VOCAB);  // a torn id: refused
    }
    barrier();
}

void main() {
    int t = int(gl_LocalInvocationID.x);
#if OUT_CACHED
    cache_out_weights(t);
#endif
    for (uint served = served_seq;;) {
        take_request(t, served);
        uint seq = request[REQUEST_SEQ];
        if (seq == served) break;
        forward();
        served = seq;
        barrier();  // every thread is done with this request's shared state before the next is copied in
    }
    if (t == 0) MAILBOX[MAILBOX_EXITED] = epoch;
}
#else
MAIN_STEPS(forward)
#endif
