"""The pxVM instruction set as data (docs/FORMATS.md §7): the one table every pxVM tool reads.

Two versions share it: version 0 (pixellm_v0's programs: one-pixel operands, five tensors) and version 1
(two-pixel operands, the family's tensor table, CONCAT_TOKENS and ATTEND)."""

from dataclasses import dataclass
from enum import Enum, auto


class Kind(Enum):
    """What an operand names."""

    SCRATCH = auto()
    """A float address in the prompt's scratch vector memory."""
    TENSOR = auto()
    """A tensor of the model, by its index in the version's tensor table (TENSOR_TABLES)."""
    TOKEN = auto()
    """A token position counted back from the prompt's last token (0 = the last token)."""
    OUTPUT = auto()
    """A prediction pixel of the prompt."""
    LENGTH = auto()
    """An element count, at least 1."""
    OFFSET = auto()
    """An element offset into a tensor."""
    LAYER = auto()
    """A layer of the KV cache (version 2, docs/FORMATS.md §7.7)."""


@dataclass(frozen=True)
class Operand:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Op:
    code: int
    name: str
    operands: tuple[Operand, ...]
    since: int = 0
    """The first program version that has this opcode."""


def _op(code: int, name: str, operands: str, since: int = 0) -> Op:
    """An opcode from "name:KIND name:KIND ..."."""
    pairs = (word.split(":") for word in operands.split())
    return Op(code, name, tuple(Operand(operand, Kind[kind]) for operand, kind in pairs), since)


OPS = (  # what each does: docs/FORMATS.md §7.4, defined by tests/reference/pxvm.py
    _op(0x01, "LOAD_WEIGHT_SLICE", "tensor:TENSOR offset:OFFSET length:LENGTH dst:SCRATCH"),
    _op(0x02, "LOAD_TOKEN", "back:TOKEN tensor:TENSOR length:LENGTH dst:SCRATCH"),
    _op(0x03, "DOT_PRODUCT", "src:SCRATCH in_len:LENGTH tensor:TENSOR offset:OFFSET out_len:LENGTH dst:SCRATCH"),
    _op(0x04, "ADD_BIAS", "dst:SCRATCH src:SCRATCH length:LENGTH"),
    _op(0x05, "RELU", "dst:SCRATCH length:LENGTH"),
    _op(0x06, "ARGMAX", "src:SCRATCH length:LENGTH dst:SCRATCH"),
    _op(0x07, "STORE_PIXEL", "src:SCRATCH out:OUTPUT"),
    _op(0x08, "POOL_TOKENS", "tensor:TENSOR length:LENGTH dst:SCRATCH"),
    _op(0x09, "CONCAT_TOKENS", "tensor:TENSOR length:LENGTH count:LENGTH dst:SCRATCH", since=1),
    _op(
        0x0A,
        "ATTEND",
        "embed:TENSOR pos:TENSOR query:TENSOR key:TENSOR value:TENSOR length:LENGTH head:LENGTH tmp:SCRATCH "
        "dst:SCRATCH",
        since=1,
    ),
    _op(0xFF, "HALT", ""),
)
BY_CODE = {op.code: op for op in OPS}
BY_NAME = {op.name: op for op in OPS}
HALT = BY_NAME["HALT"]
MAX_OPERANDS = max(len(op.operands) for op in OPS)

MAGIC = (0x70, 0x78, 0x56)
"""Pixel 0 of every program: "pxV" in ASCII."""
VERSION = 1
"""The newest program version; version 0 programs keep their meaning."""
VERSIONS = (0, 1)
HEADER_PIXELS = 3
"""Magic, version, scratch size (one pixel each, in every version); the first instruction is pixel 3."""
OPERAND_PIXELS = {0: 1, 1: 2}
"""Pixels per operand: version 0 operands are 24 bits, version 1 operands 48 bits."""
MAX_PROGRAM_PIXELS = 1 << 16
"""Size limit of a program image: bounds the GPU's walk and rejects stray images (a weights .pxi) at once."""
MAX_SCRATCH = {0: 1 << 20, 1: 1 << 22}
"""Floats of scratch a program may declare: 4 MiB a prompt in version 0, 16 MiB in version 1."""
OUTPUT_PIXELS = 1
"""The OUTPUT space: one prediction pixel per prompt (docs/FORMATS.md §5)."""
TENSOR_TABLES = {
    0: ("layer0.bias", "out.bias", "embed", "layer0.weight", "out.weight"),
    1: (
        "embed",
        "attn.pos",
        "attn.query",
        "attn.key",
        "attn.value",
        *(f"layer{layer}.{part}" for layer in range(4) for part in ("weight", "bias")),
        "out.weight",
        "out.bias",
    ),
}
"""Tensor index → the model's tensor (by its version-1 name), per program version. Version 0 indexes the
five tensors of pixellm_v0 in its byte order (b_hidden, b_out, embed, hidden, out)."""
TENSOR_SPELLING = {0: ("b_hidden", "b_out", "embed", "hidden", "out"), 1: TENSOR_TABLES[1]}
"""How assembly text writes each version's tensor indexes."""
