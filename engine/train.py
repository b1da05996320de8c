"""`pxgl train`: learn a BPE tokenizer and a member of the pixellm family on the CPU with numpy, quantize it to
uint8 and write the .pxi, its meta and its tokenizer (docs/FORMATS.md §2, §9).

Data: the frozen corpus (or the user's files) split by document into train, validation and held-out (§9).
Training: AdamW over shuffled epochs of every train position, warm-up then cosine learning rate, dropout,
the weights of the best validation loss kept (early stopping). Held-out text is scored once, at the end,
and written into the meta's `eval`; nothing is chosen on it."""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin

import numpy as np

from .corpus import Corpus, default_corpus, file_corpus, three_way_split
from .errors import PxglError
from .model import save_model
from .network import Params, Regularisation, backward, draw_masks, forward, init_params, log_probabilities, softmax_xent
from .output_kinds import model_set
from .outputs import check_outputs, check_writes
from .spec import (
    MAX_CONTEXT_WINDOW,
    MAX_DIM,
    MAX_LAYERS,
    MAX_VOCAB,
    MIN_VOCAB,
    Architecture,
    Context,
    layout,
    meta_path_for,
)
from .tokenizer import Tokenizer
from .train_state import Checkpoint, TrainingInterrupted, TrainState, load, text_sha256

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total) with stage "tokenizer", "training", "validating" or "evaluating"."""
EVAL_BATCH = 4096
CLIP_PERCENT = 0.01
"""Quantization range clip; on pixellm_v0 it beat plain min/max (held-out perplexity 43.97 vs 44.18) and
clipping harder (0.1%, 0.5%) was worse."""
DECAYED = ("embed", "attn.query", "attn.key", "attn.value")
"""Weight decay applies to matrices and embeddings, never to biases or position rows."""


MAX_SEED = 2**64 - 1
"""The largest seed (FORMATS §9): far below the 64-digit integers the meta's reader accepts (§0.1)."""


@dataclass(frozen=True)
class TrainConfig:
    out: Path = Path("pixellm.pxi")
    files: tuple[Path, ...] = ()
    """Training text files; empty means the frozen default corpus."""
    seed: int = 0
    """Seeds the initial weights, the batches and the dropout, and the splits unless split_seed is given."""
    split_seed: int | None = None
    """Seeds the splits (FORMATS §9) apart from the training: compare training seeds on the same text."""
    vocab_size: int = 1024
    embed_dim: int = 64
    context: str = "attention"
    window: int = 16
    concat: int = 2
    """attention: the last embeddings set beside the head."""
    head_dim: int = 64
    hidden: tuple[int, ...] = (1024,)
    residual: bool = False
    input_dropout: float = 0.0
    dropout: float = 0.4
    weight_decay: float = 0.0
    lr: float = 2e-3
    batch_size: int = 512
    epochs: float = 8.0
    steps: int | None = None
    """Overrides epochs: exactly this many Adam steps (quick runs, tests)."""
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    eval_every: int = 700
    patience: int = 0
    """Stop after this many validations without a new best (0: train every step)."""
    embed_init: float = 1.0
    heldout_fraction: float = 0.1
    validation_fraction: float = 0.1
    max_tokens: int | None = None
    """Use at most this many tokens of each split (quick runs)."""

    def architecture(self) -> Architecture:
        if self.context == "attention":
            context = Context("attention", self.window, self.concat, self.head_dim)
        else:
            context = Context(self.context, self.window)
        return Architecture(self.vocab_size, self.embed_dim, context, tuple(self.hidden), self.residual)

    def validate(self) -> None:
        checks = [
            (MIN_VOCAB <= self.vocab_size <= MAX_VOCAB, f"vocab size must be in {MIN_VOCAB}..{MAX_VOCAB}"),
            (1 <= self.embed_dim <= MAX_DIM, f"embed width must be in 1..{MAX_DIM}"),
            (self.context in ("mean", "concat", "attention"), "context must be mean, concat or attention"),
            (1 <= self.window <= MAX_CONTEXT_WINDOW, f"window must be in 1..{MAX_CONTEXT_WINDOW}"),
            (self.context != "attention" or 0 <= self.concat <= self.window, "concat must be in 0..window"),
            (self.context != "attention" or 1 <= self.head_dim <= MAX_DIM, f"head width must be in 1..{MAX_DIM}"),
            (1 <= len(self.hidden) <= MAX_LAYERS, f"give 1 to {MAX_LAYERS} hidden widths"),
            (all(1 <= h <= MAX_DIM for h in self.hidden), f"hidden widths must be in 1..{MAX_DIM}"),
            (0 <= self.input_dropout < 1 and 0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.weight_decay >= 0, "weight decay must be at least 0"),
            (math.isfinite(self.lr) and self.lr > 0, "learning rate must be a finite positive number"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (all(0 <= seed <= MAX_SEED for seed in (self.seed, self.split_seed or 0)), "seeds must lie in 0..2^64-1"),
            (self.epochs > 0 and (self.steps is None or self.steps >= 1), "train at least one step"),
            (self.eval_every >= 1 and self.patience >= 0, "eval-every must be at least 1, patience at least 0"),
            (0 < self.heldout_fraction < 1 and 0 < self.validation_fraction < 1, "fractions must be in (0, 1)"),
            (self.max_tokens is None or self.max_tokens >= 2, "max tokens must be at least 2"),
            (self.out.suffix == ".pxi", f"--out {self.out}: the weights file must end in .pxi"),
        ]
        for ok, message in checks:
            if not ok:
                raise PxglError(f"cannot train: {message}")
        check_fits(self.architecture())

    @property
    def splits_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def tokenizer_name(self) -> str:
        return self.out.name.removesuffix(".pxi") + ".tokenizer.json"


def check_fits(architecture: Architecture) -> None:
    """Refuse, before any work, a model whose weights would not fit a pixel file."""
    layout(architecture, dict.fromkeys(architecture.shapes(), (1.0, 0)), "", {})


@dataclass(frozen=True)
class Positions:
    """Every token position of some documents: the documents' tokens back to back and where each starts."""

    tokens: np.ndarray
    start: np.ndarray
    bytes: int
    counts: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, tokenizer: Tokenizer, documents: list[str], max_tokens: int | None) -> "Positions":
        encoded = [np.asarray(tokenizer.encode(d), dtype=np.int64) for d in documents]
        lengths = np.array([e.size for e in encoded], dtype=np.int64)
        tokens = np.concatenate(encoded) if encoded else np.zeros(0, np.int64)
        start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        if max_tokens is not None:
            tokens, start = tokens[:max_tokens], start[:max_tokens]
        size = sum(len(d.encode("utf-8", "surrogatepass")) for d in documents)
        return cls(tokens, start, size, np.bincount(tokens, minlength=tokenizer.vocab_size))

    @property
    def size(self) -> int:
        return int(self.tokens.size)

    def contexts(self, positions: np.ndarray, window: int, pad: int) -> np.ndarray:
        """(B, window) ids before each position, oldest first; `pad` before its document's start."""
        offsets = positions[:, None] - np.arange(window, 0, -1)[None, :]
        valid = offsets >= self.start[positions][:, None]
        return np.where(valid, self.tokens[np.maximum(offsets, 0)], pad)


def evaluate(
    a: Architecture, params: Params, text: Positions, advance: Callable[[int], None] | None = None
) -> dict[str, float]:
    """FORMATS §9's scores of the numpy model: every position, bits per UTF-8 byte, top-1; `advance(n)`
    after each batch of n positions."""
    nats, hits = 0.0, 0
    for begin in range(0, text.size, EVAL_BATCH):
        positions = np.arange(begin, min(begin + EVAL_BATCH, text.size))
        logp, hit = log_probabilities(
            a, params, text.contexts(positions, a.context.window, a.vocab_size), text.tokens[positions]
        )
        nats -= float(logp.sum())
        hits += int(hit.sum())
        if advance is not None:
            advance(positions.size)
    return scores(hits, nats, text)


def stage_counter(report: Progress, stage: str, total: int) -> Callable[[int], None]:
    """advance(n) for evaluate(): the stage's positions done so far, reported."""
    done = 0
    report(stage, done, total)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        report(stage, done, total)

    return advance


def scores(hits: int, nats: float, text: Positions) -> dict[str, float]:
    return {
        "top1": round(hits / text.size, 5),
        "perplexity": round(math.exp(nats / text.size), 4),
        "bits_per_byte": round(nats / math.log(2) / text.bytes, 5),
    }


def unigram_scores(counts: np.ndarray, text: Positions) -> dict[str, float]:
    """The baseline: always predict by train-split frequency, add-one smoothed."""
    p = (counts + 1) / (counts.sum() + counts.size)
    return scores(int((text.tokens == counts.argmax()).sum()), float(-np.log(p[text.tokens]).sum()), text)


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


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine from lr down to lr · min_lr_ratio."""
    if step <= config.warmup_steps:
        return config.lr * step / max(1, config.warmup_steps)
    t = min(max((step - config.warmup_steps) / max(1, total - config.warmup_steps), 0.0), 1.0)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def planned_steps(config: TrainConfig, train: Positions) -> tuple[int, int]:
    """(steps an epoch, steps in all)."""
    per_epoch = max(1, train.size // config.batch_size)
    return per_epoch, config.steps or max(1, round(config.epochs * per_epoch))


def fit(
    config: TrainConfig,
    train: Positions,
    validation: Positions,
    state: TrainState,
    report: Progress,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """AdamW on shuffled epochs of minibatches from state.step on; leaves the weights of the best validation
    loss in state.params."""
    a = config.architecture()
    regularisation = Regularisation(config.input_dropout, config.dropout)
    per_epoch, total = planned_steps(config, train)
    params, m, v, rng = state.params, state.m, state.v, state.rng
    stop = "steps"
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(state.step + 1, total + 1):
        slot = (step - 1) % per_epoch
        if slot == 0:
            state.order = rng.permutation(train.size)
        index = np.sort(state.order[slot * config.batch_size : (slot + 1) * config.batch_size])
        ctx = train.contexts(index, a.context.window, a.vocab_size)
        masks = draw_masks(a, regularisation, index.size, rng)
        logits, cache = forward(a, params, ctx, masks)
        _, d_logits = softmax_xent(logits, train.tokens[index])
        grads = backward(a, params, cache, d_logits, masks)
        lr = learning_rate(config, step, total)
        step_size = np.float32(lr / (1 - b1**step))
        correction = np.float32(1 - b2**step)
        for name, g in grads.items():
            p, mk, vk = params[name], m[name], v[name]
            mk *= b1
            mk += (1 - b1) * g
            vk *= b2
            vk += (1 - b2) * (g * g)
            if config.weight_decay > 0 and (name in DECAYED or name.endswith(".weight")):
                p *= np.float32(1 - lr * config.weight_decay)
            p -= step_size * mk / (np.sqrt(vk / correction) + np.float32(eps))
        state.step = step
        report("training", step, total)
        if step % config.eval_every == 0 or step == total:
            score = evaluate(a, params, validation, stage_counter(report, "validating", validation.size))
            state.history.append({"step": step, **score})
            if score["bits_per_byte"] < state.best_loss:
                state.best_loss, state.best_step, state.stale = score["bits_per_byte"], step, 0
                state.best_params = {k: p.copy() for k, p in params.items()}
            else:
                state.stale += 1
            if config.patience and state.stale >= config.patience:
                stop = "patience"
                break
        if checkpoint is not None and step < total:
            if checkpoint.requested or step % checkpoint.every == 0:
                checkpoint.save(state, total)
            if checkpoint.requested:
                raise TrainingInterrupted(checkpoint.path, step, total)
    params.update(state.best_params)
    return {
        "steps": state.step,
        "planned_steps": total,
        "best_step": state.best_step,
        "stop": stop,
        "history": state.history,
    }


def train(config: TrainConfig, progress: Progress | None = None, checkpoint_every: int | None = None) -> dict[str, Any]:
    """Train, quantize, evaluate and write config.out (+ meta + tokenizer). Returns the meta's eval. With
    checkpoint_every, the run's state is saved beside the output (checkpoint_path) every that many steps and
    on Ctrl-C (FORMATS §15), and removed once the model is written."""
    began = time.monotonic()
    config.validate()
    path = checkpoint_path(config.out) if checkpoint_every else None
    check_run_outputs(config, path)
    if path is not None and path.exists():
        raise PxglError(
            f"{path}: a checkpoint of an interrupted run is there; continue it with pxgl train --resume {path}, "
            "or remove it to start again"
        )
    report: Progress = progress or (lambda stage, done, total: None)
    corpus, documents = corpus_splits(config)
    tokenizer = Tokenizer.train(
        [*documents[0], *documents[1]], config.vocab_size, lambda done, total: report("tokenizer", done, total)
    )
    if tokenizer.vocab_size != config.vocab_size:
        raise PxglError(
            f"cannot train: the corpus only supports {tokenizer.vocab_size} tokens, "
            f"not {config.vocab_size}; use a smaller vocab or more text"
        )
    splits = positions_of(config, tokenizer, documents)
    rng = np.random.default_rng(config.seed)
    state = TrainState(init_params(config.architecture(), splits[0].counts + 1.0, rng, config.embed_init), rng)
    checkpoint = None
    if path is not None and checkpoint_every is not None:
        checkpoint = Checkpoint(path, checkpoint_every, config_record(config), tokenizer, text_sha256(documents))
    return finish(config, corpus, tokenizer, splits, state, report, checkpoint, began)


def resume(
    path: Path, progress: Progress | None = None, checkpoint_every: int = 500, force: bool = False
) -> tuple[TrainConfig, dict]:
    """Continue the run a checkpoint saved (FORMATS §15) to what the uninterrupted run writes: (its config,
    the meta's eval). The files it names are replaced as a new run's named outputs are (§0.3): only when
    empty or of their kind, unless `force`."""
    began = time.monotonic()
    saved = load(path, lambda record: config_of(record, f"{path}: checkpoint").architecture().shapes())
    config = config_of(saved.config, f"{path}: checkpoint")
    check_run_outputs(config, path)
    check_writes(model_set(config.out, config.out.with_name(config.tokenizer_name)), config.files, force)
    corpus, documents = corpus_splits(config)
    if text_sha256(documents) != saved.text_sha256:
        raise PxglError(f"{path}: the run's training text has changed since the checkpoint; it cannot continue")
    if saved.tokenizer.vocab_size != config.vocab_size:
        raise PxglError(f"{path}: checkpoint's tokenizer is not of the run's vocabulary")
    splits = positions_of(config, saved.tokenizer, documents)
    per_epoch, total = planned_steps(config, splits[0])
    order, started = saved.state.order, saved.state.step % per_epoch != 0
    shuffled = order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(splits[0].size))
    if saved.planned_steps != total or saved.state.step >= total or (started and not shuffled):
        raise PxglError(f"{path}: checkpoint's step, planned steps or shuffled positions do not fit the run")
    checkpoint = Checkpoint(path, checkpoint_every, saved.config, saved.tokenizer, saved.text_sha256)
    report: Progress = progress or (lambda stage, done, total: None)
    return config, finish(config, corpus, saved.tokenizer, splits, saved.state, report, checkpoint, began)


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".pxi") + ".checkpoint.npz")


def check_run_outputs(config: TrainConfig, checkpoint: Path | None) -> None:
    out = config.out
    written = [(out, "weights"), (meta_path_for(out), "meta"), (out.with_name(config.tokenizer_name), "tokenizer")]
    outputs = [(path, f"--out {out}: its {what}") for path, what in written]
    check_outputs([*outputs, (checkpoint, "the checkpoint")], config.files)


def corpus_splits(config: TrainConfig) -> tuple[Corpus, tuple[list[str], list[str], list[str]]]:
    corpus = file_corpus(list(config.files)) if config.files else default_corpus()
    splits = three_way_split(corpus.documents, config.splits_seed, config.heldout_fraction, config.validation_fraction)
    return corpus, splits


def positions_of(config: TrainConfig, tokenizer: Tokenizer, documents: tuple[list[str], ...]) -> list[Positions]:
    splits = [Positions.of(tokenizer, docs, config.max_tokens) for docs in documents]
    if min(s.size for s in splits) == 0:
        raise PxglError("cannot train: the corpus is too small (each split needs a document of text)")
    return splits


def config_record(config: TrainConfig) -> dict[str, Any]:
    """The config as JSON, its paths absolute (a run resumes from any folder)."""
    record = asdict(config) | {"hidden": list(config.hidden)}
    return record | {"out": str(config.out.absolute()), "files": [str(f.absolute()) for f in config.files]}


def config_of(record: Any, where: str) -> TrainConfig:
    """A TrainConfig from config_record's JSON, each field of its type, validated."""
    names = [f.name for f in fields(TrainConfig)]
    if not isinstance(record, dict) or set(record) != set(names):
        raise PxglError(f"{where}: its config must have exactly the fields {', '.join(names)}")
    bad = next((f.name for f in fields(TrainConfig) if not of_type(record[f.name], f.type)), None)
    if bad is not None:
        raise PxglError(f"{where}: its config's {bad} is {record[bad]!r}, not of type {field_type(bad)}")
    paths = {"out": Path(record["out"]), "files": tuple(Path(f) for f in record["files"])}
    config = TrainConfig(**(record | paths | {"hidden": tuple(record["hidden"])}))
    config.validate()
    return config


def of_type(value: Any, kind: Any) -> bool:
    """value as JSON gives a field of the annotation `kind` (Path: a string without NUL; tuples: lists)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if kind is Path:  # a NUL is no path: the system calls refuse it with a ValueError
        return isinstance(value, str) and "\0" not in value
    if kind is type(None):
        return value is None
    if get_origin(kind) is tuple:
        return isinstance(value, list) and all(of_type(item, get_args(kind)[0]) for item in value)
    return any(of_type(value, option) for option in get_args(kind))


def field_type(name: str) -> str:
    return str(next(f.type for f in fields(TrainConfig) if f.name == name))


def finish(
    config: TrainConfig,
    corpus: Corpus,
    tokenizer: Tokenizer,
    splits: list[Positions],
    state: TrainState,
    report: Progress,
    checkpoint: Checkpoint | None,
    began: float,
) -> dict[str, Any]:
    """Train from `state` on, then quantize, evaluate, write the model and remove the checkpoint."""
    train_text, validation_text, heldout_text = splits
    a = config.architecture()
    if checkpoint is None:
        run = fit(config, train_text, validation_text, state, report)
    else:
        checkpoint.began = began
        with checkpoint:
            run = fit(config, train_text, validation_text, state, report, checkpoint)
    seconds = state.seconds + time.monotonic() - began
    params = state.params

    advance = stage_counter(report, "evaluating", 2 * (heldout_text.size + validation_text.size))
    quantized = {name: quantize(p) for name, p in params.items()}
    dequantized = {name: dequantize(*q) for name, q in quantized.items()}
    evaluation = {
        "heldout": {
            "quantized": evaluate(a, dequantized, heldout_text, advance),
            "float": evaluate(a, params, heldout_text, advance),
        },
        "validation": {
            "quantized": evaluate(a, dequantized, validation_text, advance),
            "float": evaluate(a, params, validation_text, advance),
        },
        "unigram": unigram_scores(train_text.counts, heldout_text),
        "positions": {"train": train_text.size, "validation": validation_text.size, "heldout": heldout_text.size},
        "corpus": corpus.info,
        "split": {
            "seed": config.splits_seed,
            "heldout_fraction": config.heldout_fraction,
            "validation_fraction": config.validation_fraction,
        },
        "quantization": f"per-tensor affine uint8, range {CLIP_PERCENT}..{100 - CLIP_PERCENT} percentile",
        "training": {k: v for k, v in asdict(config).items() if k not in ("out", "files")}
        | {"hidden": list(config.hidden)}
        | run,
        "weights": a.weight_count(),
        "train_seconds": round(seconds, 1),
    }
    quant = {name: (scale, zero_point) for name, (_, scale, zero_point) in quantized.items()}
    spec = layout(a, quant, config.tokenizer_name, evaluation)
    save_model(config.out, spec, b"".join(quantized[name][0].tobytes() for name in spec.tensors), tokenizer)
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)
    return evaluation
