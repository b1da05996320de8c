"""The static validator: everything a program may touch is checked on the host, against the model it
will run with, before anything reaches the GPU. Straight-line code (no jumps) makes every valid program
terminate, the work limit bounds how long it runs, and these checks keep it inside its memory spaces:

    WEIGHTS  each tensor's elements (sizes from the meta)        TOKENS  t0..t(context_window-1)
    SCRATCH  s0..s(scratch_size-1), read only after written      OUTPUT  o0 (one pixel per prompt)"""

from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from ..errors import PxglError
from ..spec import ModelSpec
from .compiler import compiled_instructions
from .dispatch import check_runnable
from .opcodes import BY_NAME, OUTPUT_PIXELS, TENSOR_TABLES, Kind
from .program import Instruction, Program, decode_program

WORK_FACTOR = 4
"""A program may do at most this many times the work of the model's forward pass: straight-line code
always ends, and this bounds how long (a hostile cartridge's program cannot keep the GPU busy for hours)."""


class Space(Enum):
    WEIGHTS = "WEIGHTS"
    TOKENS = "TOKENS"
    SCRATCH = "SCRATCH"
    OUTPUT = "OUTPUT"


@dataclass(frozen=True)
class Access:
    """One instruction's reach into one memory space: elements [start, start + length)."""

    space: Space
    start: int
    length: int
    operand: str
    writes: bool = False
    tensor: str = ""
    """For WEIGHTS: the tensor's name."""


def accesses(ins: Instruction, spec: ModelSpec, version: int) -> list[Access]:
    """Every range an instruction reads or writes (docs/FORMATS.md §7, operand table)."""
    name, window, vocab = ins.op.name, spec.context_window, spec.vocab_size

    def scratch(operand: str, length: int, writes: bool = False) -> Access:
        return Access(Space.SCRATCH, ins[operand], length, operand, writes)

    def weights(start: int, length: int, operand: str = "tensor") -> Access:
        tensor = TENSOR_TABLES[version][ins[operand]]
        return Access(Space.WEIGHTS, start, length, operand, tensor=tensor)

    if name == "LOAD_WEIGHT_SLICE":
        return [weights(ins["offset"], ins["length"]), scratch("dst", ins["length"], writes=True)]
    if name == "LOAD_TOKEN":
        return [
            Access(Space.TOKENS, ins["back"], 1, "back"),
            weights(0, vocab * ins["length"]),
            scratch("dst", ins["length"], writes=True),
        ]
    if name == "POOL_TOKENS":
        return [weights(0, vocab * ins["length"]), scratch("dst", ins["length"], writes=True)]
    if name == "CONCAT_TOKENS":
        return [
            Access(Space.TOKENS, 0, ins["count"], "count"),
            weights(0, vocab * ins["length"]),
            scratch("dst", ins["count"] * ins["length"], writes=True),
        ]
    if name == "ATTEND":
        length, head = ins["length"], ins["head"]
        return [
            weights(0, vocab * length, "embed"),
            weights(0, window * length, "pos"),
            *(weights(0, length * head, operand) for operand in ("query", "key", "value")),
            scratch("tmp", head + window, writes=True),
            scratch("dst", head, writes=True),
        ]
    if name == "DOT_PRODUCT":
        return [
            scratch("src", ins["in_len"]),
            weights(ins["offset"], ins["in_len"] * ins["out_len"]),
            scratch("dst", ins["out_len"], writes=True),
        ]
    if name == "ADD_BIAS":
        return [scratch("dst", ins["length"]), scratch("src", ins["length"]), scratch("dst", ins["length"], True)]
    if name == "RELU":
        return [scratch("dst", ins["length"]), scratch("dst", ins["length"], writes=True)]
    if name == "ARGMAX":
        return [scratch("src", ins["length"]), scratch("dst", 2, writes=True)]
    if name == "STORE_PIXEL":
        return [scratch("src", 2), Access(Space.OUTPUT, ins["out"], 1, "out", writes=True)]
    if name == "HALT":
        return []
    raise AssertionError(f"no access rule for {name}")  # every opcode of the table has one above


def work(ins: Instruction, spec: ModelSpec) -> int:
    """Elements an instruction computes for one prompt: the unit of the work limit (docs/FORMATS.md §7.5)."""
    name, window = ins.op.name, spec.context_window
    if name == "DOT_PRODUCT":
        return ins["in_len"] * ins["out_len"]
    if name == "POOL_TOKENS":
        return ins["length"] * window
    if name == "CONCAT_TOKENS":
        return ins["length"] * ins["count"]
    if name == "ATTEND":
        return (2 * window + 1) * ins["length"] * ins["head"] + window * ins["head"]
    if name == "ARGMAX":
        return 2 * ins["length"]  # the maximum, then the softmax sum
    if name == "STORE_PIXEL":
        return 1
    if name == "HALT":
        return 0
    return ins["length"]


def work_limit(spec: ModelSpec) -> int:
    """WORK_FACTOR times the work of the model's own forward pass (its compiled program)."""
    return WORK_FACTOR * sum(work(ins, spec) for ins in compiled_instructions(spec))


def _bounds(access: Access, program: Program, spec: ModelSpec, where: str) -> None:
    end = access.start + access.length
    if access.space is Space.SCRATCH and end > program.scratch_size:
        raise PxglError(
            f"{where}: {access.operand} s{access.start}..s{end - 1} is outside SCRATCH "
            f"s0..s{program.scratch_size - 1}; fix the address or declare more scratch"
        )
    if access.space is Space.WEIGHTS and access.tensor not in spec.tensors:
        raise PxglError(
            f"{where}: {access.operand} names tensor {access.tensor}, which this model "
            f"({spec.architecture.describe()}) does not have"
        )
    if access.space is Space.WEIGHTS and end > spec.tensors[access.tensor].size:
        raise PxglError(
            f"{where}: reads {access.tensor} elements {access.start}..{end - 1}, outside WEIGHTS: the tensor "
            f"has {spec.tensors[access.tensor].size} elements in this model"
        )
    if access.space is Space.TOKENS and end > spec.context_window:
        raise PxglError(
            f"{where}: token t{access.start} is outside TOKENS t0..t{spec.context_window - 1} "
            f"(the model's context_window is {spec.context_window})"
        )
    if access.space is Space.OUTPUT and end > OUTPUT_PIXELS:
        raise PxglError(f"{where}: output o{access.start} is outside OUTPUT o0..o{OUTPUT_PIXELS - 1}")


def _disjoint(reach: list[Access], where: str) -> None:
    """A range an instruction writes may not overlap another operand's range that it reads or writes: the
    GPU splits an instruction across invocations, so such an overlap would race."""
    for w in (a for a in reach if a.writes and a.space is Space.SCRATCH):
        for r in (a for a in reach if a.space is Space.SCRATCH and a.operand != w.operand):
            if r.start < w.start + w.length and w.start < r.start + r.length:
                raise PxglError(
                    f"{where}: {w.operand} s{w.start}..s{w.start + w.length - 1} overlaps {r.operand} "
                    f"s{r.start}..s{r.start + r.length - 1}; an instruction's output may not overlap its other operands"
                )


def validate_program(pixels: np.ndarray, spec: ModelSpec, source: str) -> Program:
    """Decode and check a program for this model; every problem class has its own one-line PxglError.
    Runs on the host only: nothing here touches the GPU."""
    program = decode_program(pixels, source)
    written = np.zeros(program.scratch_size, dtype=bool)
    stores, total = 0, 0
    for index, ins in enumerate(program.instructions):
        where = f"{source}: pixel {ins.pixel} (instruction {index}, {ins.op.name})"
        for operand, value in zip(ins.op.operands, ins.operands, strict=True):
            if operand.kind is Kind.LENGTH and value == 0:
                raise PxglError(f"{where}: {operand.name} is 0; lengths are at least 1")
        reach = accesses(ins, spec, program.version)
        for access in reach:
            _bounds(access, program, spec, where)
        _disjoint(reach, where)
        check_runnable(ins, spec.context_window, where)
        for r in (a for a in reach if a.space is Space.SCRATCH and not a.writes):
            unwritten = np.flatnonzero(~written[r.start : r.start + r.length])
            if unwritten.size:
                raise PxglError(
                    f"{where}: reads s{r.start + int(unwritten[0])} ({r.operand}) before any instruction writes it"
                )
        for w in (a for a in reach if a.space is Space.SCRATCH and a.writes):
            written[w.start : w.start + w.length] = True
        stores += ins.op is BY_NAME["STORE_PIXEL"]
        total += work(ins, spec)
    if total > work_limit(spec):
        raise PxglError(
            f"{source}: the program computes {total} elements per prompt, over the limit of {work_limit(spec)} "
            f"({WORK_FACTOR}x the model's own forward pass)"
        )
    if stores == 0:
        raise PxglError(f"{source}: no STORE_PIXEL before HALT: the program never writes its prediction pixel")
    return replace(program, spec=spec)
