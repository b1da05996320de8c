"""Generation settings and results (docs/FORMATS.md §11): how a token is chosen, how many, where a row stops.
The GPU part is engine/executors/generation.py."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PxglError

MAX_NEW_TOKENS = 4096
"""Most tokens one generation makes per prompt (§11)."""
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Sampling:
    """How each step chooses its token: greedy at temperature 0, else a seeded draw (§11). `top_k` None or
    ≥ vocab_size keeps every token; `top_p` 1 keeps every token."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise PxglError(f"temperature must be a finite number ≥ 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise PxglError(f"top-k must be ≥ 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise PxglError(f"top-p must lie in (0, 1], got {self.top_p}")
        if not 0 <= self.seed <= MAX_SEED:
            raise PxglError(f"seed must lie in 0..{MAX_SEED}, got {self.seed}")


def check_steps(steps: int) -> int:
    if not 1 <= steps <= MAX_NEW_TOKENS:
        raise PxglError(f"-n: tokens to generate must lie in 1..{MAX_NEW_TOKENS}, got {steps}")
    return steps


def check_stops(stops: Sequence[str]) -> list[bytes]:
    """Stop strings as the UTF-8 bytes they are matched as; an empty one would stop every row at once."""
    if any(stop == "" for stop in stops):
        raise PxglError("--stop: a stop string may not be empty")
    return [stop.encode("utf-8") for stop in stops]


@dataclass(frozen=True)
class Generation:
    """What `Engine.generate` returns: every generated token of every prompt (all steps ran)."""

    tokens: np.ndarray
    """(B, N) int64 ids, row r prompt r's generated tokens in order."""
    logprobs: np.ndarray
    """(B, N) float32: log p of each generated token under the model (temperature 1, §11); NaN from an
    executor that keeps no logits (pxvm)."""


def stop_row(token_bytes: Sequence[bytes], stops: Sequence[bytes]) -> tuple[int, bytes]:
    """One row's tokens (as bytes) cut at the earliest stop string (§11): the count of tokens wholly before
    it and the bytes before it. No stop: every token and all the bytes."""
    text = b"".join(token_bytes)
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    if not found:
        return len(token_bytes), text
    end = min(found)
    kept, used = 0, 0
    while kept < len(token_bytes) and used + len(token_bytes[kept]) <= end:
        used += len(token_bytes[kept])
        kept += 1
    return kept, text[:end]
