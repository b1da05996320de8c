"""A pxVM program ↔ its pixels (docs/FORMATS.md §7): encoding, and decoding with the format's checks.

Decoding checks what the file itself must get right (magic, version, opcodes, operand counts, HALT,
size); engine.pxvm.validator adds what depends on the model the program runs with."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import PxglError
from ..pxi import image_size_for
from ..spec import MAX_IMAGE_SIDE, TENSOR_ORDER, ModelSpec
from .opcodes import (
    BY_CODE,
    HALT,
    HEADER_PIXELS,
    MAGIC,
    MAX_PROGRAM_PIXELS,
    MAX_SCRATCH,
    OPERAND_LIMIT,
    VERSION,
    Kind,
    Op,
)

FORMAT_HINT = "see docs/FORMATS.md §7, or rebuild it with `pxgl compile`"


@dataclass(frozen=True)
class Instruction:
    op: Op
    operands: tuple[int, ...]
    pixel: int = -1
    """Where its header pixel sits in the program's pixel stream (decoded programs only)."""

    def __getitem__(self, name: str) -> int:
        """The value of the operand called `name` (as named in the opcode table)."""
        for operand, value in zip(self.op.operands, self.operands, strict=True):
            if operand.name == name:
                return value
        raise KeyError(f"{self.op.name} has no operand {name!r}")


@dataclass(frozen=True, eq=False)
class Program:
    pixels: np.ndarray
    """(height, width, 3) uint8, exactly as stored."""
    scratch_size: int
    instructions: tuple[Instruction, ...]
    """Every instruction in order, HALT last."""
    source: str
    spec: ModelSpec | None = None
    """The model it was validated against; None when it was only decoded."""


def operand_pixel(value: int, what: str = "operand") -> tuple[int, int, int]:
    if not 0 <= value < OPERAND_LIMIT:
        raise PxglError(f"{what} {value} does not fit a 24-bit pixel (0..{OPERAND_LIMIT - 1})")
    return value & 0xFF, (value >> 8) & 0xFF, value >> 16


def operand_value(pixel: np.ndarray) -> int:
    return int(pixel[0]) | int(pixel[1]) << 8 | int(pixel[2]) << 16


def check_size(width: int, height: int, prefix: str = "", hint: str = "") -> None:
    """Refuse an image over the program size limit: before allocating one, and when reading one."""
    if width * height > MAX_PROGRAM_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise PxglError(
            f"{prefix}{width}x{height} image is over the pxVM program size limit of {MAX_PROGRAM_PIXELS} "
            f"pixels ({MAX_IMAGE_SIDE} a side){hint}"
        )


def encode_program(
    scratch_size: int, instructions: Sequence[Instruction], size: tuple[int, int] | None = None
) -> np.ndarray:
    """The program's pixels: header, then each instruction (header pixel + one pixel per operand), then
    (0, 0, 0) padding; `size` = (width, height), default near-square. Operands must fit 24 bits."""
    stream = [MAGIC, operand_pixel(VERSION), operand_pixel(scratch_size, "scratch size")]
    for ins in instructions:
        if len(ins.operands) != len(ins.op.operands):
            raise PxglError(f"{ins.op.name} takes {len(ins.op.operands)} operands, got {len(ins.operands)}")
        stream.append((ins.op.code, len(ins.operands), 0))
        stream.extend(operand_pixel(v, f"{ins.op.name} operand") for v in ins.operands)
    width, height = size if size is not None else image_size_for(3 * len(stream))
    check_size(width, height)
    if width * height < len(stream):
        raise PxglError(f"a {width}x{height} image cannot hold a program of {len(stream)} pixels")
    flat = np.zeros((width * height, 3), dtype=np.uint8)
    flat[: len(stream)] = stream
    return flat.reshape(height, width, 3)


def decode_program(pixels: np.ndarray, source: str) -> Program:
    """Parse program pixels, checking the format: one PxglError line naming the first problem."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        shape = getattr(pixels, "shape", None)
        raise PxglError(f"{source}: a pxVM program is an RGB image, got an array of shape {shape}")
    height, width, _ = pixels.shape
    check_size(width, height, f"{source}: ", "; is it a program?")
    stream = pixels.reshape(-1, 3)
    if len(stream) < HEADER_PIXELS:
        raise PxglError(
            f"{source}: not a pxVM program: {len(stream)} pixel(s), fewer than the {HEADER_PIXELS} of its header "
            f"(magic, version, scratch size); {FORMAT_HINT}"
        )
    first = tuple(int(c) for c in stream[0])
    if first != MAGIC:
        raise PxglError(
            f"{source}: not a pxVM program: pixel 0 is {first}, not the magic {MAGIC} ('pxV'); {FORMAT_HINT}"
        )
    version, scratch_size = operand_value(stream[1]), operand_value(stream[2])
    if version != VERSION:
        raise PxglError(f"{source}: pxVM program version {version}; this pxgl runs version {VERSION}")
    if not 1 <= scratch_size <= MAX_SCRATCH:
        raise PxglError(f"{source}: pixel 2 declares {scratch_size} scratch floats; pxVM allows 1..{MAX_SCRATCH}")

    instructions: list[Instruction] = []
    pc = HEADER_PIXELS
    while pc < len(stream):
        code, count, flags = (int(c) for c in stream[pc])
        where = f"{source}: pixel {pc} (instruction {len(instructions)})"
        op = BY_CODE.get(code)
        if op is None:
            raise PxglError(f"{where}: unknown opcode 0x{code:02X}; {FORMAT_HINT}")
        if count != len(op.operands):
            names = ", ".join(o.name for o in op.operands) or "none"
            raise PxglError(f"{where}: {op.name} has {count} operand pixel(s); it takes {len(op.operands)} ({names})")
        if flags != 0:
            raise PxglError(f"{where}: {op.name} header has flags {flags}; the flags byte is reserved and must be 0")
        if pc + 1 + count > len(stream):
            raise PxglError(f"{where}: {op.name}'s operands run past the end of the image: the program is truncated")
        values = tuple(operand_value(p) for p in stream[pc + 1 : pc + 1 + count])
        for operand, value in zip(op.operands, values, strict=True):
            if operand.kind is Kind.TENSOR and value >= len(TENSOR_ORDER):
                raise PxglError(
                    f"{where}: {op.name} names tensor {value}; tensors are 0..{len(TENSOR_ORDER) - 1} "
                    f"({', '.join(TENSOR_ORDER)})"
                )
        instructions.append(Instruction(op, values, pc))
        pc += 1 + count
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
    return Program(pixels, scratch_size, tuple(instructions), source)
