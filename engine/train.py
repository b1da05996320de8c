"""`pxgl train`: learn a BPE tokenizer and a pixellm model (docs/FORMATS.md §3) on the CPU with numpy,
quantize it to uint8 and write the .pxi, its meta and its tokenizer.

The only numpy forward pass outside the tests lives here: executors run the model on the GPU."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import default_documents, file_documents, split_documents
from .errors import PxglError
from .model import save_model
from .pxi import MAX_PIXELS
from .spec import MAX_CONTEXT_WINDOW, MAX_DIM, MAX_VOCAB, TENSOR_ORDER, ModelSpec, layout_tensors
from .tokenizer import BYTE_TOKENS, Tokenizer

Params = dict[str, np.ndarray]
Progress = Callable[[str, int, int], None]
"""progress(stage, done, total) with stage "tokenizer", "training" or "evaluating"."""
EVAL_BATCH = 2048
CLIP_PERCENT = 0.01
"""Quantization range clip; on pixellm_v0 it beat plain min/max (held-out perplexity 43.97 vs 44.18) and
clipping harder (0.1%, 0.5%) was worse."""


@dataclass(frozen=True)
class TrainConfig:
    out: Path = Path("pixellm.pxi")
    files: tuple[Path, ...] = ()
    """Training text files; empty means the default corpus (Python's own documentation)."""
    vocab_size: int = 1024
    embed_dim: int = 128
    hidden_dim: int = 128
    context_window: int = 2
    """Mean pooling has no word order, so a longer window blurs the last tokens. Default corpus, vocab 1024,
    dims 128, 5000 steps of 512: held-out top-1 15% at 1, 25% at 2, 19% at 4, 12% at 8, 8% at 16; at 8000
    steps 26% at 2 against 24% at 3."""
    steps: int = 15000
    batch_size: int = 512
    lr: float = 6e-3
    seed: int = 0
    heldout_fraction: float = 0.1
    max_tokens: int | None = None
    """Use at most this many tokens of each split (train, held-out); None means all. For quick runs."""

    def validate(self) -> None:
        checks = [
            (BYTE_TOKENS <= self.vocab_size <= MAX_VOCAB, f"vocab size must be in {BYTE_TOKENS}..{MAX_VOCAB}"),
            (1 <= self.embed_dim <= MAX_DIM, f"embed dim must be in 1..{MAX_DIM}"),
            (1 <= self.hidden_dim <= MAX_DIM, f"hidden dim must be in 1..{MAX_DIM}"),
            (1 <= self.context_window <= MAX_CONTEXT_WINDOW, f"context window must be in 1..{MAX_CONTEXT_WINDOW}"),
            (self.steps >= 1, "steps must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (math.isfinite(self.lr) and self.lr > 0, "learning rate must be a finite positive number"),
            (0 < self.heldout_fraction < 1, "held-out fraction must be between 0 and 1"),
            (self.max_tokens is None or self.max_tokens >= 2, "max tokens must be at least 2"),
            (self.out.suffix == ".pxi", f"--out {self.out}: the weights file must end in .pxi"),
        ]
        for ok, message in checks:
            if not ok:
                raise PxglError(f"cannot train: {message}")
        _, width, height = layout_tensors(
            self.vocab_size, self.embed_dim, self.hidden_dim, dict.fromkeys(TENSOR_ORDER, (1.0, 0))
        )
        if width * height > MAX_PIXELS:
            raise PxglError(f"cannot train: a {width}x{height} weight image exceeds the {MAX_PIXELS}-pixel limit")

    @property
    def tokenizer_name(self) -> str:
        return self.out.name.removesuffix(".pxi") + ".tokenizer.json"


@dataclass(frozen=True)
class TokenStream:
    """Documents' tokens back to back; start[j] is where the document holding position j begins."""

    tokens: np.ndarray
    start: np.ndarray
    targets: np.ndarray = field(init=False)
    """Positions with at least one earlier token in their document: the ones to predict."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", np.flatnonzero(np.arange(self.tokens.size) > self.start))

    @classmethod
    def of(cls, tokenizer: Tokenizer, documents: list[str], max_tokens: int | None) -> "TokenStream":
        encoded = [np.asarray(tokenizer.encode(d), dtype=np.int64) for d in documents]
        lengths = np.array([e.size for e in encoded], dtype=np.int64)
        tokens = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int64)
        start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        if max_tokens is not None:
            tokens, start = tokens[:max_tokens], start[:max_tokens]
        return cls(tokens, start)

    def context(self, positions: np.ndarray, window: int, vocab: int) -> np.ndarray:
        """(B, vocab) pooling matrix: row b averages the embeddings of the last `window` tokens before
        positions[b] within its document, so x = pool @ embed and d(embed) = pool.T @ dx."""
        offsets = positions[:, None] - np.arange(window, 0, -1)[None, :]
        valid = offsets >= self.start[positions][:, None]
        ids = np.where(valid, self.tokens[np.maximum(offsets, 0)], 0)
        weights = valid / valid.sum(axis=1, keepdims=True)
        rows = np.repeat(np.arange(positions.size), window)
        flat = np.bincount(rows * vocab + ids.reshape(-1), weights.reshape(-1), minlength=positions.size * vocab)
        return flat.reshape(positions.size, vocab).astype(np.float32)


def forward(params: Params, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, hidden pre-activation, logits) of FORMATS §3 for a batch of pooling rows."""
    x = pool @ params["embed"]
    pre = x @ params["hidden"] + params["b_hidden"]
    return x, pre, np.maximum(pre, 0) @ params["out"] + params["b_out"]


def gradients(params: Params, pool: np.ndarray, y: np.ndarray) -> Params:
    """Gradients of the mean next-token cross-entropy, by hand."""
    x, pre, logits = forward(params, pool)
    d_logits = np.exp(logits - logits.max(axis=1, keepdims=True))
    d_logits /= d_logits.sum(axis=1, keepdims=True)
    d_logits[np.arange(y.size), y] -= 1
    d_logits /= y.size
    h = np.maximum(pre, 0)
    d_pre = (d_logits @ params["out"].T) * (pre > 0)
    d_x = d_pre @ params["hidden"].T
    return {
        "out": h.T @ d_logits,
        "b_out": d_logits.sum(axis=0),
        "hidden": x.T @ d_pre,
        "b_hidden": d_pre.sum(axis=0),
        "embed": pool.T @ d_x,
    }


def init_params(config: TrainConfig, unigram: np.ndarray, rng: np.random.Generator) -> Params:
    """Small random weights; the output bias starts at the log unigram frequencies, so step 0 already
    predicts as well as the unigram baseline."""
    v, e, h = config.vocab_size, config.embed_dim, config.hidden_dim
    return {
        "b_hidden": np.zeros(h, np.float32),
        "b_out": np.log(unigram / unigram.sum()).astype(np.float32),
        "embed": rng.normal(0, 1, (v, e)).astype(np.float32),
        "hidden": rng.normal(0, math.sqrt(2 / e), (e, h)).astype(np.float32),
        "out": rng.normal(0, 1 / math.sqrt(h), (h, v)).astype(np.float32),
    }


def fit(config: TrainConfig, stream: TokenStream, params: Params, rng: np.random.Generator, progress: Progress) -> None:
    """Adam on minibatches of random positions, learning rate on a cosine from lr down to lr / 20."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for step in range(1, config.steps + 1):
        positions = rng.choice(stream.targets, size=config.batch_size)
        pool = stream.context(positions, config.context_window, config.vocab_size)
        grads = gradients(params, pool, stream.tokens[positions])
        lr = config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        for k, g in grads.items():
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            m_hat = m[k] / (1 - beta1**step)
            v_hat = v[k] / (1 - beta2**step)
            params[k] -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
        progress("training", step, config.steps)


def evaluate(params: Params, stream: TokenStream, window: int) -> dict[str, float]:
    """Top-1 accuracy and perplexity of next-token prediction at every held-out position."""
    correct, nll = 0, 0.0
    vocab = params["b_out"].size
    for begin in range(0, stream.targets.size, EVAL_BATCH):
        positions = stream.targets[begin : begin + EVAL_BATCH]
        y = stream.tokens[positions]
        logits = forward(params, stream.context(positions, window, vocab))[2].astype(np.float64)
        correct += int((logits.argmax(axis=1) == y).sum())
        top = logits.max(axis=1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        nll += float((log_z - logits[np.arange(y.size), y]).sum())
    return _scores(correct, nll, stream.targets.size)


def evaluate_unigram(counts: np.ndarray, stream: TokenStream) -> dict[str, float]:
    """The baseline: always predict by train-split frequency, add-one smoothed."""
    p = (counts + 1) / (counts.sum() + counts.size)
    y = stream.tokens[stream.targets]
    return _scores(int((y == counts.argmax()).sum()), float(-np.log(p[y]).sum()), y.size)


def _scores(correct: int, nll: float, n: int) -> dict[str, float]:
    return {"top1_accuracy": round(correct / n, 4), "perplexity": round(math.exp(nll / n), 3)}


def quantize(w: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Affine uint8: (q, scale, zero_point) with w ≈ (q - zero_point) * scale.

    The range spans the CLIP_PERCENT..100-CLIP_PERCENT percentiles of w, widened to hold 0 so that
    zero_point is a valid byte; values beyond it saturate."""
    low, high = np.percentile(w, [CLIP_PERCENT, 100 - CLIP_PERCENT])
    lo, hi = min(float(low), 0.0), max(float(high), 0.0)
    if hi == lo:
        return np.zeros(w.shape, np.uint8), 1.0, 0
    scale = (hi - lo) / 255
    zero_point = round(-lo / scale)
    q = np.clip(np.round(w / scale) + zero_point, 0, 255).astype(np.uint8)
    return q, scale, zero_point


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def train(config: TrainConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Train, quantize, evaluate and write config.out (+ meta + tokenizer). Returns the meta's eval."""
    config.validate()
    report: Progress = progress or (lambda stage, done, total: None)
    documents, corpus = file_documents(list(config.files)) if config.files else default_documents()
    train_docs, heldout_docs = split_documents(documents, config.seed, config.heldout_fraction)
    tokenizer = Tokenizer.train(train_docs, config.vocab_size, lambda done, total: report("tokenizer", done, total))
    if tokenizer.vocab_size != config.vocab_size:
        raise PxglError(
            f"cannot train: the corpus only supports {tokenizer.vocab_size} tokens, "
            f"not {config.vocab_size}; use a smaller vocab or more text"
        )
    train_stream = TokenStream.of(tokenizer, train_docs, config.max_tokens)
    heldout_stream = TokenStream.of(tokenizer, heldout_docs, config.max_tokens)
    if train_stream.targets.size == 0 or heldout_stream.targets.size == 0:
        raise PxglError("cannot train: the corpus is too small (each split needs a document of 2+ tokens)")
    counts = np.bincount(train_stream.tokens, minlength=tokenizer.vocab_size).astype(np.float64)

    rng = np.random.default_rng(config.seed)
    params = init_params(config, counts + 1, rng)
    began = time.monotonic()
    fit(config, train_stream, params, rng, report)
    seconds = time.monotonic() - began

    report("evaluating", 0, 1)
    quantized = {name: quantize(params[name]) for name in TENSOR_ORDER}
    dequantized = {name: dequantize(*quantized[name]) for name in TENSOR_ORDER}
    evaluation = {
        "heldout_tokens": int(heldout_stream.targets.size),
        "train_tokens": int(train_stream.tokens.size),
        "float": evaluate(params, heldout_stream, config.context_window),
        "quantized": evaluate(dequantized, heldout_stream, config.context_window),
        "unigram": evaluate_unigram(counts, heldout_stream),
        "quantization": f"per-tensor affine uint8, range {CLIP_PERCENT}..{100 - CLIP_PERCENT} percentile",
        "seed": config.seed,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "context_window": config.context_window,
        "train_seconds": round(seconds, 1),
        "corpus": corpus,
    }
    report("evaluating", 1, 1)
    _write(config, tokenizer, quantized, evaluation)
    return evaluation


def _write(
    config: TrainConfig,
    tokenizer: Tokenizer,
    quantized: dict[str, tuple[np.ndarray, float, int]],
    evaluation: dict[str, Any],
) -> None:
    tensors, width, height = layout_tensors(
        config.vocab_size,
        config.embed_dim,
        config.hidden_dim,
        {name: (scale, zero_point) for name, (_, scale, zero_point) in quantized.items()},
    )
    spec = ModelSpec(
        config.vocab_size,
        config.embed_dim,
        config.hidden_dim,
        config.context_window,
        width,
        height,
        tensors,
        config.tokenizer_name,
        evaluation,
    )
    save_model(config.out, spec, b"".join(quantized[name][0].tobytes() for name in TENSOR_ORDER))
    tokenizer.save(config.out.with_name(config.tokenizer_name))
