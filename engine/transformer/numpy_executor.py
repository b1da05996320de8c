"""The numpy executor of version 2: it walks the list of operations (operations.py) with one numpy kernel per
kind, over a float16 KV cache as §14.4 specifies — the engine's own mirror of the independent oracle, and the
reference each GPU kernel of an operation is checked against."""

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import PxglError
from .meta import Rope, TransformerSpec
from .operations import Operation, operations
from .quant import dequantize

Activations = dict[str, np.ndarray]
"""Activation name → (positions, width) float32; `tokens` and `positions` are int64."""


class KVCache:
    """Every layer's k (after RoPE) and v of positions 0..length-1, float16 (§14.4)."""

    def __init__(self, layers: int, context: int, width: int) -> None:
        self.keys = np.zeros((layers, context, width), np.float16)
        self.values = np.zeros((layers, context, width), np.float16)
        self.length = 0


def rope_frequencies(rope: Rope, head_dim: int) -> np.ndarray:
    """θ_k for k < D/2, scaled (§14.4), in float64."""
    theta = rope.base ** (-2.0 * np.arange(head_dim // 2) / head_dim)
    scaling = rope.scaling
    if scaling is None:
        return theta
    if scaling.kind == "linear":
        return theta / scaling.factor
    wavelength = 2 * math.pi / theta
    lo, hi, original = scaling.low_freq_factor, scaling.high_freq_factor, scaling.original_context
    smooth = (original / wavelength - lo) / (hi - lo)
    between = (1 - smooth) * theta / scaling.factor + smooth * theta
    return np.where(
        wavelength < original / hi, theta, np.where(wavelength > original / lo, theta / scaling.factor, between)
    )


class NumpyTransformer:
    """One version-2 model's float32 weights and its operation list; run() computes a sequence's logits."""

    def __init__(self, spec: TransformerSpec, weight_bytes: bytes | np.ndarray) -> None:
        stream = np.frombuffer(weight_bytes, np.uint8) if isinstance(weight_bytes, bytes) else weight_bytes.reshape(-1)
        self.spec = spec
        self.architecture = spec.architecture
        self.weights = {
            name: dequantize(stream[t.offset : t.offset + t.nbytes], t.shape, t.quant, t.scale, t.zero_point)
            for name, t in spec.tensors.items()
        }
        self.operations = operations(spec.architecture)
        rope = spec.architecture.rope
        self.frequencies = None if rope is None else rope_frequencies(rope, spec.architecture.head_dim)

    def new_cache(self) -> KVCache:
        a = self.architecture
        return KVCache(a.layers, a.context_length, a.kv_heads * a.head_dim)

    def run(self, tokens: Sequence[int], cache: KVCache | None = None) -> np.ndarray:
        """(n, V) float32 logits of the tokens at positions cache.length.. (0 without a cache); the cache
        grows by n. Past the context length is one error, never a sliding window (§14.4)."""
        cache = cache or self.new_cache()
        ids = np.asarray(tokens, dtype=np.int64)
        start, context = cache.length, self.architecture.context_length
        if not 1 <= len(ids) <= context - start:
            raise PxglError(f"{start} cached + {len(ids)} new tokens: the context holds {context} positions")
        if ids.min() < 0 or ids.max() >= self.architecture.vocab_size:
            raise PxglError(f"token ids must lie in 0..{self.architecture.vocab_size - 1}")
        state: Activations = {"tokens": ids, "positions": np.arange(start, start + len(ids))}
        for op in self.operations:
            state[op.output] = KERNELS[op.kind](self, op, state, cache)
        cache.length += len(ids)
        return state["logits"]

    def tensor(self, op: Operation, index: int) -> np.ndarray | None:
        return self.weights[op.tensors[index]] if index < len(op.tensors) else None


def _embed(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    x = model.weights["embed"][state["tokens"]]
    if "pos" in op.tensors:
        x = x + model.weights["pos"][state["positions"]]
    return x.astype(np.float32)


def _norm(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    x, eps = state[op.inputs[0]], np.float32(model.architecture.norm_eps)
    if model.architecture.norm_kind == "rmsnorm":
        return (x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * model.tensor(op, 0)).astype(np.float32)
    centred = x - x.mean(axis=1, keepdims=True)
    normed = centred / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + eps)
    return (normed * model.tensor(op, 0) + model.tensor(op, 1)).astype(np.float32)


def _project(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    y = state[op.inputs[0]] @ model.tensor(op, 0).T
    bias = model.tensor(op, 1)
    return (y if bias is None else y + bias).astype(np.float32)


def _rope(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    v = state[op.inputs[0]]
    d = model.architecture.head_dim
    heads = v.reshape(len(v), -1, d)
    angles = state["positions"].astype(np.float64)[:, None] * model.frequencies[None, :]
    cos, sin = np.cos(angles).astype(np.float32)[:, None, :], np.sin(angles).astype(np.float32)[:, None, :]
    pairs = model.architecture.rope.rotation == "pairs"
    u, w = (heads[..., 0::2], heads[..., 1::2]) if pairs else (heads[..., : d // 2], heads[..., d // 2 :])
    ru, rw = u * cos - w * sin, w * cos + u * sin
    rotated = np.stack([ru, rw], axis=-1) if pairs else np.concatenate([ru, rw], axis=-1)
    return rotated.reshape(v.shape).astype(np.float32)


def _attend(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    a = model.architecture
    positions = state["positions"]
    start, end = positions[0], positions[-1] + 1
    cache.keys[op.layer, start:end] = state["k"]
    cache.values[op.layer, start:end] = state["v"]
    keys = cache.keys[op.layer, :end].astype(np.float32).reshape(end, a.kv_heads, a.head_dim)
    values = cache.values[op.layer, :end].astype(np.float32).reshape(end, a.kv_heads, a.head_dim)
    q = state["q"].reshape(len(positions), a.heads, a.head_dim)
    future = np.arange(end)[None, :] > positions[:, None]
    out = np.empty_like(q)
    group = a.heads // a.kv_heads
    for h in range(a.heads):
        scores = (q[:, h] @ keys[:, h // group].T) * np.float32(a.attention_scale)
        scores[future] = -np.inf
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        out[:, h] = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32) @ values[:, h // group]
    return out.reshape(len(positions), -1)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)).astype(np.float32)


def _activate(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    x = state[op.inputs[0]]
    if model.architecture.mlp_kind == "gelu":
        return (np.float32(0.5) * x * (1 + _erf(x / np.float32(math.sqrt(2))))).astype(np.float32)
    inner = np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
    return (np.float32(0.5) * x * (1 + np.tanh(inner))).astype(np.float32)


def _gate(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    gate, up = state[op.inputs[0]], state[op.inputs[1]]
    return (gate / (1 + np.exp(-gate)) * up).astype(np.float32)


def _add(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    return (state[op.inputs[0]] + state[op.inputs[1]]).astype(np.float32)


def _logits(model: NumpyTransformer, op: Operation, state: Activations, cache: KVCache) -> np.ndarray:
    return _project(model, op, state, cache)


Kernel = Callable[[NumpyTransformer, Operation, Activations, KVCache], np.ndarray]
KERNELS: dict[str, Kernel] = {
    "embed": _embed,
    "norm": _norm,
    "project": _project,
    "rope": _rope,
    "attend": _attend,
    "activate": _activate,
    "gate": _gate,
    "add": _add,
    "logits": _logits,
}
"""One per OPERATION_KINDS entry (the tests hold them equal)."""
