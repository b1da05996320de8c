"""Version-2 pxVM assembly text ↔ program pixels (docs/FORMATS.md §7.6, §7.7): §7.6's text with `.version 2`,
`.scratch S` the floats of a row, a cache layer written `l<n>`, tensors by their §14.2 names and LAST as
`.last` after an instruction's name."""

from ...errors import PxglError
from ...pxvm.asm import NUMBER, parse_number, short
from .opcodes import BY_NAME, TENSOR_INDEX, TENSORS, VERSION, Kind
from .program import Instruction, TransformerProgram, encode

PREFIX = {Kind.SCRATCH: "s", Kind.OUTPUT: "o", Kind.LAYER: "l", Kind.LENGTH: ""}
SPELLING = {Kind.SCRATCH: "s<address>", Kind.OUTPUT: "o<index>", Kind.LAYER: "l<layer>", Kind.LENGTH: "a number"}
LAST_SUFFIX = ".last"


def disassemble(program: TransformerProgram) -> str:
    """Readable assembly that `assemble` turns back into the same pixels, byte for byte."""
    height, width, _ = program.pixels.shape
    lines = [
        f"; pxVM program {program.source}: {len(program.instructions)} instructions (docs/FORMATS.md §7.7)",
        f".image {width} {height}",
        f".version {VERSION}",
        f".scratch {program.row_floats}",
    ]
    for ins in program.instructions:
        operands = zip(ins.op.operands, ins.operands, strict=True)
        args = ", ".join(TENSORS[v] if o.kind is Kind.TENSOR else f"{PREFIX[o.kind]}{v}" for o, v in operands)
        name = ins.op.name + (LAST_SUFFIX if ins.last else "")
        lines.append(f"{name:<18} {args}".rstrip())
    return "\n".join(lines) + "\n"


def is_version_2(text: str) -> bool:
    """Whether assembly text declares `.version 2` (its directives are read before any instruction)."""
    return any(line.split(";", 1)[0].split() == [".version", str(VERSION)] for line in text.splitlines())


def _operand(kind: Kind, text: str, where: str) -> int:
    if kind is Kind.TENSOR:
        if text not in TENSOR_INDEX:
            raise PxglError(f"{where}: {short(text)} is not a version-2 tensor (docs/FORMATS.md §7.7's table)")
        return TENSOR_INDEX[text]
    prefix = PREFIX[kind]
    if not text.startswith(prefix) or not NUMBER.fullmatch(text[len(prefix) :]):
        raise PxglError(f"{where}: {short(text)} is not {SPELLING[kind]}")
    return parse_number(text[len(prefix) :], where)


def assemble(text: str, source: str):
    """Version-2 assembly text → program pixels; decode/validate check the rest."""
    row_floats: int | None = None
    size: tuple[int, int] | None = None
    instructions = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        where = f"{source}:{number}"
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if word == ".version":
            continue  # is_version_2 chose this assembler
        if word == ".scratch":
            if row_floats is not None or not NUMBER.fullmatch(rest.strip()):
                raise PxglError(f"{where}: expected one '.scratch <floats a row>' line")
            row_floats = parse_number(rest.strip(), where)
        elif word == ".image":
            sides = rest.split()
            if size is not None or len(sides) != 2 or not all(NUMBER.fullmatch(s) for s in sides):
                raise PxglError(f"{where}: expected one '.image <width> <height>' line")
            size = (parse_number(sides[0], where), parse_number(sides[1], where))
        elif word.removesuffix(LAST_SUFFIX) in BY_NAME:
            op = BY_NAME[word.removesuffix(LAST_SUFFIX)]
            args = [a.strip() for a in rest.split(",")] if rest.strip() else []
            if len(args) != len(op.operands):
                names = ", ".join(o.name for o in op.operands) or "none"
                raise PxglError(f"{where}: {op.name} takes {len(op.operands)} operands ({names}), got {len(args)}")
            values = tuple(_operand(o.kind, a, f"{where}: {o.name}") for o, a in zip(op.operands, args, strict=True))
            instructions.append(Instruction(op, values, word.endswith(LAST_SUFFIX)))
        else:
            raise PxglError(f"{where}: unknown version-2 instruction {short(word)}; known: {', '.join(BY_NAME)}")
    if row_floats is None:
        raise PxglError(f"{source}: no '.scratch <floats>' line; every program declares its row's floats")
    try:
        return encode(row_floats, instructions, size)
    except PxglError as e:
        raise PxglError(f"{source}: {e}") from None
