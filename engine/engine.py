"""The reusable engine: load a model once (weights upload, shader compile), then predict many times.

Batches of any size are cut into tiles that respect the GPU's texture and work-group limits."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import PxglError
from engine.gl import GLBackend, gl_errors
from engine.model import Model
from engine.passes import Activations, allocate_activations, compile_passes, forward, next_pow2, poison
from engine.pxi import encode_tokens, token_lengths, token_tails

MAX_TILE = 16384
"""Prompts per tile at most: T_logits then takes 64 MiB for a 1024-token vocabulary."""


@dataclass(frozen=True)
class Trace:
    """The textures of one GPU run, read back as they are (for tests and visuals)."""

    tokens: np.ndarray
    """(B, context_window, 3) uint8: the token texture the GPU read (each prompt's last tokens)."""
    embed: np.ndarray
    """(B, embed_dim) float32: T_embed."""
    hidden: np.ndarray
    """(B, hidden_dim) float32: T_hidden."""
    logits: np.ndarray
    """(B, side, side) float32: each prompt's cell of T_logits; cells past the vocabulary are unwritten."""
    prediction: np.ndarray
    """(B, 1, 3) uint8: the prediction pixels."""


class Engine:
    def __init__(self, model: Model, gpu: GLBackend | None = None, device: int | None = None) -> None:
        self.model = model
        self.spec = model.spec
        self.gpu = gpu if gpu is not None else GLBackend(device)
        self.weights = self.gpu.uint_texture(model.weights, f"{model.source}: weight texture")
        self.shaders = compile_passes(self.gpu, self.spec)
        limits = self.gpu.limits
        grid = int(self.shaders.constants["LOGITS_GRID"])
        self.max_tile = min(MAX_TILE, limits.max_texture_size, *limits.max_work_group_count[:2], grid * grid)
        self._tiles: dict[int, Activations] = {}

    def poison(self) -> None:
        """Refill every activation texture with garbage (NaN, 0xEE bytes): tests call it before a run so
        that a pixel the run does not write cannot match by luck."""
        for act in self._tiles.values():
            poison(self.gpu, act)

    def _activations(self, n: int) -> Activations:
        capacity = min(next_pow2(n), self.max_tile)
        if capacity not in self._tiles:
            self._tiles[capacity] = allocate_activations(self.gpu, self.shaders, capacity)
        return self._tiles[capacity]

    def _tiles_of(self, token_pixels: np.ndarray, source: str) -> Iterator[tuple[int, int, Activations]]:
        """Validate the token texture, then yield (start, n, activations) with each tile's forward pass run."""
        if token_pixels.ndim != 3 or token_pixels.shape[2] != 3 or 0 in token_pixels.shape:
            raise PxglError(f"{source}: expected an RGB token texture, got an array of shape {token_pixels.shape}")
        side = self.gpu.limits.max_texture_size
        if token_pixels.shape[1] > side:
            raise PxglError(f"{source}: {token_pixels.shape[1]} tokens wide, past this GPU's texture limit of "
                            f"{side}; split the prompt or keep its last {self.spec.context_window} tokens")
        lengths = token_lengths(token_pixels, self.spec.vocab_size, source)
        tails = token_tails(token_pixels, lengths, self.spec.context_window)
        for start in range(0, len(tails), self.max_tile):
            chunk = tails[start : start + self.max_tile]
            act = self._activations(len(chunk))
            self.gpu.write(act.tokens, chunk)
            forward(self.gpu, self.shaders, self.weights, act, len(chunk))
            yield start, len(chunk), act

    def predict(
        self, token_pixels: np.ndarray, source: str = "token texture", on_tile: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for a token texture of B rows (docs/FORMATS.md §4, §5).
        `on_tile(n)` is called after each tile of n prompts (for progress bars)."""
        out = np.empty((token_pixels.shape[0], 1, 3), dtype=np.uint8)
        with gl_errors(source):
            for start, n, act in self._tiles_of(token_pixels, source):
                out[start : start + n, 0] = self.gpu.read_uint8(act.prediction)[:n, 0, :3]
                if on_tile is not None:
                    on_tile(n)
        return out

    def predict_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        return self.predict(encode_tokens(rows, self.spec.vocab_size), "prompts")

    def trace(self, token_pixels: np.ndarray, source: str = "token texture") -> Trace:
        """Run the prompts and read back every intermediate texture (one tile's worth of prompts at most)."""
        if token_pixels.shape[0] > self.max_tile:
            raise ValueError(f"trace takes at most {self.max_tile} prompts")
        with gl_errors(source):
            ((_, n, act),) = self._tiles_of(token_pixels, source)
            return Trace(
                tokens=self.gpu.read_uint8(act.tokens)[:n],
                embed=self.gpu.read_float(act.embed)[:n],
                hidden=self.gpu.read_float(act.hidden)[:n],
                logits=logits_cells(self.gpu.read_float(act.logits), n, self.spec.logits_side,
                                    int(self.shaders.constants["LOGITS_GRID"])),
                prediction=self.gpu.read_uint8(act.prediction)[:n, :, :3],
            )


def logits_cells(texture: np.ndarray, n: int, side: int, grid: int) -> np.ndarray:
    """(n, side, side): each prompt's cell of a T_logits texture read back (layout: glsl/logits_grid.glsl)."""
    rows, cols = -(-n // grid), min(n, grid)
    cells = texture[: rows * side, : cols * side].reshape(rows, side, cols, side).transpose(0, 2, 1, 3)
    return cells.reshape(rows * cols, side, side)[:n]
