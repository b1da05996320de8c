// The attention head's rows (docs/FORMATS.md §3): u_j = embed[t] + pos[j], t the token j places before the
// last. The head runs as passes, each invocation looping over one vector (never over E x D or W x E), by
// q . k_j = u_j . (key q) and sum_j a_j v_j = (sum_j a_j u_j) value (passes.py):
//   attend_query    q = u_0 query                       (D per prompt)
//   attend_keyed    r = key q                            (E per prompt)
//   attend_scores   s_j = u_j . r / sqrt(D)              (W per prompt)
//   attend_softmax  a = softmax_j(s)                     (W per prompt, one work group)
//   attend_mix      m = sum_j a_j u_j                    (E per prompt)
//   context         the head's output m value            (D per prompt)
float attention_u(int token, int j, int e) {
    return WEIGHT(EMBED, token * EMBED_DIM + e) + WEIGHT(ATTN_POS, j * EMBED_DIM + e);
}
