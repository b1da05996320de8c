"""The family's forward pass (docs/FORMATS.md §3) and its gradients in numpy, for `pxgl train` on the CPU.

Parameters carry the tensors' version-1 names (embed, attn.pos, attn.query, ..., layer<l>.weight,
out.bias). A batch is a (B, W) array of context ids, oldest first, with `vocab_size` marking a position
before the document's start (its embedding is the zero vector, FORMATS §3). Executors run the model on the
GPU: this numpy pass exists to learn the weights, with dropout."""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import Architecture

Params = dict[str, np.ndarray]
Masks = dict[str, np.ndarray]


@dataclass(frozen=True)
class Regularisation:
    input_dropout: float = 0.0
    """Dropout on x, the first layer's input."""
    dropout: float = 0.0
    """Dropout on each hidden layer's ReLU output (the residual branch when residual)."""


def init_params(
    a: Architecture, unigram: np.ndarray, rng: np.random.Generator, embed_init: float = 1.0, dtype: Any = np.float32
) -> Params:
    """He-initialised ReLU layers, N(0, embed_init) embeddings, the output bias at the log unigram frequencies
    (so step 0 already predicts as well as the unigram baseline)."""
    v, e, c = a.vocab_size, a.embed_dim, a.context
    p: Params = {"embed": rng.normal(0, embed_init, (v, e))}
    if c.mode == "attention":
        p["attn.pos"] = rng.normal(0, embed_init, (c.window, e))
        for name in ("attn.query", "attn.key", "attn.value"):
            p[name] = rng.normal(0, 1 / math.sqrt(e), (e, c.head_dim))
    for layer, (n_in, n_out) in enumerate(a.layer_dims()):
        std = math.sqrt(2 / n_in) / (embed_init if layer == 0 else 1.0)
        p[f"layer{layer}.weight"] = rng.normal(0, std, (n_in, n_out))
        p[f"layer{layer}.bias"] = np.zeros(n_out)
    p["out.weight"] = rng.normal(0, 1 / math.sqrt(a.hidden[-1]), (a.hidden[-1], v))
    p["out.bias"] = np.log(unigram / unigram.sum())
    return {name: np.ascontiguousarray(p[name], dtype=dtype) for name in a.shapes()}


def draw_masks(
    a: Architecture, r: Regularisation, batch: int, rng: np.random.Generator, dtype: Any = np.float32
) -> Masks:
    """Inverted-dropout multipliers (0 or 1/keep) for the input and each hidden layer."""
    masks: Masks = {}
    if r.input_dropout > 0:
        keep = 1 - r.input_dropout
        masks["x"] = (rng.random((batch, a.context_dim), dtype=np.float32) < keep).astype(dtype) / dtype(keep)
    if r.dropout > 0:
        keep = 1 - r.dropout
        for layer, width in enumerate(a.hidden):
            masks[f"h{layer}"] = (rng.random((batch, width), dtype=np.float32) < keep).astype(dtype) / dtype(keep)
    return masks


def forward(a: Architecture, params: Params, ctx: np.ndarray, masks: Masks | None) -> tuple[np.ndarray, dict[str, Any]]:
    """(logits, cache) of a batch; masks None: no dropout (evaluation)."""
    dtype = params["embed"].dtype.type
    e, c = a.embed_dim, a.context
    b, w = ctx.shape
    table = np.concatenate([params["embed"], np.zeros((1, e), dtype)])  # the pad id's row: the zero vector
    cache: dict[str, Any] = {"table_rows": table.shape[0], "ctx": ctx}
    present = ctx != a.vocab_size
    if c.mode == "mean":
        inv = 1 / np.maximum(present.sum(axis=1, keepdims=True).astype(dtype), 1)
        x = table[ctx].sum(axis=1) * inv
        cache["inv"] = inv
    elif c.mode == "concat":
        x = table[ctx].reshape(b, w * e)
    else:
        d = c.head_dim
        u = table[ctx] + params["attn.pos"][::-1][None]  # (B, W, E): column k holds j = W-1-k
        q = u[:, -1] @ params["attn.query"]
        kv = u.reshape(b * w, e) @ np.concatenate([params["attn.key"], params["attn.value"]], axis=1)
        k, v = kv[:, :d].reshape(b, w, d), kv[:, d:].reshape(b, w, d)
        scale = dtype(1 / math.sqrt(d))
        s = np.where(present, np.matmul(k, q[:, :, None])[:, :, 0] * scale, dtype(-1e30))
        att = np.exp(s - s.max(axis=1, keepdims=True)) * present
        att /= np.maximum(att.sum(axis=1, keepdims=True), dtype(1e-30))  # no token (n = 0): the head gives 0
        out = np.matmul(att[:, None, :], v)[:, 0]
        last = [table[ctx[:, w - c.concat :]].reshape(b, c.concat * e)] if c.concat else []
        x = np.concatenate([*last, out], axis=1)
        cache.update(u=u, q=q, k=k, v=v, att=att, scale=scale)
    if masks is not None and "x" in masks:
        x = x * masks["x"]
    h, cache["h_in"], cache["pre"] = x, [], []
    for layer in range(len(a.hidden)):
        cache["h_in"].append(h)
        pre = h @ params[f"layer{layer}.weight"] + params[f"layer{layer}.bias"]
        r = np.maximum(pre, 0)
        if masks is not None and f"h{layer}" in masks:
            r = r * masks[f"h{layer}"]
        cache["pre"].append(pre)
        h = h + r if a.is_residual(layer) else r
    cache["h_top"] = h
    return h @ params["out.weight"] + params["out.bias"], cache


def backward(
    a: Architecture, params: Params, cache: dict[str, Any], d_logits: np.ndarray, masks: Masks | None
) -> Params:
    """Gradients of a loss whose gradient with respect to the logits is d_logits."""
    grads: Params = {"out.weight": cache["h_top"].T @ d_logits, "out.bias": d_logits.sum(axis=0)}
    dh = d_logits @ params["out.weight"].T
    for layer in reversed(range(len(a.hidden))):
        pre, h_in = cache["pre"][layer], cache["h_in"][layer]
        dr = dh * masks[f"h{layer}"] if masks is not None and f"h{layer}" in masks else dh
        dpre = dr * (pre > 0)
        grads[f"layer{layer}.weight"] = h_in.T @ dpre
        grads[f"layer{layer}.bias"] = dpre.sum(axis=0)
        dh_in = dpre @ params[f"layer{layer}.weight"].T
        dh = dh + dh_in if a.is_residual(layer) else dh_in
    dx = dh * masks["x"] if masks is not None and "x" in masks else dh
    ctx = cache["ctx"]
    b, w = ctx.shape
    e, c = a.embed_dim, a.context
    dtable = np.zeros((cache["table_rows"], e), dx.dtype)
    if c.mode == "mean":
        rows = np.broadcast_to((dx * cache["inv"])[:, None, :], (b, w, e))
        scatter_rows(dtable, ctx.reshape(-1), rows.reshape(-1, e))
    elif c.mode == "concat":
        scatter_rows(dtable, ctx.reshape(-1), dx.reshape(-1, e))
    else:
        d = c.head_dim
        u, q, k, v, att, scale = (cache[n] for n in ("u", "q", "k", "v", "att", "scale"))
        if c.concat:
            scatter_rows(dtable, ctx[:, w - c.concat :].reshape(-1), dx[:, : c.concat * e].reshape(-1, e))
        dout = dx[:, c.concat * e :]
        da = np.matmul(v, dout[:, :, None])[:, :, 0]
        ds = att * (da - (att * da).sum(axis=1, keepdims=True)) * scale
        dq = np.matmul(ds[:, None, :], k)[:, 0]
        dkv = np.empty((b, w, 2 * d), dx.dtype)
        np.multiply(ds[:, :, None], q[:, None, :], out=dkv[:, :, :d])
        np.multiply(att[:, :, None], dout[:, None, :], out=dkv[:, :, d:])
        dkv = dkv.reshape(b * w, 2 * d)
        grads["attn.query"] = u[:, -1].T @ dq
        gkv = u.reshape(b * w, e).T @ dkv
        grads["attn.key"], grads["attn.value"] = gkv[:, :d].copy(), gkv[:, d:].copy()
        du = (dkv @ np.concatenate([params["attn.key"], params["attn.value"]], axis=1).T).reshape(b, w, e)
        du[:, -1] += dq @ params["attn.query"].T
        grads["attn.pos"] = du.sum(axis=0)[::-1].copy()
        scatter_rows(dtable, ctx.reshape(-1), du.reshape(-1, e))
    grads["embed"] = dtable[:-1]
    return grads


def scatter_rows(table: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """table[ids[i]] += rows[i] for every i (repeats accumulate), via one bincount (faster than np.add.at)."""
    e = table.shape[1]
    flat = (ids.reshape(-1, 1).astype(np.int64) * e + np.arange(e)).reshape(-1)
    table += np.bincount(flat, weights=rows.reshape(-1), minlength=table.size).reshape(table.shape).astype(table.dtype)


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(sum of -ln p(y), d(mean loss)/d logits)."""
    z = logits - logits.max(axis=1, keepdims=True)
    ez = np.exp(z)
    total = ez.sum(axis=1, keepdims=True)
    rows = np.arange(y.size)
    nll = float((np.log(total[:, 0]).astype(np.float64) - z[rows, y].astype(np.float64)).sum())
    grad = ez / total
    grad[rows, y] -= 1
    grad /= y.size
    return nll, grad


def log_probabilities(a: Architecture, params: Params, ctx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log p(y) float64, argmax hit) of a batch, no dropout: the trainer's own scoring (FORMATS §9)."""
    logits, _ = forward(a, params, ctx, None)
    z = logits.astype(np.float64)
    top = z.max(axis=1)
    log_z = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return z[np.arange(y.size), y] - log_z, logits.argmax(axis=1) == y
