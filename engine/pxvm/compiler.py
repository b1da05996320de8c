"""The pixellm forward pass (docs/FORMATS.md §3) compiled to a pxVM program, for any model a meta describes.

A version-0 model (pixellm_v0) compiles to the version-0 program it always had (eleven instructions);
every other family member to a version-1 program:

    context  POOL_TOKENS | CONCAT_TOKENS | CONCAT_TOKENS + ATTEND      → x
    layer l  DOT_PRODUCT · weight;  + bias;  RELU;  (+ input, residual) → h_l
    logits   DOT_PRODUCT · out.weight;  + out.bias;  ARGMAX;  STORE_PIXEL;  HALT"""

from dataclasses import dataclass

import numpy as np

from ..spec import ModelSpec
from .opcodes import BY_NAME, TENSOR_TABLES
from .program import Instruction, encode_program

RESULT_FLOATS = 2
"""ARGMAX writes (id, probability)."""


@dataclass(frozen=True)
class ScratchLayout:
    """Where the compiled program keeps each vector in scratch (float addresses, back to back)."""

    context: int
    """x, the first layer's input."""
    hidden: tuple[int, ...]
    """h_l, each hidden layer's output."""
    logits: int
    result: int
    size: int


def program_version(spec: ModelSpec) -> int:
    """The version `pxgl compile` writes for a model: 0 for version-0 models, else 1."""
    return 0 if spec.version == 0 else 1


def scratch_layout(spec: ModelSpec) -> ScratchLayout:
    """x, then each layer's output followed by its bias, the logits followed by theirs, the result, and for
    an attention context ATTEND's temporary (the query and the scores). For pixellm_v0 this is the layout
    its program always had (FORMATS §7.6)."""
    address = spec.context_dim
    hidden = []
    for width in spec.hidden:
        hidden.append(address)
        address += 2 * width
    logits = address
    address += 2 * spec.vocab_size
    result = address
    address += RESULT_FLOATS
    if spec.context.mode == "attention":
        address += spec.context.head_dim + spec.context_window
    return ScratchLayout(0, tuple(hidden), logits, result, address)


def _ins(name: str, *operands: int) -> Instruction:
    return Instruction(BY_NAME[name], operands)


def compiled_instructions(spec: ModelSpec) -> list[Instruction]:
    s = scratch_layout(spec)
    tensor = {name: index for index, name in enumerate(TENSOR_TABLES[program_version(spec)])}
    e, v, c = spec.embed_dim, spec.vocab_size, spec.context
    program = []
    if c.mode == "mean":
        program.append(_ins("POOL_TOKENS", tensor["embed"], e, s.context))
    elif c.mode == "concat":
        program.append(_ins("CONCAT_TOKENS", tensor["embed"], e, c.window, s.context))
    else:
        if c.concat:
            program.append(_ins("CONCAT_TOKENS", tensor["embed"], e, c.concat, s.context))
        heads = [tensor[n] for n in ("embed", "attn.pos", "attn.query", "attn.key", "attn.value")]
        tmp = s.result + RESULT_FLOATS
        program.append(_ins("ATTEND", *heads, e, c.head_dim, tmp, s.context + c.concat * e))
    source, width_in = s.context, spec.context_dim
    for layer, width in enumerate(spec.hidden):
        out, bias = s.hidden[layer], s.hidden[layer] + width
        program += [
            _ins("DOT_PRODUCT", source, width_in, tensor[f"layer{layer}.weight"], 0, width, out),
            _ins("LOAD_WEIGHT_SLICE", tensor[f"layer{layer}.bias"], 0, width, bias),
            _ins("ADD_BIAS", out, bias, width),
            _ins("RELU", out, width),
        ]
        if spec.architecture.is_residual(layer):
            program.append(_ins("ADD_BIAS", out, source, width))
        source, width_in = out, width
    program += [
        _ins("DOT_PRODUCT", source, width_in, tensor["out.weight"], 0, v, s.logits),
        _ins("LOAD_WEIGHT_SLICE", tensor["out.bias"], 0, v, s.logits + v),
        _ins("ADD_BIAS", s.logits, s.logits + v, v),
        _ins("ARGMAX", s.logits, v, s.result),
        _ins("STORE_PIXEL", s.result, 0),
        _ins("HALT"),
    ]
    return program


def compile_program(spec: ModelSpec) -> np.ndarray:
    """The model's program as pixels, (height, width, 3) uint8 (a .pxi per docs/FORMATS.md §7)."""
    version = program_version(spec)
    return encode_program(scratch_layout(spec).size, compiled_instructions(spec), version=version)
