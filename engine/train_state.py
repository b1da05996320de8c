"""A training run's state and its checkpoint (docs/FORMATS.md §15): what `pxgl train` saves every N steps and
on Ctrl-C, and what `pxgl train --resume` continues from to the bytes of the uninterrupted run."""

import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from .checkpoint import read_checkpoint, write_checkpoint
from .errors import PxglError
from .network import Params
from .tokenizer import Tokenizer

GROUPS = ("params", "adam_m", "adam_v", "best")
"""The float32 copies of every tensor a checkpoint holds: the weights, AdamW's moments, the best weights."""
RNG_STATE_KEYS = {"bit_generator", "state", "has_uint32", "uinteger"}


@dataclass
class TrainState:
    """What training changes as it goes: with the run's config and text, the rest of the run follows from
    it exactly."""

    params: Params
    rng: np.random.Generator
    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)
    step: int = 0
    """Adam steps done."""
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """The current epoch's shuffled train positions."""
    best_loss: float = math.inf
    best_step: int = 0
    best_params: Params = field(default_factory=dict)
    stale: int = 0
    """Validations since the best one (early stopping)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    """Training time of the sessions before this one."""

    def __post_init__(self) -> None:
        for moments in (self.m, self.v):
            if not moments:
                moments.update({k: np.zeros_like(p) for k, p in self.params.items()})
        if not self.best_params:
            self.best_params = {k: p.copy() for k, p in self.params.items()}


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the state after the last whole step is saved at `path`."""

    def __init__(self, path: Path, step: int, total: int) -> None:
        super().__init__(f"interrupted after step {step:,} of {total:,}")
        self.path, self.step, self.total = path, step, total


class Checkpoint:
    """A run's checkpoint file, saved with what resuming needs besides the state: the run's config, its
    tokenizer and the digest of its text. While entered (a context manager, in the main thread), Ctrl-C
    asks for a save after the current step (`requested`); a second Ctrl-C stops at once."""

    def __init__(self, path: Path, every: int, config: dict[str, Any], tokenizer: Tokenizer, text_sha256: str):
        self.path, self.every = path, every
        self.head = {"config": config, "text_sha256": text_sha256}
        self.tokenizer = tokenizer
        self.requested = False
        self.began = time.monotonic()
        self._previous: Any = None

    def save(self, state: TrainState, planned_steps: int) -> None:
        arrays = {f"{group}/{name}": tensor for group, tensors in zip(GROUPS, tensors_of(state), strict=True)
                  for name, tensor in tensors.items()}  # fmt: skip
        arrays["order"] = state.order
        manifest = self.head | {
            "tokenizer": self.tokenizer.to_json(),
            "step": state.step,
            "planned_steps": planned_steps,
            "seconds": round(state.seconds + time.monotonic() - self.began, 3),
            "rng": state.rng.bit_generator.state,
            "best": {"loss": state.best_loss if state.best_step else None, "step": state.best_step},
            "stale": state.stale,
            "history": state.history,
        }
        write_checkpoint(self.path, manifest, arrays)

    def __enter__(self) -> "Checkpoint":
        self.began = time.monotonic()
        # a process started with SIGINT ignored (a script's background job) keeps ignoring it, as Python does
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def text_sha256(documents: tuple[list[str], ...]) -> str:
    """The digest of the train, validation and held-out documents: a resumed run's text is its own."""
    digest = hashlib.sha256()
    for split in documents:
        digest.update(f"{len(split)}\n".encode())
        for document in split:
            data = document.encode("utf-8", "surrogatepass")
            digest.update(f"{len(data)}\n".encode() + data)
    return digest.hexdigest()


def tensors_of(state: TrainState) -> tuple[Params, ...]:
    return state.params, state.m, state.v, state.best_params


@dataclass(frozen=True)
class Saved:
    """A checkpoint read back: the run's config record, its tokenizer and text digest, and the state."""

    config: dict[str, Any]
    tokenizer: Tokenizer
    text_sha256: str
    state: TrainState
    planned_steps: int


def load(path: Path, shapes: Callable[[dict[str, Any]], dict[str, tuple[int, ...]]]) -> Saved:
    """A checkpoint, every part checked: `shapes(config)` gives the tensors the run's architecture has (it
    refuses a config it cannot train)."""
    manifest, arrays = read_checkpoint(path)
    where = f"{path}: checkpoint"
    config, digest = manifest.get("config"), manifest.get("text_sha256")
    if not isinstance(config, dict) or not isinstance(digest, str):
        raise PxglError(f"{where}: its manifest lacks the run's config or its text's sha256")
    expected = shapes(config)
    names = {f"{group}/{name}" for group in GROUPS for name in expected} | {"order"}
    if set(arrays) != names:
        raise PxglError(f"{where}: its arrays are not the tensors of the run's architecture")
    for group in GROUPS:
        for name, shape in expected.items():
            array = arrays[f"{group}/{name}"]
            if array.dtype != np.float32 or array.shape != shape or not np.isfinite(array).all():
                raise PxglError(f"{where}: {group}/{name} must be finite float32 {list(shape)}")
    tokenizer = Tokenizer.loads(json.dumps(manifest.get("tokenizer")), f"{where}: its tokenizer")
    step, planned = manifest.get("step"), manifest.get("planned_steps")
    best, stale, history = manifest.get("best"), manifest.get("stale"), manifest.get("history")
    seconds = manifest.get("seconds")
    if not (
        all(is_int(n) and n >= 0 for n in (step, planned, stale))
        and isinstance(best, dict)
        and is_int(best.get("step"))
        and (best.get("loss") is None or isinstance(best.get("loss"), float | int))
        and valid_history(history)
        and isinstance(seconds, float | int)
        and seconds >= 0
    ):
        raise PxglError(f"{where}: its step, planned steps, best, stale, history or seconds are not valid")
    state = TrainState(
        params={name: arrays[f"params/{name}"] for name in expected},
        rng=rng_of(manifest.get("rng"), where),
        m={name: arrays[f"adam_m/{name}"] for name in expected},
        v={name: arrays[f"adam_v/{name}"] for name in expected},
        step=step,
        order=arrays["order"],
        best_loss=math.inf if best["loss"] is None else float(best["loss"]),
        best_step=best["step"],
        best_params={name: arrays[f"best/{name}"] for name in expected},
        stale=stale,
        history=history,
        seconds=float(seconds),
    )
    return Saved(config, tokenizer, digest, state, planned)


def valid_history(history: Any) -> bool:
    """Validation scores as fit() records them: step, top1, perplexity, bits_per_byte."""
    return isinstance(history, list) and all(
        isinstance(entry, dict)
        and set(entry) == {"step", "top1", "perplexity", "bits_per_byte"}
        and is_int(entry["step"])
        and all(isinstance(entry[key], float | int) for key in ("top1", "perplexity", "bits_per_byte"))
        for entry in history
    )


def rng_of(state: Any, where: str) -> np.random.Generator:
    """numpy's PCG64 generator in the state a checkpoint saved."""
    rng = np.random.default_rng(0)
    if not (isinstance(state, dict) and set(state) == RNG_STATE_KEYS and state["bit_generator"] == "PCG64"):
        raise PxglError(f"{where}: its rng must be numpy's PCG64 state")
    inner = state["state"]
    if not (
        isinstance(inner, dict)
        and set(inner) == {"state", "inc"}
        and all(is_int(n) and 0 <= n < 1 << 128 for n in inner.values())
        and is_int(state["has_uint32"])
        and state["has_uint32"] in (0, 1)
        and is_int(state["uinteger"])
        and 0 <= state["uinteger"] < 1 << 32
    ):
        raise PxglError(f"{where}: its rng state is not a valid PCG64 state")
    rng.bit_generator.state = state
    return rng


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
