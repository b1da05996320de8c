"""Version-2 pxVM programs ↔ pixels (docs/FORMATS.md §7.1, §7.7): the header and operand encoding of
engine/pxvm/program.py, version 2's opcodes and its LAST flag."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import PxglError
from ...pxi import image_size_for
from ...pxvm.opcodes import HEADER_PIXELS, MAGIC
from ...pxvm.program import FORMAT_HINT, check_size, operand_pixels, operand_value
from ..meta import TransformerSpec
from .opcodes import BY_CODE, HALT, LAST, MAX_ROW_FLOATS, OPERAND_PIXELS, TENSORS, VERSION, Kind, Op


@dataclass(frozen=True)
class Instruction:
    op: Op
    operands: tuple[int, ...]
    last: bool = False
    """LAST: runs on the run's predicted rows only."""
    pixel: int = -1

    def __getitem__(self, name: str) -> int:
        for operand, value in zip(self.op.operands, self.operands, strict=True):
            if operand.name == name:
                return value
        raise KeyError(f"{self.op.name} has no operand {name!r}")


@dataclass(frozen=True, eq=False)
class TransformerProgram:
    pixels: np.ndarray
    row_floats: int
    """S: the ACTIVATIONS floats of one row."""
    instructions: tuple[Instruction, ...]
    source: str
    spec: TransformerSpec | None = None
    """The model it was validated against; None when only decoded."""


def encode(row_floats: int, instructions: Sequence[Instruction], size: tuple[int, int] | None = None) -> np.ndarray:
    """The program's pixels: header, instructions (header pixel, two pixels an operand), (0, 0, 0) padding."""
    stream = [MAGIC, *operand_pixels(VERSION, 0, "version"), *operand_pixels(row_floats, 0, "row size")]
    for ins in instructions:
        if len(ins.operands) != len(ins.op.operands):
            raise PxglError(f"{ins.op.name} takes {len(ins.op.operands)} operands, got {len(ins.operands)}")
        stream.append((ins.op.code, len(ins.operands), LAST if ins.last else 0))
        for value in ins.operands:
            stream.extend(operand_pixels(value, 1, f"{ins.op.name} operand"))
    width, height = size if size is not None else image_size_for(3 * len(stream))
    check_size(width, height)
    if width * height < len(stream):
        raise PxglError(f"a {width}x{height} image cannot hold a program of {len(stream)} pixels")
    flat = np.zeros((width * height, 3), dtype=np.uint8)
    flat[: len(stream)] = stream
    return flat.reshape(height, width, 3)


def decode(pixels: np.ndarray, source: str) -> TransformerProgram:
    """A version-2 program's pixels parsed with §7.5's format rules 1-3: one PxglError naming the first problem."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise PxglError(
            f"{source}: a pxVM program is an RGB image, got an array of shape {getattr(pixels, 'shape', None)}"
        )
    height, width, _ = pixels.shape
    check_size(width, height, f"{source}: ", "; is it a program?")
    stream = pixels.reshape(-1, 3)
    if len(stream) < HEADER_PIXELS or tuple(int(c) for c in stream[0]) != MAGIC:
        raise PxglError(f"{source}: not a pxVM program: pixel 0 is not the magic {MAGIC} ('pxV'); {FORMAT_HINT}")
    version, row_floats = operand_value(stream[1]), operand_value(stream[2])
    if version != VERSION:
        raise PxglError(f"{source}: a version-{version} pxVM program; a version-2 (transformer) model runs version 2")
    if not 1 <= row_floats <= MAX_ROW_FLOATS:
        raise PxglError(
            f"{source}: pixel 2 declares {row_floats} floats a row; pxVM version 2 allows 1..{MAX_ROW_FLOATS}"
        )
    instructions: list[Instruction] = []
    pc = HEADER_PIXELS
    while pc < len(stream):
        code, count, flags = (int(c) for c in stream[pc])
        where = f"{source}: pixel {pc} (instruction {len(instructions)})"
        op = BY_CODE.get(code)
        if op is None:
            raise PxglError(f"{where}: unknown version-2 opcode 0x{code:02X}; {FORMAT_HINT}")
        if count != len(op.operands):
            names = ", ".join(o.name for o in op.operands) or "none"
            raise PxglError(f"{where}: {op.name} has {count} operand(s); it takes {len(op.operands)} ({names})")
        if flags & ~LAST:
            raise PxglError(f"{where}: {op.name} header has flags {flags}; version 2 defines bit 0 (LAST) only")
        end = pc + 1 + count * OPERAND_PIXELS
        if end > len(stream):
            raise PxglError(f"{where}: {op.name}'s operands run past the end of the image: the program is truncated")
        values = tuple(
            operand_value(stream[pc + 1 + i * OPERAND_PIXELS : pc + 1 + (i + 1) * OPERAND_PIXELS]) for i in range(count)
        )
        for operand, value in zip(op.operands, values, strict=True):
            if operand.kind is Kind.TENSOR and value >= len(TENSORS):
                raise PxglError(f"{where}: {op.name} names tensor {value}; version-2 tensors are 0..{len(TENSORS) - 1}")
        instructions.append(Instruction(op, values, bool(flags & LAST), pc))
        pc = end
        if op is HALT:
            break
    else:
        raise PxglError(
            f"{source}: the program ends at pixel {len(stream)} without HALT; every program must end with HALT"
        )
    junk = np.flatnonzero(stream[pc:].any(axis=1))
    if junk.size:
        p = pc + int(junk[0])
        raise PxglError(f"{source}: pixel {p} after HALT is {tuple(int(c) for c in stream[p])}, not padding (0, 0, 0)")
    return TransformerProgram(pixels, row_floats, tuple(instructions), source)
