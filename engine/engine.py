"""The reusable engine: load a model once (weights upload, shader compile), then predict many times.

It validates token textures, cuts each prompt to its last `context_window` tokens and feeds tiles that
respect the GPU's limits to an executor: Model A's four passes ("passes") or another registered one."""

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import PxglError
from engine.executor import Executor, Trace
from engine.gl import GLBackend, gl_errors
from engine.model import Model
from engine.pxi import encode_tokens, token_lengths, token_tails

if TYPE_CHECKING:
    from engine.pxvm.program import Program

EXECUTORS = {"passes": "engine.passes:PassesExecutor", "pxvm": "engine.pxvm.executor:PxvmExecutor"}
"""Executor name → "module:class"; each class is built as cls(gpu, spec, weights_texture)."""


class Engine:
    def __init__(
        self,
        model: Model,
        gpu: GLBackend | None = None,
        device: int | None = None,
        executor: str = "passes",
        program: "Program | None" = None,
    ) -> None:
        """`program`: a validated pxVM program for the "pxvm" executor (default: the model's compiled one)."""
        if executor not in EXECUTORS:
            raise PxglError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        if program is not None and executor != "pxvm":
            raise PxglError(f"{program.source}: a pxVM program runs on the pxvm executor, not {executor!r}")
        self.model = model
        self.spec = model.spec
        self.gpu = gpu if gpu is not None else GLBackend(device)
        module, name = EXECUTORS[executor].split(":")
        with gl_errors(model.source):
            self.weights = self.gpu.uint_texture(model.weights, f"{model.source}: weight texture")
            options = {} if program is None else {"program": program}
            self.executor: Executor = getattr(importlib.import_module(module), name)(
                self.gpu, self.spec, self.weights, **options
            )

    def _tails(self, token_pixels: np.ndarray, source: str) -> np.ndarray:
        """Validate a token texture and cut each row to its last context_window tokens."""
        if token_pixels.ndim != 3 or token_pixels.shape[2] != 3 or 0 in token_pixels.shape:
            raise PxglError(f"{source}: expected an RGB token texture, got an array of shape {token_pixels.shape}")
        side = self.gpu.limits.max_texture_size
        if token_pixels.shape[1] > side:
            raise PxglError(
                f"{source}: {token_pixels.shape[1]} tokens wide, past this GPU's texture limit of "
                f"{side}; split the prompt or keep its last {self.spec.context_window} tokens"
            )
        lengths = token_lengths(token_pixels, self.spec.vocab_size, source)
        return token_tails(token_pixels, lengths, self.spec.context_window)

    def predict(
        self, token_pixels: np.ndarray, source: str = "token texture", on_tile: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for a token texture of B rows (docs/FORMATS.md §4, §5).
        `on_tile(n)` is called after each tile of n prompts (for progress bars)."""
        tails = self._tails(token_pixels, source)
        out = np.empty((len(tails), 1, 3), dtype=np.uint8)
        step = self.executor.max_tile
        with gl_errors(source):
            for start in range(0, len(tails), step):
                chunk = tails[start : start + step]
                out[start : start + len(chunk), 0] = self.executor.run(chunk)
                if on_tile is not None:
                    on_tile(len(chunk))
        return out

    def predict_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        return self.predict(encode_tokens(rows, self.spec.vocab_size), "prompts")

    def trace(self, token_pixels: np.ndarray, source: str = "token texture") -> Trace:
        """Run the prompts and read back every intermediate texture (one tile's worth of prompts at most)."""
        tails = self._tails(token_pixels, source)
        if len(tails) > self.executor.max_tile:
            raise PxglError(f"{source}: trace takes at most {self.executor.max_tile} prompts, got {len(tails)}")
        with gl_errors(source):
            return self.executor.trace(tails)

    def poison(self) -> None:
        """Refill the executor's textures with garbage (tests call it before a checked run)."""
        self.executor.poison()
