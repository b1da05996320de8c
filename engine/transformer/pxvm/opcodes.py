"""The version-2 pxVM instruction set (docs/FORMATS.md §7.7): a transformer's forward pass as opcodes over
per-row activations, the model's raw weight bytes and its float16 KV cache. Versions 0 and 1 keep their own
table (engine/pxvm/opcodes.py); the two share the file's header and the operand kinds."""

from ...pxvm.opcodes import Kind, Op, Operand

VERSION = 2
OPERAND_PIXELS = 2
"""Operands are 48-bit, as version 1's; every valid one is below 2^24 (rule 4), its high pixel 0."""
OPERAND_LIMIT = 1 << 24
MAX_ROW_FLOATS = (1 << 24) - 1
"""S, the ACTIVATIONS floats of a row: what pixel 2 holds."""
LAST = 1
"""Flags bit 0: the instruction runs on the run's predicted rows only."""


def _op(code: int, name: str, operands: str) -> Op:
    pairs = (word.split(":") for word in operands.split())
    return Op(code, name, tuple(Operand(operand, Kind[kind]) for operand, kind in pairs), since=VERSION)


OPS = (
    _op(0x20, "EMBED", "tensor:TENSOR width:LENGTH dst:SCRATCH"),
    _op(0x21, "ADD_POSITION", "tensor:TENSOR width:LENGTH dst:SCRATCH"),
    _op(0x22, "LAYERNORM", "src:SCRATCH width:LENGTH weight:TENSOR bias:TENSOR dst:SCRATCH"),
    _op(0x23, "RMSNORM", "src:SCRATCH width:LENGTH weight:TENSOR dst:SCRATCH"),
    _op(0x24, "MATVEC", "src:SCRATCH in_len:LENGTH tensor:TENSOR out_len:LENGTH dst:SCRATCH"),
    _op(0x25, "ADD_VECTOR", "tensor:TENSOR length:LENGTH dst:SCRATCH"),
    _op(0x26, "ROPE", "dst:SCRATCH heads:LENGTH"),
    _op(0x27, "ATTEND", "q:SCRATCH k:SCRATCH v:SCRATCH layer:LAYER dst:SCRATCH"),
    _op(0x28, "GELU_TANH", "src:SCRATCH length:LENGTH dst:SCRATCH"),
    _op(0x29, "GELU", "src:SCRATCH length:LENGTH dst:SCRATCH"),
    _op(0x2A, "SILU_GATE", "gate:SCRATCH up:SCRATCH length:LENGTH dst:SCRATCH"),
    _op(0x2B, "ADD", "dst:SCRATCH src:SCRATCH length:LENGTH"),
    _op(0x2C, "PREDICT", "src:SCRATCH length:LENGTH out:OUTPUT"),
    Op(0xFF, "HALT", ()),
)
BY_CODE = {op.code: op for op in OPS}
BY_NAME = {op.name: op for op in OPS}
HALT = BY_NAME["HALT"]
MAX_OPERANDS = max(len(op.operands) for op in OPS)

MAX_LAYERS = 128
BLOCK_TENSORS = (
    "attn_norm.weight",
    "attn_norm.bias",
    "attn.q.weight",
    "attn.k.weight",
    "attn.v.weight",
    "attn.q.bias",
    "attn.k.bias",
    "attn.v.bias",
    "attn.out.weight",
    "attn.out.bias",
    "mlp_norm.weight",
    "mlp_norm.bias",
    "mlp.gate.weight",
    "mlp.up.weight",
    "mlp.down.weight",
    "mlp.gate.bias",
    "mlp.up.bias",
    "mlp.down.bias",
)
TENSORS = (
    "embed",
    "pos",
    "final_norm.weight",
    "final_norm.bias",
    "head.weight",
    "head.bias",
    *(f"block{layer}.{name}" for layer in range(MAX_LAYERS) for name in BLOCK_TENSORS),
)
"""Version-2 tensor index → the tensor's §14.2 name (docs/FORMATS.md §7.7)."""
TENSOR_INDEX = {name: index for index, name in enumerate(TENSORS)}
