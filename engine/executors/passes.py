"""Model A: the forward pass (docs/FORMATS.md §3) as four GLSL compute passes over textures.

    tokens ──embed_pool──▶ T_embed ──hidden_relu──▶ T_hidden ──logits──▶ T_logits ──argmax──▶ prediction

Each pass is a declared kernel and one function that runs it over `n` prompts."""

from dataclasses import dataclass

import numpy as np

from ..constants import MAX_TILE, POISON_BYTE
from ..gl import GLBackend, GpuProgram, Texture
from ..kernel import TOP1_SOFTMAX_SHARED, Constants, Image, Kernel, Sampler
from ..spec import ModelSpec
from .protocol import (
    POISON_FLOAT,
    ExecutorInputs,
    Trace,
    ceil_div,
    check_no_tuning,
    largest_pow2_group,
    model_constants,
    next_pow2,
    written_predictions,
)

EMBED_POOL = Kernel("embed_pool", (Sampler("weights"), Sampler("tokens"), Image("embed_out", "r32f", write=True)))
HIDDEN_RELU = Kernel(
    "hidden_relu",
    (Sampler("weights"), Image("embed_in", "r32f", read=True), Image("hidden_out", "r32f", write=True)),
)
LOGITS = Kernel(
    "logits", (Sampler("weights"), Image("hidden_in", "r32f", read=True), Image("logits_out", "r32f", write=True))
)
ARGMAX = Kernel(
    "argmax",
    (Image("logits_in", "r32f", read=True), Image("prediction_out", "rgba8ui", write=True)),
    shared=TOP1_SOFTMAX_SHARED,
)
GROUP = 64
ARGMAX_MAX_THREADS = 256


@dataclass(frozen=True)
class PassPrograms:
    constants: Constants
    embed_pool: GpuProgram
    hidden_relu: GpuProgram
    logits: GpuProgram
    argmax: GpuProgram


def compile_passes(gpu: GLBackend, spec: ModelSpec) -> PassPrograms:
    grid = gpu.limits.max_texture_size // spec.logits_side
    constants = model_constants(spec) | {"LOGITS_GRID": grid}

    def group(n: int, most: int = GROUP) -> int:
        return largest_pow2_group(gpu, min(most, next_pow2(n)))

    return PassPrograms(
        constants,
        gpu.program(EMBED_POOL, constants, group(spec.embed_dim)),
        gpu.program(HIDDEN_RELU, constants, group(spec.hidden_dim)),
        gpu.program(LOGITS, constants, group(spec.vocab_size)),
        gpu.program(ARGMAX, constants, group(spec.vocab_size, ARGMAX_MAX_THREADS)),
    )


@dataclass(frozen=True)
class Activations:
    """The textures of one tile: room for `capacity` prompts, one row (or logits cell) each."""

    capacity: int
    tokens: Texture
    embed: Texture
    hidden: Texture
    logits: Texture
    prediction: Texture


def poison(gpu: GLBackend, act: Activations) -> None:
    for texture in (act.embed, act.hidden, act.logits):
        gpu.write(texture, np.full((texture.height, texture.width), POISON_FLOAT, dtype=np.float32))
    gpu.write(act.prediction, np.full((act.capacity, 1, 4), POISON_BYTE, dtype=np.uint8))


def allocate_activations(gpu: GLBackend, programs: PassPrograms, capacity: int) -> Activations:
    c = programs.constants
    side, grid = c.int("LOGITS_SIDE"), c.int("LOGITS_GRID")
    act = Activations(
        capacity=capacity,
        tokens=gpu.uint_texture_empty(c.int("CONTEXT_WINDOW"), capacity, 3, "token texture"),
        embed=gpu.float_image(c.int("EMBED_DIM"), capacity, "T_embed"),
        hidden=gpu.float_image(c.int("HIDDEN_DIM"), capacity, "T_hidden"),
        logits=gpu.float_image(min(capacity, grid) * side, ceil_div(capacity, grid) * side, "T_logits"),
        prediction=gpu.rgba8ui_image(1, capacity, "prediction"),
    )
    poison(gpu, act)
    return act


def columns(program: GpuProgram, width: int, n: int) -> tuple[int, int, int]:
    """Work groups covering `width` columns for each of `n` prompts."""
    return ceil_div(width, program.local_size), n, 1


def embed_pool(gpu: GLBackend, p: PassPrograms, weights: Texture, tokens: Texture, embed: Texture, n: int) -> None:
    groups = columns(p.embed_pool, p.constants.int("EMBED_DIM"), n)
    gpu.run(p.embed_pool, groups, weights=weights, tokens=tokens, embed_out=embed)


def hidden_relu(gpu: GLBackend, p: PassPrograms, weights: Texture, embed: Texture, hidden: Texture, n: int) -> None:
    groups = columns(p.hidden_relu, p.constants.int("HIDDEN_DIM"), n)
    gpu.run(p.hidden_relu, groups, weights=weights, embed_in=embed, hidden_out=hidden)


def logits(gpu: GLBackend, p: PassPrograms, weights: Texture, hidden: Texture, logits_out: Texture, n: int) -> None:
    groups = columns(p.logits, p.constants.int("VOCAB"), n)
    gpu.run(p.logits, groups, weights=weights, hidden_in=hidden, logits_out=logits_out)


def argmax(gpu: GLBackend, p: PassPrograms, logits_in: Texture, prediction: Texture, n: int) -> None:
    gpu.run(p.argmax, (n, 1, 1), logits_in=logits_in, prediction_out=prediction)


def forward(gpu: GLBackend, p: PassPrograms, weights: Texture, act: Activations, n: int) -> None:
    """All four passes over the first n prompts of the tile, a memory barrier between each."""
    embed_pool(gpu, p, weights, act.tokens, act.embed, n)
    gpu.barrier()
    hidden_relu(gpu, p, weights, act.embed, act.hidden, n)
    gpu.barrier()
    logits(gpu, p, weights, act.hidden, act.logits, n)
    gpu.barrier()
    argmax(gpu, p, act.logits, act.prediction, n)
    gpu.barrier()


def logits_cells(texture: np.ndarray, n: int, side: int, grid: int) -> np.ndarray:
    """(n, side, side): each prompt's cell of a T_logits texture read back (layout: glsl/logits_grid.glsl)."""
    rows, cols = ceil_div(n, grid), min(n, grid)
    cells = texture[: rows * side, : cols * side].reshape(rows, side, cols, side).transpose(0, 2, 1, 3)
    return cells.reshape(rows * cols, side, side)[:n]


class PassesExecutor:
    """Model A: the four passes, with one set of activation textures per tile capacity (powers of two)."""

    def __init__(self, gpu: GLBackend, inputs: ExecutorInputs, tuning: None = None) -> None:
        check_no_tuning("passes", tuning)
        self.gpu, self.spec, self.weights = gpu, inputs.spec, inputs.weights
        self.programs = compile_passes(gpu, self.spec)
        grid = self.programs.constants.int("LOGITS_GRID")
        limits = gpu.limits
        self.max_tile = min(MAX_TILE, limits.max_texture_size, *limits.max_work_group_count[:2], grid * grid)
        self._tiles: dict[int, Activations] = {}

    def activations(self, n: int) -> Activations:
        capacity = min(next_pow2(n), self.max_tile)
        if capacity not in self._tiles:
            self._tiles[capacity] = allocate_activations(self.gpu, self.programs, capacity)
        return self._tiles[capacity]

    def _forward(self, tails: np.ndarray) -> Activations:
        act = self.activations(len(tails))
        self.gpu.write(act.tokens, tails)
        forward(self.gpu, self.programs, self.weights, act, len(tails))
        return act

    def run(self, tails: np.ndarray) -> np.ndarray:
        act = self._forward(tails)
        return written_predictions(self.gpu.read_uint8(act.prediction)[: len(tails)])[:, 0]

    def trace(self, tails: np.ndarray) -> Trace:
        act, n = self._forward(tails), len(tails)
        grid = self.programs.constants.int("LOGITS_GRID")
        return Trace(
            tokens=self.gpu.read_uint8(act.tokens)[:n],
            embed=self.gpu.read_float(act.embed)[:n],
            hidden=self.gpu.read_float(act.hidden)[:n],
            logits=logits_cells(self.gpu.read_float(act.logits), n, self.spec.logits_side, grid),
            prediction=written_predictions(self.gpu.read_uint8(act.prediction)[:n]),
        )

    def poison(self) -> None:
        for act in self._tiles.values():
            poison(self.gpu, act)

    def close(self) -> None:
        for act in self._tiles.values():
            for texture in (act.tokens, act.embed, act.hidden, act.logits, act.prediction):
                texture.release()
        self._tiles.clear()
