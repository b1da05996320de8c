"""The static validator of version-2 programs (docs/FORMATS.md §7.7): every range an instruction touches is
checked on the host against the model it runs with, before anything reaches the GPU. The operands' sizes
are the model's own shapes, so every instruction splits within §3.1's loop limit by construction."""

from dataclasses import dataclass, replace

import numpy as np

from ...errors import PxglError
from ..meta import TransformerSpec
from .compiler import compiled_instructions
from .opcodes import OPERAND_LIMIT, TENSORS, Kind
from .program import Instruction, TransformerProgram, decode

WORK_FACTOR = 4
"""A program may do at most this many times the work of the model's compiled program (§7.5 rule 9)."""


@dataclass(frozen=True)
class Reach:
    """One operand's ACTIVATIONS range [start, start + length) of a row."""

    operand: str
    start: int
    length: int
    writes: bool = False


def tensor_shapes(ins: Instruction, spec: TransformerSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(operand, the shape its tensor must have) for every tensor operand."""
    a, name = spec.architecture, ins.op.name
    if name == "EMBED":
        return [("tensor", (a.vocab_size, ins["width"]))]
    if name == "ADD_POSITION":
        return [("tensor", (a.context_length, ins["width"]))]
    if name in ("LAYERNORM", "RMSNORM"):
        return [(operand, (ins["width"],)) for operand in ("weight", "bias")[: 2 if name == "LAYERNORM" else 1]]
    if name == "MATVEC":
        return [("tensor", (ins["out_len"], ins["in_len"]))]
    if name == "ADD_VECTOR":
        return [("tensor", (ins["length"],))]
    return []


def reaches(ins: Instruction, spec: TransformerSpec) -> list[Reach]:
    """Every ACTIVATIONS range an instruction reads or writes (a row's floats)."""
    a, name = spec.architecture, ins.op.name
    hd, kd = a.heads * a.head_dim, a.kv_heads * a.head_dim
    if name in ("EMBED", "ADD_POSITION"):
        reads = [Reach("dst", ins["dst"], ins["width"])] if name == "ADD_POSITION" else []
        return [*reads, Reach("dst", ins["dst"], ins["width"], True)]
    if name in ("LAYERNORM", "RMSNORM"):
        return [Reach("src", ins["src"], ins["width"]), Reach("dst", ins["dst"], ins["width"], True)]
    if name == "MATVEC":
        return [Reach("src", ins["src"], ins["in_len"]), Reach("dst", ins["dst"], ins["out_len"], True)]
    if name == "ADD_VECTOR":
        return [Reach("dst", ins["dst"], ins["length"]), Reach("dst", ins["dst"], ins["length"], True)]
    if name == "ROPE":
        length = ins["heads"] * a.head_dim
        return [Reach("dst", ins["dst"], length), Reach("dst", ins["dst"], length, True)]
    if name == "ATTEND":
        reads = [Reach("q", ins["q"], hd), Reach("k", ins["k"], kd), Reach("v", ins["v"], kd)]
        return [*reads, Reach("dst", ins["dst"], hd, True)]
    if name in ("GELU_TANH", "GELU"):
        return [Reach("src", ins["src"], ins["length"]), Reach("dst", ins["dst"], ins["length"], True)]
    if name == "SILU_GATE":
        n = ins["length"]
        return [Reach("gate", ins["gate"], n), Reach("up", ins["up"], n), Reach("dst", ins["dst"], n, True)]
    if name == "ADD":
        n = ins["length"]
        return [Reach("dst", ins["dst"], n), Reach("src", ins["src"], n), Reach("dst", ins["dst"], n, True)]
    if name == "PREDICT":
        return [Reach("src", ins["src"], ins["length"])]
    return []  # HALT


def work(ins: Instruction, spec: TransformerSpec) -> int:
    a, name = spec.architecture, ins.op.name
    if name == "MATVEC":
        return ins["in_len"] * ins["out_len"]
    if name == "ATTEND":
        return 2 * a.heads * a.head_dim * a.context_length + 2 * a.kv_heads * a.head_dim
    if name == "PREDICT":
        return 2 * ins["length"]
    if name in ("LAYERNORM", "RMSNORM"):
        return 3 * ins["width"]
    if name == "ROPE":
        return ins["heads"] * a.head_dim
    if name in ("EMBED", "ADD_POSITION"):
        return ins["width"]
    return ins["length"] if name != "HALT" else 0


def _check_model(ins: Instruction, spec: TransformerSpec, where: str) -> None:
    """Rule 5's model side: tensors present and shaped as the instruction says, the cache layer, RoPE, PREDICT."""
    a = spec.architecture
    for operand, shape in tensor_shapes(ins, spec):
        name = TENSORS[ins[operand]]
        tensor = spec.tensors.get(name)
        if tensor is None:
            raise PxglError(f"{where}: {operand} names {name}, which this model does not have")
        if tensor.shape != shape:
            raise PxglError(
                f"{where}: {operand} {name} is {list(tensor.shape)}; this instruction reads it as {list(shape)}"
            )
    if ins.op.name == "ROPE":
        if a.rope is None:
            raise PxglError(f"{where}: this model has learned positions, not rope")
        if ins["heads"] not in (a.heads, a.kv_heads):
            raise PxglError(
                f"{where}: heads is {ins['heads']}; this model's query or key/value heads are {a.heads}, {a.kv_heads}"
            )
    if ins.op.name == "ATTEND" and ins["layer"] >= a.layers:
        raise PxglError(f"{where}: cache layer l{ins['layer']} is outside l0..l{a.layers - 1}")
    if ins.op.name == "PREDICT" and (ins["length"] != a.vocab_size or ins["out"] != 0):
        raise PxglError(f"{where}: PREDICT reads the {a.vocab_size} logits of the vocabulary into o0")


def _check_row(reach: list[Reach], row_floats: int, where: str) -> None:
    """Rule 5's ACTIVATIONS side and rule 6 (no written range overlaps another operand's)."""
    for r in reach:
        if r.start + r.length > row_floats:
            raise PxglError(
                f"{where}: {r.operand} s{r.start}..s{r.start + r.length - 1} is outside ACTIVATIONS "
                f"s0..s{row_floats - 1}; fix the address or declare more floats a row"
            )
    for w in (r for r in reach if r.writes):
        for r in (r for r in reach if r.operand != w.operand):
            if r.start < w.start + w.length and w.start < r.start + r.length:
                raise PxglError(
                    f"{where}: {w.operand} s{w.start}..s{w.start + w.length - 1} overlaps {r.operand} "
                    f"s{r.start}..s{r.start + r.length - 1}; an instruction's output may not overlap its other operands"
                )


def validate_transformer_program(pixels: np.ndarray, spec: TransformerSpec, source: str) -> TransformerProgram:
    """Decode and check a version-2 program for this model; every problem one line. Host only."""
    program = decode(pixels, source)
    every = np.zeros(program.row_floats, dtype=bool)  # written on every row
    predicted = np.zeros(program.row_floats, dtype=bool)  # written on the predicted rows
    predicts, total = 0, 0
    for index, ins in enumerate(program.instructions):
        where = f"{source}: pixel {ins.pixel} (instruction {index}, {ins.op.name}{'.last' if ins.last else ''})"
        for operand, value in zip(ins.op.operands, ins.operands, strict=True):
            if operand.kind is Kind.LENGTH and value == 0:
                raise PxglError(f"{where}: {operand.name} is 0; lengths are at least 1")
            if value >= OPERAND_LIMIT:
                raise PxglError(f"{where}: {operand.name} is {value}; version-2 operands are below 2^24")
        _check_model(ins, spec, where)
        reach = reaches(ins, spec)
        _check_row(reach, program.row_floats, where)
        if ins.op.name == "ATTEND" and ins.last:
            raise PxglError(f"{where}: ATTEND stores every row's keys and values in the cache; it cannot be LAST")
        if ins.op.name == "PREDICT" and not ins.last:
            raise PxglError(f"{where}: PREDICT writes the predicted rows' outputs; it must be LAST")
        known = every | predicted if ins.last else every
        for r in (r for r in reach if not r.writes):
            unwritten = np.flatnonzero(~known[r.start : r.start + r.length])
            if unwritten.size:
                rows = "" if ins.last else " on every row (a LAST one writes the predicted rows only)"
                first = r.start + int(unwritten[0])
                raise PxglError(f"{where}: reads s{first} ({r.operand}) before any instruction writes it{rows}")
        for w in (r for r in reach if r.writes):
            (predicted if ins.last else every)[w.start : w.start + w.length] = True
        predicts += ins.op.name == "PREDICT"
        total += work(ins, spec)
    limit = WORK_FACTOR * sum(work(ins, spec) for ins in compiled_instructions(spec.architecture))
    if total > limit:
        raise PxglError(
            f"{source}: the program computes {total} elements a row, over the limit of {limit} "
            f"({WORK_FACTOR}x the model's own forward pass)"
        )
    if predicts == 0:
        raise PxglError(f"{source}: no PREDICT before HALT: the program never writes its prediction")
    return replace(program, spec=spec)
