"""The numpy reference forward pass of docs/FORMATS.md, over the quantized weights. Tests only.

Deliberately independent of engine/: it reads the meta dict and the raw weight pixels itself."""

import numpy as np


def dequantize(meta: dict, weight_pixels: np.ndarray) -> dict[str, np.ndarray]:
    """w = (q - zero_point) * scale for each tensor, as float32, shaped as the meta says."""
    stream = np.asarray(weight_pixels, dtype=np.uint8).reshape(-1)
    params = {}
    for name, t in meta["tensors"].items():
        size = int(np.prod(t["shape"]))
        q = stream[t["offset"] : t["offset"] + size].astype(np.float32)
        params[name] = ((q - np.float32(t["zero_point"])) * np.float32(t["scale"])).reshape(t["shape"])
    return params


def logits(params: dict[str, np.ndarray], rows: list, context_window: int) -> np.ndarray:
    """(B, vocab) float32 logits: mean of the last `context_window` embeddings → ReLU layer → output layer."""
    pooled = np.stack([params["embed"][np.asarray(r)[-context_window:]].mean(axis=0) for r in rows])
    hidden = np.maximum(pooled @ params["hidden"] + params["b_hidden"], np.float32(0))
    return (hidden @ params["out"] + params["b_out"]).astype(np.float32)


def predict(lg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, confidence bytes): argmax (lowest index on ties) and round(255 · softmax probability)."""
    ids = lg.argmax(axis=1)
    shifted = lg.astype(np.float64) - lg.max(axis=1, keepdims=True)
    p = 1.0 / np.exp(shifted).sum(axis=1)
    return ids, np.round(255 * p).astype(np.uint8)


RTOL = ATOL = 1e-5
"""How far apart two logits may be and still count as tied: float32 summation-order rounding."""


def tie_tolerance(top: np.ndarray) -> np.ndarray:
    return ATOL + RTOL * np.abs(top)


def near_tie(lg: np.ndarray) -> np.ndarray:
    """Prompts whose top-2 logits lie within float32 rounding: any executor may pick either."""
    top2 = np.sort(lg, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= tie_tolerance(top2[:, 1])


def assert_agrees(pred: np.ndarray, lg: np.ndarray, what: str) -> None:
    """The rule every executor meets (docs/FORMATS.md §3): prediction pixels (B, 1, 3) carry the oracle's
    ids, except that a prompt may name another token whose logit is within float32 rounding of the top;
    where the id is the oracle's, the confidence byte is within ±1."""
    column = np.asarray(pred).reshape(-1, 3).astype(np.int64)
    got_ids, got_conf = column[:, 0] + 256 * column[:, 1], column[:, 2]
    ids, conf = predict(lg)
    vocab, top = lg.shape[1], lg.max(axis=1)
    in_vocab = got_ids < vocab
    chosen = lg[np.arange(len(lg)), np.minimum(got_ids, vocab - 1)]
    tied = in_vocab & (chosen >= top - tie_tolerance(top))
    differ = (got_ids != ids) & ~tied
    assert not differ.any(), f"{what}: ids differ at prompts {np.flatnonzero(differ)[:10]}"
    same = got_ids == ids
    off = np.abs(got_conf[same] - conf[same].astype(np.int64)).max(initial=0)
    assert off <= 1, f"{what}: confidence off by {off}"
