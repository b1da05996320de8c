"""The pxVM instruction set as data (docs/FORMATS.md §7): the one table every pxVM tool reads."""

from dataclasses import dataclass
from enum import Enum, auto


class Kind(Enum):
    """What an operand names."""

    SCRATCH = auto()
    """A float address in the prompt's scratch vector memory."""
    TENSOR = auto()
    """A tensor of the model, by its index in the meta's tensor order (engine.spec.TENSOR_ORDER)."""
    TOKEN = auto()
    """A token position counted back from the prompt's last token (0 = the last token)."""
    OUTPUT = auto()
    """A prediction pixel of the prompt."""
    LENGTH = auto()
    """An element count, at least 1."""
    OFFSET = auto()
    """An element offset into a tensor."""


@dataclass(frozen=True)
class Operand:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Op:
    code: int
    name: str
    operands: tuple[Operand, ...]


def _op(code: int, name: str, operands: str) -> Op:
    """An opcode from "name:KIND name:KIND ..."."""
    pairs = (word.split(":") for word in operands.split())
    return Op(code, name, tuple(Operand(operand, Kind[kind]) for operand, kind in pairs))


OPS = (  # what each does: docs/FORMATS.md §7.4, defined by tests/pxvm_reference.py
    _op(0x01, "LOAD_WEIGHT_SLICE", "tensor:TENSOR offset:OFFSET length:LENGTH dst:SCRATCH"),
    _op(0x02, "LOAD_TOKEN", "back:TOKEN tensor:TENSOR length:LENGTH dst:SCRATCH"),
    _op(0x03, "DOT_PRODUCT", "src:SCRATCH in_len:LENGTH tensor:TENSOR offset:OFFSET out_len:LENGTH dst:SCRATCH"),
    _op(0x04, "ADD_BIAS", "dst:SCRATCH src:SCRATCH length:LENGTH"),
    _op(0x05, "RELU", "dst:SCRATCH length:LENGTH"),
    _op(0x06, "ARGMAX", "src:SCRATCH length:LENGTH dst:SCRATCH"),
    _op(0x07, "STORE_PIXEL", "src:SCRATCH out:OUTPUT"),
    _op(0x08, "POOL_TOKENS", "tensor:TENSOR length:LENGTH dst:SCRATCH"),
    _op(0xFF, "HALT", ""),
)
BY_CODE = {op.code: op for op in OPS}
BY_NAME = {op.name: op for op in OPS}
HALT = BY_NAME["HALT"]
MAX_OPERANDS = max(len(op.operands) for op in OPS)

MAGIC = (0x70, 0x78, 0x56)
"""Pixel 0 of every program: "pxV" in ASCII."""
VERSION = 0
HEADER_PIXELS = 3
"""Magic, version, scratch size; the first instruction is pixel 3."""
OPERAND_LIMIT = 1 << 24
"""An operand is one pixel: R + 256 G + 65536 B."""
MAX_PROGRAM_PIXELS = 1 << 16
"""Size limit of a program image: bounds the GPU's walk and rejects stray images (a weights .pxi) at once."""
MAX_SCRATCH = 1 << 20
"""Floats of scratch a program may declare (4 MiB a prompt); the largest model a meta allows needs < 2^18."""
OUTPUT_PIXELS = 1
"""The OUTPUT space: one prediction pixel per prompt (docs/FORMATS.md §5)."""
