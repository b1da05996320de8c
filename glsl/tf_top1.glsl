// The argmax and softmax sum of logits seen in pieces (tf_argmax.comp, tf_argmax_merge.comp): a state is
// (top, sum = Σ exp(logit − top), index), the lowest index kept on ties; empty: (-inf, 0, -1).
void consider(inout float top, inout float sum, inout int index, float logit, int k) {
    bool better = logit > top;  // k increases within one invocation, so the first of equal logits stays
    float e = exp(min(logit, top) - max(logit, top));
    sum = better ? sum * e + 1.0 : sum + e;
    index = better ? k : index;
    top = max(top, logit);
}

void merge(inout float top, inout float sum, inout int index, float other_top, float other_sum, int other_index) {
    if (other_sum == 0.0) return;
    if (sum == 0.0) {
        top = other_top; sum = other_sum; index = other_index;
        return;
    }
    float most = max(top, other_top);
    sum = sum * exp(top - most) + other_sum * exp(other_top - most);
    if (other_top > top || (other_top == top && other_index < index)) index = other_index;
    top = most;
}

// The work group's states (in the shared top_value, top_sum, top_index) merged into element 0. A macro, not a
// function: llvmpipe mis-ran barriers inside a called function (tf_norm.comp's variance came out wrong).
#define MERGE_GROUP(lane) \
    barrier(); \
    for (int s = LOCAL_SIZE / 2; s > 0; s >>= 1) { \
        if (lane < s) { \
            float merged_top = top_value[lane], merged_sum = top_sum[lane]; \
            int merged_index = top_index[lane]; \
            merge(merged_top, merged_sum, merged_index, top_value[lane + s], top_sum[lane + s], top_index[lane + s]); \
            top_value[lane] = merged_top; top_sum[lane] = merged_sum; top_index[lane] = merged_index; \
        } \
        barrier(); \
    }
