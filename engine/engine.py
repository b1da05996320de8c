"""The reusable engine: load a model once (weights upload, shader compile), then predict many times.

It validates token textures, cuts each prompt to its last `context_window` tokens and feeds tiles that
respect the GPU's limits to an executor: Model A's four passes ("passes") or another registered one."""

import importlib
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .errors import PxglError
from .executor import Executor, Trace
from .gl import GLBackend, gl_errors
from .model import Model
from .pxi import TOKEN_MARK, encode_tokens, token_lengths, token_tails

if TYPE_CHECKING:
    from .pxvm.program import Program

EXECUTORS = {
    "passes": ".passes:PassesExecutor",
    "pxvm": ".pxvm.executor:PxvmExecutor",
    "fused": ".fused:FusedExecutor",
}
"""Executor name → "module:class"; each class is built as cls(gpu, spec, weights_texture)."""


@runtime_checkable
class LeanExecutor(Protocol):
    """An executor that also takes token ids directly, skipping the token texture (predict_one/_array)."""

    def run_one(self, ids: list[int]) -> np.ndarray:
        """A prompt's last ≤ context_window ids, each checked 0 ≤ id < vocab → its (3,) prediction pixel."""
        ...

    def run_ids(self, ids: np.ndarray) -> tuple[np.ndarray, int | None]:
        """(n, L) uint16 ids, not yet checked against the vocabulary → (n, 3) prediction pixels of each
        row's last context_window ids, and the first prompt holding an id ≥ vocab_size anywhere in its row
        (the pixels are then void) or None."""
        ...


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
            self.executor: Executor = getattr(importlib.import_module(module, __package__), name)(
                self.gpu, self.spec, self.weights, **options
            )
        self._lean = isinstance(self.executor, LeanExecutor)

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

    def predict_one(self, ids: Sequence[int]) -> np.ndarray:
        """The prediction pixel, (3,) uint8, of one prompt of token ids: the lean single-prompt path (a list
        of ids needs only its range checked; a LeanExecutor then skips the token texture)."""
        try:
            ids = [operator.index(t) for t in ids]
        except TypeError:
            raise PxglError("prompt: token ids must be integers") from None
        vocab = self.spec.vocab_size
        if not ids or min(ids) < 0 or max(ids) >= vocab:
            encode_tokens([ids], vocab)  # raises the error naming the first bad position
        if not self._lean:
            return self.predict(encode_tokens([ids], vocab), "prompt")[0, 0]
        with gl_errors("prompt"):
            return self.executor.run_one(ids[-self.spec.context_window :])

    def predict_array(self, ids: np.ndarray, source: str = "prompts") -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for a (B, L) integer array of token ids: B prompts of L
        tokens each. A LeanExecutor gets the ids as they are and checks them against the vocabulary."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or 0 in ids.shape or ids.dtype.kind not in "iu":
            raise PxglError(f"{source}: expected a (prompts, tokens) integer array, got {ids.dtype} {ids.shape}")
        window, vocab = self.spec.context_window, self.spec.vocab_size
        if not self._lean:
            out_of_range = (ids < 0) | (ids >= vocab)
            if out_of_range.any():
                self._refuse(ids, np.flatnonzero(out_of_range)[0], source)
            pixels = np.stack([ids % 256, ids // 256, np.full_like(ids, TOKEN_MARK)], axis=-1).astype(np.uint8)
            return self.predict(pixels, source)
        if ids.dtype != np.uint16:  # uint16 ids need only the executor's vocabulary check
            out_of_range = (ids < 0) | (ids >= vocab)
            if out_of_range.any():
                self._refuse(ids, np.flatnonzero(out_of_range)[0], source)
            ids = ids[:, -window:].astype(np.uint16)
        parts = []
        step = self.executor.max_tile
        with gl_errors(source):
            for start in range(0, len(ids), step):
                chunk = ids[start : start + step]
                pixels, refused = self.executor.run_ids(chunk)
                if refused is not None:
                    row = chunk[refused]
                    position = int(np.flatnonzero(row >= vocab)[0])
                    self._refuse(chunk, refused * chunk.shape[1] + position, source, row_offset=start)
                parts.append(pixels)
        return (parts[0] if len(parts) == 1 else np.concatenate(parts))[:, None, :]

    def _refuse(self, ids: np.ndarray, flat: int, source: str, row_offset: int = 0) -> None:
        row, position = divmod(int(flat), ids.shape[1])
        raise PxglError(
            f"{source}: row {row + row_offset}, position {position}: token id {ids[row, position]} is outside "
            f"0..{self.spec.vocab_size - 1}; re-encode the prompt with this model's tokenizer"
        )

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
