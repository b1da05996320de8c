"""§14.4: the forward pass over a float16 KV cache, one sequence at a time, positions never sliding."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .meta import SpecError, check_meta, meta_path, read_meta, read_stream
from .quant import dequantize

f32 = np.float32


def rope_tables(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [C, D/2]: θ, the scaling and the angles in float64, rounded to float32 once."""
    positions, D, C = meta["positions"], meta["head_dim"], meta["context_length"]
    k = np.arange(D // 2, dtype=np.float64)
    theta = float(positions["base"]) ** (-2.0 * k / D)
    scaling = positions.get("scaling")
    if scaling is not None:
        f = float(scaling["factor"])
        if scaling["kind"] == "linear":
            theta = theta / f
        else:
            lo, hi, c0 = (float(scaling[key]) for key in ("low_freq_factor", "high_freq_factor", "original_context"))
            wavelength = 2 * math.pi / theta
            smooth = (c0 / wavelength - lo) / (hi - lo)
            middle = (1 - smooth) * theta / f + smooth * theta
            theta = np.where(wavelength < c0 / hi, theta, np.where(wavelength > c0 / lo, theta / f, middle))
    angles = np.arange(C, dtype=np.float64)[:, None] * theta[None, :]
    return np.cos(angles).astype(f32), np.sin(angles).astype(f32)


def rope(v: np.ndarray, cos: np.ndarray, sin: np.ndarray, rotation: str) -> np.ndarray:
    """v: [..., D] at one position; cos, sin: [D/2]."""
    half = v.shape[-1] // 2
    if rotation == "halves":
        u, w = v[..., :half], v[..., half:]
    else:
        u, w = v[..., 0::2], v[..., 1::2]
    ru, rw = u * cos - w * sin, w * cos + u * sin
    out = np.empty_like(v)
    if rotation == "halves":
        out[..., :half], out[..., half:] = ru, rw
    else:
        out[..., 0::2], out[..., 1::2] = ru, rw
    return out


def act(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "gelu_tanh":
        return (f32(0.5) * x * (f32(1) + np.tanh(f32(math.sqrt(2 / math.pi)) * (x + f32(0.044715) * x**3)))).astype(f32)
    if kind == "gelu":
        from math import erf

        return (f32(0.5) * x * (f32(1) + np.vectorize(erf, otypes=[np.float64])(x / math.sqrt(2)).astype(f32))).astype(
            f32
        )
    return (x / (f32(1) + np.exp(-x))).astype(f32)


@dataclass
class SpecModel:
    meta: dict
    weights: dict[str, np.ndarray]
    cache_k: np.ndarray = field(init=False)
    cache_v: np.ndarray = field(init=False)
    tokens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        m = self.meta
        shape = (m["layers"], m["context_length"], m["kv_heads"], m["head_dim"])
        self.cache_k = np.zeros(shape, np.float16)
        self.cache_v = np.zeros(shape, np.float16)
        if m["positions"]["kind"] == "rope":
            self.cos, self.sin = rope_tables(m)

    @classmethod
    def open(cls, weights: Path) -> SpecModel:
        meta = read_meta(meta_path(weights))
        images, tensors = check_meta(meta)
        stream = read_stream(weights, meta, images)
        return cls(meta, {name: dequantize(stream, t) for name, t in tensors.items()})

    def reset(self, length: int = 0) -> None:
        """Keep positions < length (truncating)."""
        del self.tokens[length:]

    def _norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        eps = f32(self.meta["norm"]["eps"])
        weight = self.weights[prefix + ".weight"]
        if self.meta["norm"]["kind"] == "layernorm":
            mu = x.mean(axis=-1, keepdims=True, dtype=f32)
            var = ((x - mu) ** 2).mean(axis=-1, keepdims=True, dtype=f32)
            return ((x - mu) / np.sqrt(var + eps) * weight + self.weights[prefix + ".bias"]).astype(f32)
        return (x / np.sqrt((x * x).mean(axis=-1, keepdims=True, dtype=f32) + eps) * weight).astype(f32)

    def _project(self, name: str, x: np.ndarray) -> np.ndarray:
        y = x @ self.weights[name + ".weight"].T
        bias = self.weights.get(name + ".bias")
        return (y if bias is None else y + bias).astype(f32)

    def forward(self, new_tokens: list[int], trace: dict | None = None) -> np.ndarray:
        """Append tokens at positions len(tokens).. and return their logits [n, V] (float32).

        With `trace` (a fresh sequence): its "residual" [L+1, n, E] and "attention" [L, H, n, n] (§14.8).
        """
        m = self.meta
        start, n = len(self.tokens), len(new_tokens)
        if n < 1 or start + n > m["context_length"]:
            raise SpecError("past the context")
        H, K, D = m["heads"], m["kv_heads"], m["head_dim"]
        w = self.weights
        positions = np.arange(start, start + n)
        x = w["embed"][np.asarray(new_tokens)].copy()
        if m["positions"]["kind"] == "learned":
            x = (x + w["pos"][positions]).astype(f32)
        scale = f32(m["attention_scale"])
        residual, attention = [x.copy()], []
        for layer in range(m["layers"]):
            b = f"block{layer}."
            a = self._norm(x, b + "attn_norm")
            q = self._project(b + "attn.q", a).reshape(n, H, D)
            k = self._project(b + "attn.k", a).reshape(n, K, D)
            v = self._project(b + "attn.v", a).reshape(n, K, D)
            if m["positions"]["kind"] == "rope":
                rotation = m["positions"]["rotation"]
                cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]
                q, k = rope(q, cos, sin, rotation), rope(k, cos, sin, rotation)
            self.cache_k[layer, positions] = k.astype(np.float16)
            self.cache_v[layer, positions] = v.astype(np.float16)
            keys = self.cache_k[layer, : start + n].astype(f32)
            values = self.cache_v[layer, : start + n].astype(f32)
            o = np.empty((n, H, D), f32)
            for h in range(H):
                g = h // (H // K)
                scores = (q[:, h] @ keys[:, g].T) * scale
                scores[np.arange(start + n)[None, :] > positions[:, None]] = -np.inf
                p = np.exp(scores - scores.max(axis=1, keepdims=True))
                p = (p / p.sum(axis=1, keepdims=True)).astype(f32)
                o[:, h] = p @ values[:, g]
                attention.append(p)
            x = (x + self._project(b + "attn.out", o.reshape(n, H * D))).astype(f32)
            mm = self._norm(x, b + "mlp_norm")
            if m["mlp"]["kind"] == "silu_gated":
                inner = act("silu", self._project(b + "mlp.gate", mm)) * self._project(b + "mlp.up", mm)
            else:
                inner = act(m["mlp"]["kind"], self._project(b + "mlp.up", mm))
            x = (x + self._project(b + "mlp.down", inner.astype(f32))).astype(f32)
            residual.append(x.copy())
        h_final = self._norm(x, "final_norm")
        head = w["embed"] if m["tied_head"] else w["head.weight"]
        logits = h_final @ head.T
        if "head.bias" in w:
            logits = logits + w["head.bias"]
        self.tokens.extend(new_tokens)
        if trace is not None:
            trace["residual"] = np.stack(residual)
            trace["attention"] = np.stack(attention).reshape(m["layers"], H, n, start + n)
        return logits.astype(f32)
