"""A new run's settings (RUN_DIR/run.json, docs/FORMATS.md §13.1), checked before anything is written: the
start model's architecture and recipe become candidate 0, its split is the run's split, and the budget
is divided between screening and full training."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PxglError
from ..loading import load_model
from ..resources import is_bundled_name
from ..train import TrainConfig
from .proposers import proposer_for
from .space import Genome, Limits, ProposalError, Training, check
from .splits import corpus_splits

FINAL_SHARE = 0.3
"""The budget's part kept for the finalists' full training."""


@dataclass(frozen=True)
class Request:
    """What `pxgl evolve` was asked for (what it was not asked for takes these defaults)."""

    budget: int = 20_000
    population: int = 8
    batch: int = 4
    seed: int = 0
    start: str = "pixellm_v0"
    proposer: str = "evolution"
    proposer_timeout: float = 60.0
    files: tuple[Path, ...] = ()
    finalists: int = 3
    max_time: float | None = None
    max_weights: int = 2_000_000
    max_flops: int = 2_000_000
    max_steps: int | None = None
    batch_size: int = 512


def start_training(evaluation: dict[str, Any], steps: int) -> Training:
    """The recipe the start model's meta records (a v0 meta records only its learning rate)."""
    recipe = evaluation.get("training", {})
    return Training(
        steps=steps,
        lr=float(recipe.get("lr", evaluation.get("lr", TrainConfig.lr))),
        dropout=float(recipe.get("dropout", 0.0)),
        weight_decay=float(recipe.get("weight_decay", 0.0)),
    )


def new_settings(request: Request) -> dict[str, Any]:
    r = request
    if r.budget < 1:
        raise PxglError(f"--budget {r.budget}: give a number of training steps, at least 1")
    counts = {"--population": r.population, "--batch": r.batch, "--finalists": r.finalists}
    counts |= {"--max-weights": r.max_weights, "--max-flops": r.max_flops, "--batch-size": r.batch_size}
    counts |= {"--max-steps": r.max_steps if r.max_steps is not None else 1}
    for option, value in counts.items():
        if value < 1:
            raise PxglError(f"{option} {value}: give at least 1")
    if r.max_time is not None and r.max_time <= 0:
        raise PxglError("--max-time: give a positive time, e.g. 30m")
    proposer_for(r.proposer, r.proposer_timeout)
    final = round(r.budget * FINAL_SHARE)
    screening = r.budget - final
    # full training is at least twice the longest screening
    max_steps = r.max_steps or max(1, min(screening // (2 * r.population), final // (2 * r.finalists)))
    if final < r.finalists or screening < max_steps:
        raise PxglError(
            f"--budget {r.budget}: too small for {r.finalists} finalist(s) and a screening of candidates of "
            f"{max_steps} steps; give a larger --budget"
        )
    if final // r.finalists < max_steps:  # only where --max-steps was given
        raise PxglError(
            f"--max-steps {max_steps}: full training gives each of {r.finalists} finalist(s) {final // r.finalists} "
            f"steps, fewer than a screening may take; give --max-steps {final // r.finalists} or less, fewer "
            "--finalists, or a larger --budget"
        )
    limits = Limits(r.max_weights, r.max_flops, max(1, max_steps // 8), max_steps)
    model = load_model(r.start)
    evaluation = model.spec.eval
    start = Genome(model.spec.architecture, start_training(evaluation, max_steps))
    try:
        check(start, limits, start.architecture.vocab_size)
    except ProposalError as e:
        raise PxglError(f"--start {r.start}: {e}; raise --max-weights or --max-flops") from None
    split = evaluation.get("split", {})
    splits = {
        "seed": int(split.get("seed", evaluation.get("seed", 0))),
        "heldout_fraction": float(split.get("heldout_fraction", TrainConfig.heldout_fraction)),
        "validation_fraction": float(split.get("validation_fraction", TrainConfig.validation_fraction)),
    }
    if r.files:  # read once here, so a corpus no candidate could train on is refused before the run starts
        corpus_splits(r.files, splits)
    return {
        "seed": r.seed,
        "budget": r.budget,
        "final_share": FINAL_SHARE,
        "population": r.population,
        "batch": r.batch,
        "finalists": r.finalists,
        "proposer": r.proposer,
        "proposer_timeout": r.proposer_timeout,
        "max_time": r.max_time,
        "start": r.start if is_bundled_name(r.start) else str(Path(r.start).resolve()),
        "start_genome": start.to_json(),
        "files": [str(f.resolve()) for f in r.files],
        "split": splits,
        "batch_size": r.batch_size,
        "limits": limits.to_json(),
    }
