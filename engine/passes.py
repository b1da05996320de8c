"""Model A: the forward pass (docs/FORMATS.md §3) as four GLSL compute passes over textures.

    tokens ──embed_pool──▶ T_embed ──hidden_relu──▶ T_hidden ──logits──▶ T_logits ──argmax──▶ prediction

Each pass is one function that binds its textures and dispatches its shader over `n` prompts."""

from dataclasses import dataclass

import numpy as np

from engine.gl import GLBackend, Shader, Texture
from engine.spec import ModelSpec

WEIGHTS_UNIT = 0
TOKENS_UNIT = 1
GROUP = 64
ARGMAX_MAX_THREADS = 256


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def shader_constants(spec: ModelSpec, logits_grid: int) -> dict[str, int | float]:
    """Everything the shaders need to know about the model, from its meta; nothing is hard-coded in GLSL."""
    constants: dict[str, int | float] = {
        "VOCAB": spec.vocab_size,
        "EMBED_DIM": spec.embed_dim,
        "HIDDEN_DIM": spec.hidden_dim,
        "CONTEXT_WINDOW": spec.context_window,
        "WEIGHTS_WIDTH": spec.image_width,
        "LOGITS_SIDE": spec.logits_side,
        "LOGITS_GRID": logits_grid,
        "EMBED_GROUP": min(GROUP, next_pow2(spec.embed_dim)),
        "HIDDEN_GROUP": min(GROUP, next_pow2(spec.hidden_dim)),
        "LOGITS_GROUP": min(GROUP, next_pow2(spec.vocab_size)),
        "ARGMAX_THREADS": min(ARGMAX_MAX_THREADS, next_pow2(spec.vocab_size)),
    }
    for tensor in spec.tensors.values():
        prefix = tensor.name.upper()
        constants[f"{prefix}_OFFSET"] = tensor.offset
        constants[f"{prefix}_SCALE"] = tensor.scale
        constants[f"{prefix}_ZERO"] = float(tensor.zero_point)
    return constants


@dataclass(frozen=True)
class PassShaders:
    constants: dict[str, int | float]
    embed_pool: Shader
    hidden_relu: Shader
    logits: Shader
    argmax: Shader


def compile_passes(gpu: GLBackend, spec: ModelSpec) -> PassShaders:
    grid = gpu.limits.max_texture_size // spec.logits_side
    constants = shader_constants(spec, grid)
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


POISON_FLOAT = np.float32(np.nan)
POISON_BYTE = 0xEE
"""Fresh activations hold garbage on purpose, so a pixel that a pass fails to write cannot pass a check."""


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
    gpu.dispatch(s.embed_pool, (ceil_div(int(s.constants["EMBED_DIM"]), int(s.constants["EMBED_GROUP"])), n, 1),
                 "embed_pool")


def hidden_relu(gpu: GLBackend, s: PassShaders, weights: Texture, embed: Texture, hidden: Texture, n: int) -> None:
    gpu.bind_texture(weights, WEIGHTS_UNIT)
    gpu.bind_image(embed, 0, read=True, write=False)
    gpu.bind_image(hidden, 1, read=False, write=True)
    gpu.dispatch(s.hidden_relu,
                 (ceil_div(int(s.constants["HIDDEN_DIM"]), int(s.constants["HIDDEN_GROUP"])), n, 1), "hidden_relu")


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
