// The online softmax of the fused kernels (fused_common.glsl, fused_logits.comp): a prompt's logits folded one
// at a time into (top, sum, index), states of disjoint columns merged, and the prediction word written from one.

#define NO_LOGIT uintBitsToFloat(0xFF800000u)  // -infinity

// Online softmax over logits seen one at a time: the running top logit, its (lowest) index and
// sum = sum of exp(logit - top); vec4(top, sum, index bits, the target's logit) when stored.
// Empty: (-inf, 0, VOCAB, -inf).
void consider(inout float top, inout float sum, inout int index, float logit, int k) {
    bool better = logit > top;  // strict: columns arrive in increasing k, so the lowest index keeps a tie
    float e = exp(min(logit, top) - max(logit, top));
    sum = better ? sum * e + 1.0 : sum + e;
    index = better ? k : index;
    top = max(top, logit);
}

void merge(inout float top, inout float sum, inout int index, inout float target, vec4 other) {
    target = max(target, other.w);  // one state at most saw the target's column
    int other_index = floatBitsToInt(other.z);
    if (other.y == 0.0) return;
    if (sum == 0.0) {
        top = other.x; sum = other.y; index = other_index;
        return;
    }
    float m = max(top, other.x);
    sum = sum * exp(top - m) + other.y * exp(other.x - m);
    if (other.x > top || (other.x == top && other_index < index)) index = other_index;
    top = m;
}

vec4 packed_state(float top, float sum, int index, float target) {
    return vec4(top, sum, intBitsToFloat(index), target);
}

uint prediction_word(bool valid, int index, float sum) {
    uint confidence = uint(floor(255.0 / sum + 0.5));
    return valid ? uint(index) | (confidence << 16) | (uint(WRITTEN_ALPHA) << 24) : uint(REFUSED_WORD);
}
