"""The numpy reference of docs/FORMATS.md §14: version-2 (decoder-only transformer) models, from the bytes of
their weight stream to their logits. Tests and bench only.

Deliberately independent of engine/: it reads the meta dict and the raw weight bytes itself, written from the
spec alone, so the engine and this oracle cannot share a misreading. It is itself checked against Hugging Face
transformers and llama.cpp's gguf package (tests/test_transformer_reference.py)."""

import math

import numpy as np

BLOCK = 32
"""Weights of one q8/q4 block, consecutive along a row (the reduction dimension)."""
BLOCK_BYTES = {"q8": 34, "q4": 18}
LARGEST_VOCAB = 255 * 65536
"""(0, 0, 0) would be id 255 · 65536: one past the largest vocabulary, so padding is never a token (§14.5)."""


# --- the tensor table (§14.2) ---


def tensor_shapes(meta: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor the architecture has, name → shape, in table order."""
    v, c, e, f = meta["vocab_size"], meta["context_length"], meta["width"], meta["mlp"]["width"]
    hd, kd = meta["heads"] * meta["head_dim"], meta["kv_heads"] * meta["head_dim"]
    layernorm = meta["norm"]["kind"] == "layernorm"
    gated = meta["mlp"]["kind"] == "silu_gated"
    biases = meta["biases"]
    shapes: dict[str, tuple[int, ...]] = {"embed": (v, e)}
    if meta["positions"]["kind"] == "learned":
        shapes["pos"] = (c, e)

    def norm(name: str) -> None:
        shapes[f"{name}.weight"] = (e,)
        if layernorm:
            shapes[f"{name}.bias"] = (e,)

    for layer in range(meta["layers"]):
        b = f"block{layer}"
        norm(f"{b}.attn_norm")
        shapes |= {f"{b}.attn.q.weight": (hd, e), f"{b}.attn.k.weight": (kd, e), f"{b}.attn.v.weight": (kd, e)}
        if biases["qkv"]:
            shapes |= {f"{b}.attn.q.bias": (hd,), f"{b}.attn.k.bias": (kd,), f"{b}.attn.v.bias": (kd,)}
        shapes[f"{b}.attn.out.weight"] = (e, hd)
        if biases["attn_out"]:
            shapes[f"{b}.attn.out.bias"] = (e,)
        norm(f"{b}.mlp_norm")
        if gated:
            shapes[f"{b}.mlp.gate.weight"] = (f, e)
        shapes |= {f"{b}.mlp.up.weight": (f, e), f"{b}.mlp.down.weight": (e, f)}
        if biases["mlp"]:
            if gated:
                shapes[f"{b}.mlp.gate.bias"] = (f,)
            shapes |= {f"{b}.mlp.up.bias": (f,), f"{b}.mlp.down.bias": (e,)}
    norm("final_norm")
    if not meta["tied_head"]:
        shapes["head.weight"] = (v, e)
    if biases["head"]:
        shapes["head.bias"] = (v,)
    return shapes


def tensor_bytes(shape: tuple[int, ...], quant: str) -> int:
    n = math.prod(shape)
    if quant in BLOCK_BYTES:
        return n // BLOCK * BLOCK_BYTES[quant]
    return n * (2 if quant == "f16" else 1)


# --- quantization (§14.3) ---


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf, exactly: floor(|x| + 0.5) would round 0.49999997 up in float32."""
    magnitude = np.abs(x)
    whole = np.floor(magnitude)
    return np.sign(x) * (whole + (magnitude - whole >= np.float32(0.5)))


def _reciprocal(d: np.ndarray) -> np.ndarray:
    safe = np.where(d == 0, np.float32(1), d)
    return np.where(d == 0, np.float32(0), np.float32(1) / safe).astype(np.float32)


def quantize_q8(x: np.ndarray) -> np.ndarray:
    """(rows, n) float32 → (rows, n/32, 34) uint8 blocks: float16 d, then 32 int8."""
    blocks = np.asarray(x, np.float32).reshape(-1, BLOCK)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    q = round_half_away((blocks * _reciprocal(d)).astype(np.float32)).astype(np.int8)
    stored = d.astype("<f2").view(np.uint8)
    return np.concatenate([stored, q.view(np.uint8)], axis=1)


def quantize_q4(x: np.ndarray) -> np.ndarray:
    """(rows, n) float32 → 18-byte blocks: float16 d, then byte j = q_j | q_{j+16} << 4."""
    blocks = np.asarray(x, np.float32).reshape(-1, BLOCK)
    first_largest = np.abs(blocks).argmax(axis=1)[:, None]
    d = (np.take_along_axis(blocks, first_largest, axis=1) / np.float32(-8)).astype(np.float32)
    shifted = ((blocks * _reciprocal(d)).astype(np.float32) + np.float32(8.5)).astype(np.float32)
    q = np.minimum(np.trunc(shifted), 15).astype(np.uint8)
    nibbles = q[:, :16] | (q[:, 16:] << np.uint8(4))
    return np.concatenate([d.astype("<f2").view(np.uint8), nibbles], axis=1)


def quantize_u8(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """§10's affine rule: the 0.01/99.99 percentiles widened to hold 0."""
    x = np.asarray(x, np.float32)
    lo = min(float(np.percentile(x, 0.01)), 0.0)
    hi = max(float(np.percentile(x, 99.99)), 0.0)
    scale = (hi - lo) / 255 or 1.0
    zero_point = round(-lo / scale)
    q = np.clip(np.round(x / np.float32(scale)) + zero_point, 0, 255).astype(np.uint8)
    return q, scale, zero_point


def quantize(x: np.ndarray, quant: str) -> tuple[bytes, dict]:
    """A tensor's bytes and the entry keys its quantization adds (u8's scale and zero point)."""
    if quant == "q8":
        return quantize_q8(x).tobytes(), {}
    if quant == "q4":
        return quantize_q4(x).tobytes(), {}
    if quant == "f16":
        return np.asarray(x, np.float32).astype("<f2").tobytes(), {}
    q, scale, zero_point = quantize_u8(x)
    return q.tobytes(), {"scale": scale, "zero_point": zero_point}


def dequantize_tensor(stream: np.ndarray, entry: dict) -> np.ndarray:
    """One tensor's float32 values from the weight byte stream, as §14.3 lays them out."""
    shape, quant = tuple(entry["shape"]), entry["quant"]
    raw = stream[entry["offset"] : entry["offset"] + tensor_bytes(shape, quant)]
    if quant == "f16":
        return raw.view("<f2").astype(np.float32).reshape(shape)
    if quant == "u8":
        return ((raw.astype(np.float32) - np.float32(entry["zero_point"])) * np.float32(entry["scale"])).reshape(shape)
    blocks = raw.reshape(-1, BLOCK_BYTES[quant])
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    if quant == "q8":
        q = blocks[:, 2:].view(np.int8).astype(np.float32)
    else:
        nibbles = blocks[:, 2:]
        q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - np.float32(8)
    return (d * q).astype(np.float32).reshape(shape)


def dequantize(meta: dict, weight_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of a version-2 model, float32, from the weight stream (pixels or bytes, row-major)."""
    stream = np.ascontiguousarray(weight_bytes, dtype=np.uint8).reshape(-1)
    return {name: dequantize_tensor(stream, entry) for name, entry in meta["tensors"].items()}


def lay_out(architecture: dict, weights: dict[str, np.ndarray], quants: dict[str, str]) -> tuple[dict, np.ndarray]:
    """A version-2 meta and its weight image (H, W, 3) from float weights: tensors in table order, each at an
    offset that is a multiple of 4, the image near-square (§1). For tests: the engine has its own writer."""
    entries, chunks, offset = {}, [], 0
    for name, shape in tensor_shapes(architecture).items():
        offset = (offset + 3) // 4 * 4
        data, extra = quantize(np.asarray(weights[name], np.float32).reshape(shape), quants[name])
        entries[name] = {"offset": offset, "shape": list(shape), "quant": quants[name]} | extra
        chunks.append((offset, data))
        offset += len(data)
    pixels = -(-offset // 3)
    width = math.isqrt(pixels - 1) + 1 if pixels > 1 else 1
    height = -(-pixels // width)
    stream = np.zeros(width * height * 3, np.uint8)
    for start, data in chunks:
        stream[start : start + len(data)] = np.frombuffer(data, np.uint8)
    meta = {"format": "pixellm", "version": 2, **architecture}
    meta |= {"image": {"width": width, "height": height}, "tensors": entries}
    return meta, stream.reshape(height, width, 3)


# --- the forward pass (§14.4) ---


def rope_frequencies(positions: dict, head_dim: int) -> np.ndarray:
    """θ_k, k < D/2, scaled as the meta says, in float64."""
    theta = float(positions["base"]) ** (-2.0 * np.arange(head_dim // 2) / head_dim)
    scaling = positions.get("scaling")
    if scaling is None:
        return theta
    factor = scaling["factor"]
    if scaling["kind"] == "linear":
        return theta / factor
    lo, hi, original = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["original_context"]
    wavelength = 2 * math.pi / theta
    smooth = (original / wavelength - lo) / (hi - lo)
    medium = (1 - smooth) * theta / factor + smooth * theta
    return np.where(wavelength < original / hi, theta, np.where(wavelength > original / lo, theta / factor, medium))


def rope_tables(positions: dict, head_dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of a_k = p · θ_k for p < n, each (n, D/2): float64 maths rounded once to float32."""
    angles = np.arange(n, dtype=np.float64)[:, None] * rope_frequencies(positions, head_dim)[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope(v: np.ndarray, cos: np.ndarray, sin: np.ndarray, rotation: str) -> np.ndarray:
    """v (n, heads, D) rotated at positions 0..n-1; cos, sin (n, D/2)."""
    half = v.shape[-1] // 2
    if rotation == "halves":
        u, w = v[..., :half], v[..., half:]
    else:
        u, w = v[..., 0::2], v[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    ru, rw = u * c - w * s, w * c + u * s
    if rotation == "halves":
        return np.concatenate([ru, rw], axis=-1).astype(np.float32)
    return np.stack([ru, rw], axis=-1).reshape(v.shape).astype(np.float32)


def norm(x: np.ndarray, params: dict, name: str, meta: dict) -> np.ndarray:
    eps = np.float32(meta["norm"]["eps"])
    weight = params[f"{name}.weight"]
    if meta["norm"]["kind"] == "rmsnorm":
        return (x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight).astype(np.float32)
    centred = x - x.mean(axis=-1, keepdims=True)
    scaled = centred / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    return (scaled * weight + params[f"{name}.bias"]).astype(np.float32)


def erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)).astype(np.float32)


def activation(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "gelu_tanh":
        inner = np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
        return (np.float32(0.5) * x * (1 + np.tanh(inner))).astype(np.float32)
    if kind == "gelu":
        return (np.float32(0.5) * x * (1 + erf(x / np.float32(math.sqrt(2))))).astype(np.float32)
    return (x / (1 + np.exp(-x))).astype(np.float32)


def linear(params: dict, name: str, x: np.ndarray) -> np.ndarray:
    """x (n, in) · W^T (+ bias): W stored [out, in] (§14.2)."""
    y = x @ params[f"{name}.weight"].T
    if f"{name}.bias" in params:
        y = y + params[f"{name}.bias"]
    return y.astype(np.float32)


def attention(
    meta: dict, q: np.ndarray, k: np.ndarray, v: np.ndarray, cache_dtype, weights_out: list | None = None
) -> np.ndarray:
    """Causal attention of q (n, H, D) over the cached k, v (n, K, D): (n, H·D). `weights_out` gets each
    head's weights p (n, n), zeros above the diagonal, when given."""
    n, heads, d = q.shape
    group = heads // meta["kv_heads"]
    cached_k = k.astype(cache_dtype).astype(np.float32)
    cached_v = v.astype(cache_dtype).astype(np.float32)
    scale = np.float32(meta["attention_scale"])
    future = np.triu(np.ones((n, n), dtype=bool), k=1)
    out = np.empty((n, heads, d), np.float32)
    for h in range(heads):
        g = h // group
        scores = (q[:, h, :] @ cached_k[:, g, :].T) * scale
        scores[future] = -np.inf
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        if weights_out is not None:
            weights_out.append(weights.astype(np.float32))
        out[:, h, :] = weights.astype(np.float32) @ cached_v[:, g, :]
    return out.reshape(n, heads * d)


def forward(meta: dict, params: dict, tokens, cache_dtype=np.float16, record: dict | None = None) -> np.ndarray:
    """(n, V) float32 logits of every position of one sequence (1 ≤ n ≤ C). `cache_dtype` is §14.4's float16;
    float32 only to compare with an implementation that keeps no such cache (transformers). `record`, when
    given, gets "residual": x after the embeddings and after each block, and "attention": each layer's list
    of per-head weights (what pxgl viz draws)."""
    residual: list[np.ndarray] = []
    attention_weights: list[list[np.ndarray]] = []
    if record is not None:
        record |= {"residual": residual, "attention": attention_weights}
    ids = np.asarray(tokens, dtype=np.int64)
    n = len(ids)
    assert 1 <= n <= meta["context_length"], f"{n} tokens for a context of {meta['context_length']}"
    heads, kv_heads, d = meta["heads"], meta["kv_heads"], meta["head_dim"]
    positions = meta["positions"]
    x = params["embed"][ids]
    if positions["kind"] == "learned":
        x = x + params["pos"][:n]
    else:
        cos, sin = rope_tables(positions, d, n)
    x = x.astype(np.float32)
    residual.append(x)
    for layer in range(meta["layers"]):
        b = f"block{layer}"
        a = norm(x, params, f"{b}.attn_norm", meta)
        q = linear(params, f"{b}.attn.q", a).reshape(n, heads, d)
        k = linear(params, f"{b}.attn.k", a).reshape(n, kv_heads, d)
        v = linear(params, f"{b}.attn.v", a).reshape(n, kv_heads, d)
        if positions["kind"] == "rope":
            q, k = rope(q, cos, sin, positions["rotation"]), rope(k, cos, sin, positions["rotation"])
        attention_weights.append([])
        x = x + linear(params, f"{b}.attn.out", attention(meta, q, k, v, cache_dtype, attention_weights[-1]))
        m = norm(x, params, f"{b}.mlp_norm", meta)
        kind = meta["mlp"]["kind"]
        if kind == "silu_gated":
            inner = activation(kind, linear(params, f"{b}.mlp.gate", m)) * linear(params, f"{b}.mlp.up", m)
        else:
            inner = activation(kind, linear(params, f"{b}.mlp.up", m))
        x = (x + linear(params, f"{b}.mlp.down", inner.astype(np.float32))).astype(np.float32)
        residual.append(x)
    h = norm(x, params, "final_norm", meta)
    head = params["embed"] if meta["tied_head"] else params["head.weight"]
    logits = h @ head.T
    if "head.bias" in params:
        logits = logits + params["head.bias"]
    return logits.astype(np.float32)


# --- pixels (§14.5) and agreement (§14.4) ---


def token_pixels(ids) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, 255 - ids // 65536], axis=-1).astype(np.uint8)


def token_ids(pixels) -> np.ndarray:
    p = np.asarray(pixels, dtype=np.int64)
    return p[..., 0] + 256 * p[..., 1] + 65536 * (255 - p[..., 2])


def prediction_pixels(logits: np.ndarray) -> np.ndarray:
    """(B, V) logits of each prompt's last position → (B, 1, 3) pixels, or (B, 2, 3) past 65,536 ids."""
    ids = logits.argmax(axis=1)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    confidence = np.floor(255 / np.exp(shifted).sum(axis=1) + 0.5).astype(np.uint8)  # §3's c: halves up
    if logits.shape[1] <= 65536:
        return np.stack([ids % 256, ids // 256, confidence], axis=-1).astype(np.uint8)[:, None, :]
    zero = np.zeros_like(confidence)
    return np.stack([token_pixels(ids), np.stack([confidence, zero, zero], axis=-1)], axis=1)


def read_predictions(pixels) -> tuple[np.ndarray, np.ndarray]:
    """(ids, confidence bytes) of (B, 1, 3) or (B, 2, 3) prediction pixels."""
    p = np.asarray(pixels, dtype=np.int64)
    if p.shape[1] == 2:
        return token_ids(p[:, 0]), p[:, 1, 0]
    return p[:, 0, 0] + 256 * p[:, 0, 1], p[:, 0, 2]


AGREEMENT = 1e-3
"""§14.4's τ = AGREEMENT · (1 + |top logit|): top-two logits closer than that are a near-tie."""


def near_tie(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= AGREEMENT * (1 + np.abs(top2[:, 1]))


# --- evaluation past the context (§14.6) ---


def scoring_windows(length: int, context: int) -> list[tuple[int, int, int]]:
    """(begin, end, first target) of each window over a document of `length` tokens: window tokens
    u[begin:end] at positions 0.., targets first..end-1 scored from it."""
    stride, windows, previous_end = context // 2, [], 1
    for begin in range(0, length, stride):
        end = min(begin + context, length)
        windows.append((begin, end, previous_end))
        previous_end = end
        if end == length:
            break
    return windows


# --- choosing a token (§11) ---


def penalize(logits: np.ndarray, seen, penalty: float) -> np.ndarray:
    """§11's repetition penalty: every distinct id in `seen` gets logit / r (logit > 0) or logit · r."""
    out = np.array(logits, dtype=np.float32)
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    x = out[ids]
    out[ids] = np.where(x > 0, x / np.float32(penalty), x * np.float32(penalty)).astype(np.float32)
    return out


def pcg(x: int) -> int:
    s = (x * 747796405 + 2891336453) & 0xFFFFFFFF
    w = (((s >> ((s >> 28) + 4)) ^ s) * 277803737) & 0xFFFFFFFF
    return (w >> 22) ^ w


def draw(seed: int, row: int, step: int) -> float:
    return (pcg(pcg(pcg(seed) ^ row) ^ step) >> 8) / float(1 << 24)


def choose(logits: np.ndarray, temperature: float, top_k: int, top_p: float, seed: int, row: int, step: int,
           slack: float = 1e-5, close: float | None = None) -> tuple[int, bool]:  # fmt: skip
    """§11's choice from one row of logits (already penalized): (id, excused), excused when a cut or the draw
    lies within `slack` (relative to the masses) of a boundary that decides it — top-p's bound and a ranked
    prefix mass, the draw and the chosen token's running sums — or two logits that decide it lie within `close`
    (default slack · (1 + |top|)): greedy's top two, top-k's last kept and first dropped."""
    x = np.asarray(logits, dtype=np.float64)
    rank = np.lexsort((np.arange(len(x)), -x))  # logit descending, lower id first
    if close is None:  # logits this close (unequal: equal ones are ranked by id) excuse a decision
        close = slack * (1 + abs(x[rank[0]]))

    def near(a: int, b: int) -> bool:
        return 0 < x[rank[a]] - x[rank[b]] <= close

    if temperature <= 0:
        return int(rank[0]), len(x) > 1 and near(0, 1)
    w = np.exp((x - x.max()) / temperature)
    k = len(x) if top_k <= 0 else min(top_k, len(x))
    kept = rank[:k]
    excused = k < len(x) and near(k - 1, k)
    if top_p < 1:
        mass_k = w[kept].sum()
        before = np.concatenate([[0.0], np.cumsum(w[kept])[:-1]])
        bound = top_p * mass_k
        excused |= bool(np.any(np.abs(before - bound) <= slack * mass_k))
        kept = kept[before < bound]
    kept = np.sort(kept)
    running = np.cumsum(w[kept])
    r = draw(seed, row, step) * running[-1]
    passed = np.flatnonzero(running > r)
    at = int(passed[0]) if len(passed) else len(kept) - 1
    boundaries = running[max(0, at - 1) : at + 1]
    excused |= bool(np.any(np.abs(boundaries - r) <= slack * running[-1]))
    return int(kept[at]), bool(excused)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def alternatives(logits: np.ndarray, count: int) -> np.ndarray:
    """The `count` likeliest ids of one row: logit descending, the lower id first."""
    return np.lexsort((np.arange(len(logits)), -np.asarray(logits, dtype=np.float64)))[:count]
