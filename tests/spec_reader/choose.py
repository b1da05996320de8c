"""§11: choosing a token (greedy, sampled with the pcg draw, top-k, top-p, repetition penalty), log p."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

f32 = np.float32
MASK = 0xFFFFFFFF


def pcg(x: int) -> int:
    s = (x * 747796405 + 2891336453) & MASK
    w = (((s >> ((s >> 28) + 4)) ^ s) * 277803737) & MASK
    return ((w >> 22) ^ w) & MASK


def draw(seed: int, row: int, step: int) -> float:
    """u(seed, row, step) in [0, 1), exactly."""
    return (pcg(pcg(pcg(seed) ^ row) ^ step) >> 8) * 2.0**-24


@dataclass(frozen=True)
class Choice:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Chosen:
    id: int
    near_cut: bool  # r or P·S_K within 1e-5 of a running sum / ranked mass: a replay stops comparing here


def penalize(logits: np.ndarray, seen: list[int], penalty: float) -> np.ndarray:
    out = logits.astype(f32).copy()
    if penalty == 1:
        return out
    r = f32(penalty)
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    values = out[ids]
    out[ids] = np.where(values > 0, values / r, values * r).astype(f32)
    return out


def rank(logits: np.ndarray) -> np.ndarray:
    """Ids by logit descending, the lower id first on equal logits."""
    return np.lexsort((np.arange(len(logits)), -logits.astype(np.float64)))


def choose(logits: np.ndarray, choice: Choice, seen: list[int], row: int, step: int) -> Chosen:
    """`seen`: the sequence's tokens up to and including the one whose logits these are."""
    penalized = penalize(logits, seen, choice.repetition_penalty)
    if choice.temperature == 0:
        return Chosen(int(np.argmax(penalized)), False)
    m = penalized.max()
    weights = np.exp((penalized - m) / f32(choice.temperature)).astype(f32)
    order = rank(penalized)
    top_k = len(penalized) if choice.top_k == 0 else min(choice.top_k, len(penalized))
    kept = order[:top_k]
    kept_weights = weights[kept].astype(np.float64)
    near = False
    if choice.top_p < 1:
        s_k = kept_weights.sum()
        bound = choice.top_p * s_k
        before = np.concatenate([[0.0], np.cumsum(kept_weights)[:-1]])
        near = bool(np.any(np.abs(before - bound) <= 1e-5 * s_k))
        kept = kept[before < bound]
    kept = np.sort(kept)
    running = np.cumsum(weights[kept].astype(np.float64))
    total = running[-1]
    r = draw(choice.seed, row, step) * total
    near = near or bool(np.any(np.abs(running - r) <= 1e-5 * total))
    above = np.nonzero(running > r)[0]
    return Chosen(int(kept[above[0]] if len(above) else kept[-1]), near)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    wide = logits.astype(np.float64)
    m = wide.max()
    return wide - m - np.log(np.exp(wide - m).sum())


def alternatives(logits: np.ndarray, count: int) -> list[tuple[int, float]]:
    """The `count` likeliest tokens by the model's own logits: (id, log p), likeliest first."""
    logp = log_softmax(logits)
    return [(int(i), float(logp[i])) for i in rank(logits)[:count]]
