"""The search space (docs/FORMATS.md §13): a genome is a member of the pixellm family (§2.1: context mode,
window, embed width, 1 to 4 hidden widths, residual) plus how it is trained (steps, learning rate, dropout,
weight decay). Limits keep every candidate small enough to train within the budget; mutations move one
gene at a time; a proposal from anywhere is checked here, and refused with its reason."""

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import PxglError
from ..spec import MAX_LAYERS, Architecture, Context, architecture_from_meta
from ..train import TrainConfig, check_fits

MAX_WINDOW = 64
DROPOUTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
WEIGHT_DECAYS = (0.0, 0.01, 0.1)
WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
"""The widths random search and mutation step between (a proposal may give any width)."""
WINDOWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
HEADS = (16, 32, 64, 128)
LEARNING_RATES = (5e-4, 1e-3, 2e-3, 4e-3, 6e-3, 1e-2)


class ProposalError(Exception):
    """A proposal the loop records as refused, with this reason, and goes on."""


@dataclass(frozen=True)
class Training:
    steps: int
    lr: float
    dropout: float
    weight_decay: float

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "lr": self.lr, "dropout": self.dropout, "weight_decay": self.weight_decay}


@dataclass(frozen=True)
class Genome:
    architecture: Architecture
    training: Training

    def to_json(self) -> dict[str, Any]:
        return {"architecture": self.architecture.to_json(), "training": self.training.to_json()}

    def train_config(self, steps: int | None = None) -> dict[str, Any]:
        """TrainConfig's fields for this genome (`steps` overrides its own: full training)."""
        a, t = self.architecture, self.training
        c = a.context
        return {
            "vocab_size": a.vocab_size,
            "embed_dim": a.embed_dim,
            "context": c.mode,
            "window": c.window,
            "concat": c.concat if c.mode == "attention" else TrainConfig.concat,
            "head_dim": c.head_dim if c.mode == "attention" else TrainConfig.head_dim,
            "hidden": a.hidden,
            "residual": a.residual,
            "dropout": t.dropout,
            "weight_decay": t.weight_decay,
            "lr": t.lr,
            "steps": steps or t.steps,
        }


@dataclass(frozen=True)
class Limits:
    """What a candidate may cost: weights, multiply-adds a prediction, training steps."""

    max_weights: int
    max_flops: int
    min_steps: int
    max_steps: int

    def to_json(self) -> dict[str, int]:
        return {
            "max_weights": self.max_weights,
            "max_flops": self.max_flops,
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
        }


def cost(genome: Genome) -> dict[str, int]:
    a = genome.architecture
    return {"weights": a.weight_count(), "flops": a.flops(), "steps": genome.training.steps}


def check(genome: Genome, limits: Limits, vocab_size: int) -> Genome:
    """The genome, or ProposalError naming what is wrong with it or what it costs too much of."""
    a, t = genome.architecture, genome.training
    if a.vocab_size != vocab_size:
        raise ProposalError(f"vocab_size {a.vocab_size}: this run's tokenizer has {vocab_size} tokens")
    if a.context.window > MAX_WINDOW:
        raise ProposalError(f"window {a.context.window} is over this search's {MAX_WINDOW}")
    if not (math.isfinite(t.lr) and 0 < t.lr <= 0.1):
        raise ProposalError(f"lr {t.lr} is outside (0, 0.1]")
    if not (0 <= t.dropout < 1 and 0 <= t.weight_decay <= 1):
        raise ProposalError("dropout must be in [0, 1) and weight_decay in [0, 1]")
    try:
        check_fits(a)
    except PxglError as e:
        raise ProposalError(str(e)) from None
    spent = cost(genome)
    over = [
        f"{what} {spent[what]:,} over the limit {limit:,}"
        for what, limit in (("weights", limits.max_weights), ("flops", limits.max_flops), ("steps", limits.max_steps))
        if spent[what] > limit
    ]
    if t.steps < limits.min_steps:
        over.append(f"steps {t.steps} under the minimum {limits.min_steps}")
    if over:
        raise ProposalError("too costly: " + "; ".join(over))
    return genome


def _number(raw: dict, key: str, kind: type, default: Any) -> Any:
    if key not in raw and default is None:
        raise ProposalError(f"training.{key} is missing")
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind if kind is int else int | float):
        raise ProposalError(f"training.{key} must be a number, got {str(value)[:40]!r}")
    return kind(value)


def genome_from_json(raw: Any, fallback: Training | None) -> Genome:
    """A proposal's `architecture` (the meta's object, §2.1) and `training` (missing keys take
    `fallback`'s; without one, every key is needed), or ProposalError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("architecture"), dict):
        raise ProposalError("a proposal is a JSON object with an 'architecture' object")
    try:
        architecture = architecture_from_meta(raw["architecture"] | {"version": 1}, "architecture")
    except PxglError as e:
        raise ProposalError(str(e)) from None
    training = raw.get("training", {})
    if not isinstance(training, dict):
        raise ProposalError("'training' must be an object (steps, lr, dropout, weight_decay)")
    t = Training(
        steps=_number(training, "steps", int, fallback and fallback.steps),
        lr=_number(training, "lr", float, fallback and fallback.lr),
        dropout=_number(training, "dropout", float, fallback and fallback.dropout),
        weight_decay=_number(training, "weight_decay", float, fallback and fallback.weight_decay),
    )
    return Genome(architecture, t)


# --- moving through the space ---------------------------------------------------------------------


def _step(choices: tuple, value: Any, rng: np.random.Generator) -> Any:
    """The neighbour of `value` (or of the choice nearest it) one step up or down."""
    nearest = min(range(len(choices)), key=lambda i: abs(math.log(choices[i] + 1) - math.log(value + 1)))
    moved = nearest + (1 if rng.random() < 0.5 else -1)
    return choices[min(max(moved, 0), len(choices) - 1)]


def _context(mode: str, window: int, embed: int, old: Context) -> Context:
    if mode != "attention":
        return Context(mode, window)
    head = old.head_dim if old.mode == "attention" else min(HEADS, key=lambda h: abs(h - embed))
    return Context(mode, window, min(old.concat if old.mode == "attention" else 2, window), head)


def _mutate_architecture(name: str, a: Architecture, rng: np.random.Generator) -> Architecture:
    c = a.context
    if name == "context-mode":
        mode = str(rng.choice([m for m in ("mean", "concat", "attention") if m != c.mode]))
        return replace(a, context=_context(mode, c.window, a.embed_dim, c))
    if name == "window":
        return replace(a, context=replace(c, window=(w := _step(WINDOWS, c.window, rng)), concat=min(c.concat, w)))
    if name == "embed":
        return replace(a, embed_dim=_step(WIDTHS, a.embed_dim, rng))
    if name == "width":
        layer = int(rng.integers(len(a.hidden)))
        hidden = list(a.hidden)
        hidden[layer] = _step(WIDTHS, hidden[layer], rng)
        return replace(a, hidden=tuple(hidden))
    if name == "add-layer":
        layer = int(rng.integers(len(a.hidden)))
        return replace(a, hidden=(*a.hidden[: layer + 1], a.hidden[layer], *a.hidden[layer + 1 :]))
    if name == "remove-layer":
        layer = int(rng.integers(len(a.hidden)))
        return replace(a, hidden=a.hidden[:layer] + a.hidden[layer + 1 :])
    if name == "residual":
        return replace(a, residual=not a.residual)
    if name == "head":
        return replace(a, context=replace(c, head_dim=_step(HEADS, c.head_dim, rng)))
    if name == "concat":
        return replace(a, context=replace(c, concat=int(np.clip(c.concat + rng.choice([-1, 1]), 0, c.window))))
    raise ValueError(name)


ARCHITECTURE_MUTATIONS = (
    "context-mode", "window", "embed", "width", "add-layer", "remove-layer", "residual", "head", "concat",
)  # fmt: skip
TRAINING_MUTATIONS = ("steps", "lr", "dropout", "weight-decay")
MUTATIONS = ARCHITECTURE_MUTATIONS + TRAINING_MUTATIONS


def _applies(name: str, a: Architecture) -> bool:
    return {
        "add-layer": len(a.hidden) < MAX_LAYERS,
        "remove-layer": len(a.hidden) > 1,
        "residual": any(n_in == n_out for n_in, n_out in a.layer_dims()[1:]),
        "head": a.context.mode == "attention",
        "concat": a.context.mode == "attention",
    }.get(name, True)


def mutate_once(name: str, genome: Genome, limits: Limits, rng: np.random.Generator) -> Genome:
    a, t = genome.architecture, genome.training
    if name in ARCHITECTURE_MUTATIONS:
        return replace(genome, architecture=_mutate_architecture(name, a, rng))
    if name == "steps":
        factor = 1.5 if rng.random() < 0.5 else 1 / 1.5
        return replace(
            genome, training=replace(t, steps=int(np.clip(round(t.steps * factor), limits.min_steps, limits.max_steps)))
        )
    if name == "lr":
        return replace(genome, training=replace(t, lr=_step(LEARNING_RATES, t.lr, rng)))
    if name == "dropout":
        return replace(genome, training=replace(t, dropout=_step(DROPOUTS, t.dropout, rng)))
    return replace(genome, training=replace(t, weight_decay=_step(WEIGHT_DECAYS, t.weight_decay, rng)))


def key(genome: Genome) -> str:
    """A genome as text, to know one tried already."""
    return json.dumps(genome.to_json(), sort_keys=True)


def mutate(
    genome: Genome, limits: Limits, rng: np.random.Generator, seen: frozenset[str] = frozenset()
) -> tuple[Genome, str]:
    """A genome within the limits and not `seen`, one gene moved from `genome`, and the mutation's name."""
    for _ in range(64):
        name = str(rng.choice([m for m in MUTATIONS if _applies(m, genome.architecture)]))
        child = mutate_once(name, genome, limits, rng)
        if child == genome or key(child) in seen:
            continue
        try:
            return check(child, limits, genome.architecture.vocab_size), name
        except ProposalError:
            continue
    raise ProposalError("no mutation of the parent is new and within the limits")


def random_genome(
    vocab_size: int, limits: Limits, rng: np.random.Generator, seen: frozenset[str] = frozenset()
) -> Genome:
    """A uniform draw from the space's choices, redrawn until it fits the limits and is not `seen`."""
    for _ in range(256):
        mode = str(rng.choice(["mean", "concat", "attention"]))
        window = int(rng.choice(WINDOWS))
        embed = int(rng.choice(WIDTHS[:10]))
        context = Context(mode, window)
        if mode == "attention":
            context = Context(mode, window, int(rng.integers(0, min(window, 4) + 1)), int(rng.choice(HEADS)))
        hidden = tuple(int(rng.choice(WIDTHS)) for _ in range(int(rng.integers(1, MAX_LAYERS + 1))))
        architecture = Architecture(vocab_size, embed, context, hidden, bool(rng.random() < 0.5))
        training = Training(
            steps=int(rng.integers(limits.min_steps, limits.max_steps + 1)),
            lr=float(rng.choice(LEARNING_RATES)),
            dropout=float(rng.choice(DROPOUTS)),
            weight_decay=float(rng.choice(WEIGHT_DECAYS)),
        )
        try:
            genome = check(Genome(architecture, training), limits, vocab_size)
        except ProposalError:
            continue
        if key(genome) not in seen:
            return genome
    raise PxglError("the limits leave no room for a random candidate: raise --max-weights or --max-flops")
