"""The pixellm forward pass (docs/FORMATS.md §3) compiled to a pxVM program, for any model a meta describes.

POOL_TOKENS embed → x;  DOT_PRODUCT x·hidden → h;  + b_hidden;  RELU h;
DOT_PRODUCT h·out → logits;  + b_out;  ARGMAX logits → (id, p);  STORE_PIXEL;  HALT"""

from dataclasses import dataclass

import numpy as np

from ..spec import TENSOR_ORDER, ModelSpec
from .opcodes import BY_NAME
from .program import Instruction, encode_program

RESULT_FLOATS = 2
"""ARGMAX writes (id, probability)."""


@dataclass(frozen=True)
class ScratchLayout:
    """Where the compiled program keeps each vector in scratch (float addresses, back to back)."""

    embed: int
    hidden: int
    hidden_bias: int
    logits: int
    out_bias: int
    result: int
    size: int


def scratch_layout(spec: ModelSpec) -> ScratchLayout:
    starts, address = [], 0
    for length in (spec.embed_dim, spec.hidden_dim, spec.hidden_dim, spec.vocab_size, spec.vocab_size, RESULT_FLOATS):
        starts.append(address)
        address += length
    return ScratchLayout(*starts, size=address)


def _ins(name: str, *operands: int) -> Instruction:
    return Instruction(BY_NAME[name], operands)


def compiled_instructions(spec: ModelSpec) -> list[Instruction]:
    s = scratch_layout(spec)
    tensor = {name: index for index, name in enumerate(TENSOR_ORDER)}
    e, h, v = spec.embed_dim, spec.hidden_dim, spec.vocab_size
    return [
        _ins("POOL_TOKENS", tensor["embed"], e, s.embed),
        _ins("DOT_PRODUCT", s.embed, e, tensor["hidden"], 0, h, s.hidden),
        _ins("LOAD_WEIGHT_SLICE", tensor["b_hidden"], 0, h, s.hidden_bias),
        _ins("ADD_BIAS", s.hidden, s.hidden_bias, h),
        _ins("RELU", s.hidden, h),
        _ins("DOT_PRODUCT", s.hidden, h, tensor["out"], 0, v, s.logits),
        _ins("LOAD_WEIGHT_SLICE", tensor["b_out"], 0, v, s.out_bias),
        _ins("ADD_BIAS", s.logits, s.out_bias, v),
        _ins("ARGMAX", s.logits, v, s.result),
        _ins("STORE_PIXEL", s.result, 0),
        _ins("HALT"),
    ]


def compile_program(spec: ModelSpec) -> np.ndarray:
    """The model's program as pixels, (height, width, 3) uint8 (a .pxi per docs/FORMATS.md §7)."""
    return encode_program(scratch_layout(spec).size, compiled_instructions(spec))
