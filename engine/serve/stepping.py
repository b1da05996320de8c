"""Generation a step at a time, as the server consumes it, and stop strings matched as bytes arrive.

Adapter until `Engine.stream` and `pxgl.generation.StopScanner` reach main: the steps are the columns of one
`Engine.generate` (so they arrive together, at the end), a sampled batch runs as one generate per run of
prompts whose draw rows count 0, 1, 2, … (Engine.generate draws row r for its r-th prompt), and top
alternatives are refused. Switching is `generation_steps = Engine.stream` and importing StopScanner."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..engine import Engine
from ..errors import PxglError
from ..generation import Sampling


@dataclass(frozen=True)
class GeneratedStep:
    step: int
    tokens: np.ndarray
    """(B,) int64."""
    logprobs: np.ndarray
    """(B,) float32."""
    top_ids: np.ndarray
    """(B, K) int64: the K likeliest tokens of the step, likeliest first."""
    top_logprobs: np.ndarray
    """(B, K) float32."""


def generation_steps(
    engine: Engine,
    rows: Sequence[Sequence[int]],
    steps: int,
    sampling: Sampling,
    *,
    top_logprobs: int = 0,
    draw_rows: Sequence[int],
) -> Iterator[GeneratedStep]:
    if top_logprobs:
        raise PxglError("logprobs: this server returns each chosen token's log p only; ask for logprobs 0")
    runs = [0] if sampling.temperature == 0 else [r for r, row in enumerate(draw_rows) if row == 0]
    ends = [*runs[1:], len(rows)]
    tokens, logprobs = [], []
    for start, end in zip(runs, ends, strict=True):
        if list(draw_rows[start:end]) != list(range(end - start)) and sampling.temperature > 0:
            raise PxglError("draw rows must count 0, 1, 2, … within each request")
        generation = engine.generate(rows[start:end], steps, sampling)
        tokens.append(generation.tokens)
        logprobs.append(generation.logprobs)
    all_tokens, all_logprobs = np.concatenate(tokens), np.concatenate(logprobs)
    none_ids, none_logprobs = np.empty((len(rows), 0), np.int64), np.empty((len(rows), 0), np.float32)
    for step in range(steps):
        yield GeneratedStep(step, all_tokens[:, step], all_logprobs[:, step], none_ids, none_logprobs)


class StopScanner:
    """Stop strings over bytes that arrive a token at a time (OpenAI semantics, docs/FORMATS.md §11): `feed`
    returns what can be emitted now, holding back a tail that may begin a stop string; once a stop string
    is found everything from its first byte on is dropped and `stopped` is set."""

    def __init__(self, stops: Sequence[bytes]) -> None:
        self.stops = list(stops)
        self.stopped = False
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        if self.stopped:
            return b""
        text = self._held + data
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.stopped, self._held = True, b""
            return text[: min(found)]
        held = max((n for stop in self.stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
        self._held = text[len(text) - held :]
        return text[: len(text) - held]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held
