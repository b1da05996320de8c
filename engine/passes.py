"""Model A: the forward pass (docs/FORMATS.md §3) as four GLSL compute passes over textures.

    tokens ──embed_pool──▶ T_embed ──hidden_relu──▶ T_hidden ──logits──▶ T_logits ──argmax──▶ prediction

Each pass is one function that binds its textures and dispatches its shader over `n` prompts."""

from dataclasses import dataclass

import numpy as np

from .executor import POISON_BYTE, POISON_FLOAT, Trace, ceil_div, model_constants, next_pow2, written_predictions
from .gl import GLBackend, Shader, Texture
from .spec import ModelSpec

WEIGHTS_UNIT = 0
TOKENS_UNIT = 1
GROUP = 64
ARGMAX_MAX_THREADS = 256
MAX_TILE = 16384
"""Prompts per tile at most: T_logits then takes 64 MiB for a 1024-token vocabulary."""


def pass_constants(spec: ModelSpec, logits_grid: int) -> dict[str, int | float]:
    return model_constants(spec) | {
        "LOGITS_GRID": logits_grid,
        "EMBED_GROUP": min(GROUP, next_pow2(spec.embed_dim)),
        "HIDDEN_GROUP": min(GROUP, next_pow2(spec.hidden_dim)),
        "LOGITS_GROUP": min(GROUP, next_pow2(spec.vocab_size)),
        "ARGMAX_THREADS": min(ARGMAX_MAX_THREADS, next_pow2(spec.vocab_size)),
    }


@dataclass(frozen=True)
class PassShaders:
    constants: dict[str, int | float]
    embed_pool: Shader
    hidden_relu: Shader
    logits: Shader
    argmax: Shader


def compile_passes(gpu: GLBackend, spec: ModelSpec) -> PassShaders:
    grid = gpu.limits.max_texture_size // spec.logits_side
    constants = pass_constants(spec, grid)
    names = ("embed_pool", "hidden_relu", "logits", "argmax")
    return PassShaders(constants, *(gpu.compile(name, constants) for name in names))


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


def allocate_activations(gpu: GLBackend, shaders: PassShaders, capacity: int) -> Activations:
    c = shaders.constants
    side, grid = int(c["LOGITS_SIDE"]), int(c["LOGITS_GRID"])
    act = Activations(
        capacity=capacity,
        tokens=gpu.uint_texture_empty(int(c["CONTEXT_WINDOW"]), capacity, 3, "token texture"),
        embed=gpu.float_image(int(c["EMBED_DIM"]), capacity, "T_embed"),
        hidden=gpu.float_image(int(c["HIDDEN_DIM"]), capacity, "T_hidden"),
        logits=gpu.float_image(min(capacity, grid) * side, ceil_div(capacity, grid) * side, "T_logits"),
        prediction=gpu.rgba8ui_image(1, capacity, "prediction"),
    )
    poison(gpu, act)
    return act


def embed_pool(gpu: GLBackend, s: PassShaders, weights: Texture, tokens: Texture, embed: Texture, n: int) -> None:
    gpu.bind_texture(weights, WEIGHTS_UNIT)
    gpu.bind_texture(tokens, TOKENS_UNIT)
    gpu.bind_image(embed, 0, read=False, write=True)
    gpu.dispatch(
        s.embed_pool, (ceil_div(int(s.constants["EMBED_DIM"]), int(s.constants["EMBED_GROUP"])), n, 1), "embed_pool"
    )


def hidden_relu(gpu: GLBackend, s: PassShaders, weights: Texture, embed: Texture, hidden: Texture, n: int) -> None:
    gpu.bind_texture(weights, WEIGHTS_UNIT)
    gpu.bind_image(embed, 0, read=True, write=False)
    gpu.bind_image(hidden, 1, read=False, write=True)
    gpu.dispatch(
        s.hidden_relu, (ceil_div(int(s.constants["HIDDEN_DIM"]), int(s.constants["HIDDEN_GROUP"])), n, 1), "hidden_relu"
    )


def logits(gpu: GLBackend, s: PassShaders, weights: Texture, hidden: Texture, logits_out: Texture, n: int) -> None:
    gpu.bind_texture(weights, WEIGHTS_UNIT)
    gpu.bind_image(hidden, 0, read=True, write=False)
    gpu.bind_image(logits_out, 1, read=False, write=True)
    gpu.dispatch(s.logits, (ceil_div(int(s.constants["VOCAB"]), int(s.constants["LOGITS_GROUP"])), n, 1), "logits")


def argmax(gpu: GLBackend, s: PassShaders, logits_in: Texture, prediction: Texture, n: int) -> None:
    gpu.bind_image(logits_in, 0, read=True, write=False)
    gpu.bind_image(prediction, 1, read=False, write=True)
    gpu.dispatch(s.argmax, (n, 1, 1), "argmax")


def forward(gpu: GLBackend, s: PassShaders, weights: Texture, act: Activations, n: int) -> None:
    """All four passes over the first n prompts of the tile, a memory barrier between each."""
    embed_pool(gpu, s, weights, act.tokens, act.embed, n)
    gpu.barrier()
    hidden_relu(gpu, s, weights, act.embed, act.hidden, n)
    gpu.barrier()
    logits(gpu, s, weights, act.hidden, act.logits, n)
    gpu.barrier()
    argmax(gpu, s, act.logits, act.prediction, n)
    gpu.barrier()


def logits_cells(texture: np.ndarray, n: int, side: int, grid: int) -> np.ndarray:
    """(n, side, side): each prompt's cell of a T_logits texture read back (layout: glsl/logits_grid.glsl)."""
    rows, cols = ceil_div(n, grid), min(n, grid)
    cells = texture[: rows * side, : cols * side].reshape(rows, side, cols, side).transpose(0, 2, 1, 3)
    return cells.reshape(rows * cols, side, side)[:n]


class PassesExecutor:
    """Model A: the four passes, with one set of activation textures per tile capacity (powers of two)."""

    def __init__(self, gpu: GLBackend, spec: ModelSpec, weights: Texture) -> None:
        self.gpu, self.spec, self.weights = gpu, spec, weights
        self.shaders = compile_passes(gpu, spec)
        grid = int(self.shaders.constants["LOGITS_GRID"])
        limits = gpu.limits
        self.max_tile = min(MAX_TILE, limits.max_texture_size, *limits.max_work_group_count[:2], grid * grid)
        self._tiles: dict[int, Activations] = {}

    def activations(self, n: int) -> Activations:
        capacity = min(next_pow2(n), self.max_tile)
        if capacity not in self._tiles:
            self._tiles[capacity] = allocate_activations(self.gpu, self.shaders, capacity)
        return self._tiles[capacity]

    def _forward(self, tails: np.ndarray) -> Activations:
        act = self.activations(len(tails))
        self.gpu.write(act.tokens, tails)
        forward(self.gpu, self.shaders, self.weights, act, len(tails))
        return act

    def run(self, tails: np.ndarray) -> np.ndarray:
        act = self._forward(tails)
        return written_predictions(self.gpu.read_uint8(act.prediction)[: len(tails)])[:, 0]

    def trace(self, tails: np.ndarray) -> Trace:
        act, n = self._forward(tails), len(tails)
        return Trace(
            tokens=self.gpu.read_uint8(act.tokens)[:n],
            embed=self.gpu.read_float(act.embed)[:n],
            hidden=self.gpu.read_float(act.hidden)[:n],
            logits=logits_cells(
                self.gpu.read_float(act.logits), n, self.spec.logits_side, int(self.shaders.constants["LOGITS_GRID"])
            ),
            prediction=written_predictions(self.gpu.read_uint8(act.prediction)[:n]),
        )

    def poison(self) -> None:
        for act in self._tiles.values():
            poison(self.gpu, act)
