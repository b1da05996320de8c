"""The numpy replay of generation (docs/FORMATS.md §11): the counter-based generator and the token choice,
step by step, over the oracle's logits. Tests only; independent of engine/."""

import numpy as np

from tests.reference import oracle

MASK = 0xFFFFFFFF
BOUNDARY = 1e-5
LOGP_TOLERANCE = 1e-3
"""float32 log-softmax over logits that differ by summation order (deep members reach ~1e-4)."""
"""How close (relative to the mass) a draw or a top-p cut may come to a running sum and still be decided."""


def pcg(x: int) -> int:
    s = (x * 747796405 + 2891336453) & MASK
    w = (((s >> ((s >> 28) + 4)) ^ s) * 277803737) & MASK
    return (w >> 22) ^ w


def draw(seed: int, row: int, step: int) -> float:
    """u(seed, row, step) of §11: exactly k · 2^-24 for an integer k < 2^24."""
    return (pcg(pcg(pcg(seed) ^ row) ^ step) >> 8) * 2.0**-24


def choose(lg: np.ndarray, u: float, temperature: float, top_k: int | None, top_p: float) -> tuple[int, bool]:
    """The token §11 chooses from one row's logits, and whether float32 rounding could change it (a near
    tie for greedy; a draw or a top-p cut within BOUNDARY of a running sum; a near tie at the top-k rank)."""
    if temperature == 0:
        return int(lg.argmax()), bool(oracle.near_tie(lg[None])[0])
    vocab = len(lg)
    logits = lg.astype(np.float64)
    w = np.exp((logits - logits.max()) / temperature)
    order = np.lexsort((np.arange(vocab), -logits))  # logit descending, the lower id first
    k = min(top_k or vocab, vocab)
    uncertain = k < vocab and logits[order[k - 1]] - logits[order[k]] <= oracle.tie_tolerance(logits.max())
    ranked = w[order[:k]]
    mass_k = ranked.sum()
    before = np.cumsum(ranked) - ranked
    limit = top_p * mass_k
    keep = np.zeros(vocab, bool)
    keep[order[:k][before < limit]] = True
    if top_p < 1:
        uncertain |= bool((np.abs(before - limit) <= BOUNDARY * mass_k).any())
    kept_w = np.where(keep, w, 0.0)
    total = kept_w.sum()
    r = u * total
    running = np.cumsum(kept_w)
    passed = np.flatnonzero(keep & (running > r))
    chosen = int(passed[0]) if passed.size else int(np.flatnonzero(keep)[-1])
    uncertain |= bool((np.abs(running[keep] - r) <= BOUNDARY * total).any())
    return chosen, bool(uncertain)


def assert_replays(
    params: dict, prompts: list, tokens: np.ndarray, logprobs: np.ndarray | None, sampling: dict, what: str
) -> int:
    """Replay every row of a generation token by token, each step's context the prompt and the tokens the
    GPU generated before it: each token is the one §11 chooses (the draw's row: the prompt's index), its
    log p (unless None) the oracle's (within LOGP_TOLERANCE, relative past 1). A row stops being compared after a step
    rounding could decide. Returns the number of tokens compared."""
    seed, temperature = sampling.get("seed", 0), sampling.get("temperature", 0.0)
    top_k, top_p = sampling.get("top_k"), sampling.get("top_p", 1.0)
    live = list(range(len(prompts)))
    compared = 0
    for step in range(tokens.shape[1]):
        if not live:
            break
        contexts = [list(prompts[r]) + list(tokens[r, :step]) for r in live]
        lg = oracle.logits(params, contexts)
        expected_logp = oracle.log_probabilities(lg, tokens[live, step])
        still = []
        for i, r in enumerate(live):
            chosen, uncertain = choose(lg[i], draw(seed, r, step), temperature, top_k, top_p)
            if uncertain:
                continue
            assert tokens[r, step] == chosen, f"{what}: row {r}, step {step}: GPU {tokens[r, step]}, oracle {chosen}"
            if logprobs is not None:
                off = abs(float(logprobs[r, step]) - expected_logp[i])
                limit = LOGP_TOLERANCE * max(1.0, abs(expected_logp[i]))
                assert off <= limit, f"{what}: row {r}, step {step}: log p off by {off}"
            compared += 1
            still.append(r)
        live = still
    return compared
