"""A pxVM program ↔ its pixels (docs/FORMATS.md §7): encoding, and decoding with the format's checks.

Decoding checks what the file itself must get right (magic, version, opcodes, operand counts, HALT,
size); engine.pxvm.validator adds what depends on the model the program runs with."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import PxglError
from ..pxi import image_size_for
from ..spec import MAX_IMAGE_SIDE, ModelSpec
from .opcodes import (
    BY_CODE,
    HALT,
    HEADER_PIXELS,
    MAGIC,
    MAX_PROGRAM_PIXELS,
    MAX_SCRATCH,
    OPERAND_PIXELS,
    TENSOR_SPELLING,
    VERSION,
    VERSIONS,
    Kind,
    Op,
)

FORMAT_HINT = "see docs/FORMATS.md §7, or rebuild it with `pxgl compile`"
TRANSFORMER_VERSION = 2
"""Programs of version-2 models (docs/FORMATS.md §7.7): engine/transformer/pxvm/ reads them."""


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
    version: int
    scratch_size: int
    instructions: tuple[Instruction, ...]
    """Every instruction in order, HALT last."""
    source: str
    spec: ModelSpec | None = None
    """The model it was validated against; None when it was only decoded."""


def operand_pixels(value: int, version: int, what: str = "operand") -> list[tuple[int, int, int]]:
    """A number as the version's operand pixels: little-endian bytes, three to a pixel."""
    pixels = OPERAND_PIXELS[version]
    if not 0 <= value < 1 << (24 * pixels):
        raise PxglError(f"{what} {value} does not fit a version-{version} operand (0..{(1 << (24 * pixels)) - 1})")
    data = value.to_bytes(3 * pixels, "little")
    return [(data[i], data[i + 1], data[i + 2]) for i in range(0, 3 * pixels, 3)]


def operand_value(pixels: np.ndarray) -> int:
    """The number one operand's pixels hold (as many pixels as its version gives it)."""
    return int.from_bytes(bytes(np.asarray(pixels, dtype=np.uint8).reshape(-1).tolist()), "little")


def check_size(width: int, height: int, prefix: str = "", hint: str = "") -> None:
    """Refuse an image over the program size limit: before allocating one, and when reading one."""
    if width * height > MAX_PROGRAM_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise PxglError(
            f"{prefix}{width}x{height} image is over the pxVM program size limit of {MAX_PROGRAM_PIXELS} "
            f"pixels ({MAX_IMAGE_SIDE} a side){hint}"
        )


def encode_program(
    scratch_size: int,
    instructions: Sequence[Instruction],
    size: tuple[int, int] | None = None,
    version: int = 0,
) -> np.ndarray:
    """The program's pixels: header, then each instruction (header pixel + its operands' pixels), then
    (0, 0, 0) padding; `size` = (width, height), default near-square. Operands must fit the version
    (version 0 unless told: a program without a version is pixellm_v0's kind)."""
    stream = [MAGIC, *operand_pixels(version, 0, "version"), *operand_pixels(scratch_size, 0, "scratch size")]
    for ins in instructions:
        if len(ins.operands) != len(ins.op.operands):
            raise PxglError(f"{ins.op.name} takes {len(ins.op.operands)} operands, got {len(ins.operands)}")
        if ins.op.since > version:
            raise PxglError(f"{ins.op.name} needs a version-{ins.op.since} program, this one is version {version}")
        stream.append((ins.op.code, len(ins.operands), 0))
        for value in ins.operands:
            stream.extend(operand_pixels(value, version, f"{ins.op.name} operand"))
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
    if version == TRANSFORMER_VERSION:
        raise PxglError(f"{source}: a version-2 pxVM program runs on a version-2 (transformer) model only")
    if version not in VERSIONS:
        raise PxglError(f"{source}: pxVM program version {version}; this pxgl runs versions 0 to {VERSION}")
    if not 1 <= scratch_size <= MAX_SCRATCH[version]:
        raise PxglError(
            f"{source}: pixel 2 declares {scratch_size} scratch floats; pxVM version {version} allows "
            f"1..{MAX_SCRATCH[version]}"
        )
    width_of = OPERAND_PIXELS[version]
    tensors = TENSOR_SPELLING[version]

    instructions: list[Instruction] = []
    pc = HEADER_PIXELS
    while pc < len(stream):
        code, count, flags = (int(c) for c in stream[pc])
        where = f"{source}: pixel {pc} (instruction {len(instructions)})"
        op = BY_CODE.get(code)
        if op is None:
            raise PxglError(f"{where}: unknown opcode 0x{code:02X}; {FORMAT_HINT}")
        if op.since > version:
            raise PxglError(f"{where}: {op.name} is a version-{op.since} opcode; this program is version {version}")
        if count != len(op.operands):
            names = ", ".join(o.name for o in op.operands) or "none"
            raise PxglError(f"{where}: {op.name} has {count} operand(s); it takes {len(op.operands)} ({names})")
        if flags != 0:
            raise PxglError(f"{where}: {op.name} header has flags {flags}; the flags byte is reserved and must be 0")
        end = pc + 1 + count * width_of
        if end > len(stream):
            raise PxglError(f"{where}: {op.name}'s operands run past the end of the image: the program is truncated")
        values = tuple(operand_value(stream[pc + 1 + i * width_of : pc + 1 + (i + 1) * width_of]) for i in range(count))
        for operand, value in zip(op.operands, values, strict=True):
            if operand.kind is Kind.TENSOR and value >= len(tensors):
                raise PxglError(
                    f"{where}: {op.name} names tensor {value}; version-{version} tensors are 0..{len(tensors) - 1} "
                    f"({', '.join(tensors)})"
                )
        instructions.append(Instruction(op, values, pc))
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
    return Program(pixels, version, scratch_size, tuple(instructions), source)
