// Choosing a token on the GPU (docs/FORMATS.md §11) for version 2: each chosen row r owns ROW_WORDS words of
// `choosing`: its choice record (temperature, top-k, top-p, seed, draw row, repetition penalty, step, target),
// then its cut's state (tau, floor, above, bound, active). Rank keys, the draw and the weights as §11 says.
#define C_TEMPERATURE 0
#define C_TOP_K 1
#define C_TOP_P 2
#define C_SEED 3
#define C_DRAW_ROW 4
#define C_PENALTY 5
#define C_STEP 6
#define C_TARGET 7
#define S_TAU 8
#define S_FLOOR 10
#define S_ABOVE 12
#define S_BOUND 13
#define S_ACTIVE 14

// A token's rank as a key, larger first: its logit's bits ordered as unsigned integers (-0 as +0), then
// vocab − 1 − id, so on equal logits the lower id ranks first.
uvec2 rank_key(float logit, int i, int vocab) {
    uint bits = logit == 0.0 ? 0u : floatBitsToUint(logit);
    return uvec2((bits >> 31u) != 0u ? ~bits : bits | 0x80000000u, uint(vocab - 1 - i));
}

bool at_least(uvec2 key, uvec2 bound) { return key.x > bound.x || (key.x == bound.x && key.y >= bound.y); }

float weight(float logit, float top, float temperature) { return exp((logit - top) / temperature); }

// Pass p of a cut decides one 4-bit digit of the key, most significant first: the 8 digits of the logit's
// word, then id_digits of the id's.
int digit_shift(int pass_index, int id_digits) {
    return pass_index < 8 ? 28 - 4 * pass_index : 4 * (id_digits - 1 - (pass_index - 8));
}

uint digit_of(uvec2 key, int pass_index, int id_digits) {
    uint word = pass_index < 8 ? key.x : key.y;
    return (word >> uint(digit_shift(pass_index, id_digits))) & 15u;
}

// Whether the key's digits before pass p's equal tau's.
bool same_prefix(uvec2 key, uvec2 tau, int pass_index, int id_digits) {
    if (pass_index == 0) return true;
    int above = digit_shift(pass_index, id_digits) + 4;
    if (pass_index < 8) return (key.x >> uint(above)) == (tau.x >> uint(above));
    return key.x == tau.x && (key.y >> uint(above)) == (tau.y >> uint(above));
}

bool beats(float value, int index, float best_value, int best_index) {
    return value > best_value || (value == best_value && index < best_index);
}
