"""pxVM assembly text ↔ program pixels (docs/FORMATS.md §7.6).

    ; a comment                       .image 7 7      (optional: the image's width and height)
    .version 1                        (optional: 0 when absent, pixellm_v0's programs)
    .scratch 2434                     POOL_TOKENS embed, 128, s0
Operands: scratch addresses s<n>, tokens t<n> (counted back from the last), outputs o<n>, tensors by
name, lengths and offsets as plain decimals."""

import re

import numpy as np

from ..errors import PxglError
from .opcodes import BY_NAME, TENSOR_SPELLING, VERSIONS, Kind
from .program import Instruction, Program, encode_program

PREFIX = {Kind.SCRATCH: "s", Kind.TOKEN: "t", Kind.OUTPUT: "o", Kind.LENGTH: "", Kind.OFFSET: ""}
SPELLING = {
    Kind.SCRATCH: "s<address>",
    Kind.TOKEN: "t<back>",
    Kind.OUTPUT: "o<index>",
    Kind.LENGTH: "a number",
    Kind.OFFSET: "a number",
}
NUMBER = re.compile(r"[0-9]+")
MAX_ECHO = 80
MAX_DIGITS = 18
"""Longer than any 48-bit operand, and far below the digits at which int() refuses to convert."""


def format_operand(kind: Kind, value: int, version: int) -> str:
    return TENSOR_SPELLING[version][value] if kind is Kind.TENSOR else f"{PREFIX[kind]}{value}"


def parse_operand(kind: Kind, text: str, where: str, version: int) -> int:
    if kind is Kind.TENSOR:
        names = TENSOR_SPELLING[version]
        if text not in names:
            raise PxglError(
                f"{where}: {short(text)} is not a version-{version} tensor; expected one of {', '.join(names)}"
            )
        return names.index(text)
    prefix = PREFIX[kind]
    if not text.startswith(prefix) or not NUMBER.fullmatch(text[len(prefix) :]):
        raise PxglError(f"{where}: {short(text)} is not {SPELLING[kind]}")
    return parse_number(text[len(prefix) :], where)


def parse_number(digits: str, where: str) -> int:
    """A decimal of NUMBER's digits, refused past MAX_DIGITS before int() converts it."""
    if len(digits) > MAX_DIGITS:
        raise PxglError(f"{where}: a number of {len(digits)} digits; at most {MAX_DIGITS} are read")
    return int(digits)


def short(text: str) -> str:
    """Assembly text quoted in a message, cut short."""
    return repr(text) if len(text) <= MAX_ECHO else repr(text[: MAX_ECHO - 1] + "…")


def disassemble(program: Program) -> str:
    """Readable assembly that `assemble` turns back into the same pixels, byte for byte."""
    height, width, _ = program.pixels.shape
    lines = [
        f"; pxVM program {program.source}: {len(program.instructions)} instructions (docs/FORMATS.md §7)",
        f".image {width} {height}",
        *([f".version {program.version}"] if program.version else []),
        f".scratch {program.scratch_size}",
    ]
    for ins in program.instructions:
        operands = zip(ins.op.operands, ins.operands, strict=True)
        args = ", ".join(format_operand(o.kind, v, program.version) for o, v in operands)
        names = ", ".join(o.name for o in ins.op.operands)
        lines.append(f"{ins.op.name:<18} {args:<34} ; @{ins.pixel:<4} {names}".rstrip())
    return "\n".join(lines) + "\n"


def assemble(text: str, source: str) -> np.ndarray:
    """Assembly text → program pixels. Checks the syntax; decode_program/validate_program check the rest."""
    scratch: int | None = None
    size: tuple[int, int] | None = None
    version: int | None = None
    lines: list[tuple[str, str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        where = f"{source}:{number}"
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if word == ".scratch":
            if scratch is not None or not NUMBER.fullmatch(rest.strip()):
                raise PxglError(f"{where}: expected one '.scratch <floats>' line")
            scratch = parse_number(rest.strip(), where)
        elif word == ".version":
            if version is not None or rest.strip() not in {str(v) for v in VERSIONS}:
                raise PxglError(f"{where}: expected one '.version <{' or '.join(map(str, VERSIONS))}>' line")
            version = int(rest)
        elif word == ".image":
            sides = rest.split()
            if size is not None or len(sides) != 2 or not all(NUMBER.fullmatch(s) for s in sides):
                raise PxglError(f"{where}: expected one '.image <width> <height>' line")
            size = (parse_number(sides[0], where), parse_number(sides[1], where))
        elif word in BY_NAME:
            lines.append((where, word, rest))
        else:
            raise PxglError(f"{where}: unknown instruction {short(word)}; known: {', '.join(BY_NAME)}")
    if scratch is None:
        raise PxglError(f"{source}: no '.scratch <floats>' line; every program declares its scratch size")
    version = version or 0
    instructions = []
    for where, word, rest in lines:
        op = BY_NAME[word]
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        if len(args) != len(op.operands):
            names = ", ".join(o.name for o in op.operands) or "none"
            raise PxglError(f"{where}: {op.name} takes {len(op.operands)} operands ({names}), got {len(args)}")
        operands = zip(op.operands, args, strict=True)
        instructions.append(
            Instruction(op, tuple(parse_operand(o.kind, a, f"{where}: {o.name}", version) for o, a in operands))
        )
    try:
        return encode_program(scratch, instructions, size, version)
    except PxglError as e:
        raise PxglError(f"{source}: {e}") from None
