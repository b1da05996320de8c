"""The numpy reference forward pass of docs/FORMATS.md §3, over the quantized weights, for every member of
the pixellm family. Tests and bench only.

Deliberately independent of engine/: it reads the meta dict and the raw weight pixels itself."""

import math

import numpy as np

V0_NAMES = {
    "b_hidden": "layer0.bias",
    "b_out": "out.bias",
    "embed": "embed",
    "hidden": "layer0.weight",
    "out": "out.weight",
}


def architecture(meta: dict) -> dict:
    """The meta's architecture as one shape for both versions: mode, window, concat, head_dim, hidden,
    residual (a version-0 meta is a mean context with one hidden layer)."""
    if meta["version"] == 0:
        return {"mode": "mean", "window": meta["context_window"], "concat": 0, "head_dim": 0}, {
            "hidden": [meta["hidden_dim"]],
            "residual": False,
        }
    context = {"concat": 0, "head_dim": 0} | meta["context"]
    return context, {"hidden": list(meta["hidden"]), "residual": meta["residual"]}


def dequantize(meta: dict, weight_pixels: np.ndarray) -> dict[str, np.ndarray]:
    """w = (q - zero_point) * scale for each tensor, as float32, shaped as the meta says, under its
    version-1 name."""
    stream = np.asarray(weight_pixels, dtype=np.uint8).reshape(-1)
    params = {}
    for name, t in meta["tensors"].items():
        size = int(np.prod(t["shape"]))
        q = stream[t["offset"] : t["offset"] + size].astype(np.float32)
        value = ((q - np.float32(t["zero_point"])) * np.float32(t["scale"])).reshape(t["shape"])
        params[V0_NAMES.get(name, name) if meta["version"] == 0 else name] = value
    params["meta"] = meta
    return params


def context_vector(params: dict, row, context: dict) -> np.ndarray:
    """x for one prompt (any length, 0 included) by the mode's rule."""
    embed = params["embed"]
    e = embed.shape[1]
    window = context["window"]
    ids = np.asarray(row, dtype=np.int64)[-window:] if len(row) else np.zeros(0, np.int64)
    m = len(ids)
    if context["mode"] == "mean":
        return (embed[ids].sum(axis=0) / np.float32(m)).astype(np.float32) if m else np.zeros(e, np.float32)
    if context["mode"] == "concat":
        x = np.zeros((window, e), np.float32)
        x[window - m :] = embed[ids]
        return x.reshape(-1)
    concat = context["concat"]
    last = np.zeros((concat, e), np.float32)
    if concat:
        taken = ids[-concat:]
        last[concat - len(taken) :] = embed[taken]
    head = np.zeros(context["head_dim"], np.float32)
    if m:
        u = embed[ids[::-1]] + params["attn.pos"][:m]  # u_j, j = 0 the last token
        q = u[0] @ params["attn.query"]
        k = u @ params["attn.key"]
        v = u @ params["attn.value"]
        s = (k @ q) / np.float32(math.sqrt(context["head_dim"]))
        a = np.exp(s - s.max())
        a = (a / a.sum()).astype(np.float32)
        head = (a @ v).astype(np.float32)
    return np.concatenate([last.reshape(-1), head]).astype(np.float32)


def logits(params: dict, rows: list, context_window: int | None = None) -> np.ndarray:
    """(B, vocab) float32 logits of each prompt. `params` from dequantize (its meta decides the
    architecture); `context_window`, if given, overrides the meta's window (a v0-shaped model only)."""
    context, layers = architecture(params["meta"])
    if context_window is not None:
        context = context | {"window": context_window}
    h = np.stack([context_vector(params, r, context) for r in rows])
    for layer in range(len(layers["hidden"])):
        weight, bias = params[f"layer{layer}.weight"], params[f"layer{layer}.bias"]
        out = np.maximum(h @ weight + bias, np.float32(0))
        h = (h + out if layers["residual"] and layer > 0 and weight.shape[0] == weight.shape[1] else out).astype(
            np.float32
        )
    return (h @ params["out.weight"] + params["out.bias"]).astype(np.float32)


def predict(lg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, confidence bytes): argmax (lowest index on ties) and floor(255 · softmax probability + 0.5)."""
    ids = lg.argmax(axis=1)
    shifted = lg.astype(np.float64) - lg.max(axis=1, keepdims=True)
    p = 1.0 / np.exp(shifted).sum(axis=1)
    return ids, np.floor(255 * p + 0.5).astype(np.uint8)


def log_probabilities(lg: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) of each row, float64."""
    lg = lg.astype(np.float64)
    top = lg.max(axis=1)
    log_z = top + np.log(np.exp(lg - top[:, None]).sum(axis=1))
    return lg[np.arange(len(lg)), targets] - log_z


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
