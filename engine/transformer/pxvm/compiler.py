"""A version-2 model's forward pass compiled to a version-2 pxVM program (docs/FORMATS.md §7.7): THE list
of operations (engine/transformer/operations.py) walked in order, each one or two instructions, the
activations it names laid out back to back in a row's ACTIVATIONS."""

from collections.abc import Callable

import numpy as np

from ...errors import PxglError
from ..meta import TransformerArchitecture
from ..operations import Operation, activation_widths, operations
from .opcodes import BY_NAME, MAX_ROW_FLOATS, TENSOR_INDEX
from .program import Instruction, encode


def row_layout(architecture: TransformerArchitecture) -> tuple[dict[str, int], int]:
    """Each activation's first float in a row, and S, the floats of a row."""
    addresses, at = {}, 0
    for name, width in activation_widths(architecture).items():
        addresses[name] = at
        at += width
    return addresses, at


def _ins(name: str, *operands: int, last: bool = False) -> Instruction:
    return Instruction(BY_NAME[name], operands, last)


def compiled_instructions(architecture: TransformerArchitecture) -> list[Instruction]:
    a = architecture
    at, _ = row_layout(a)
    widths = activation_widths(a)

    def tensor(name: str) -> int:
        return TENSOR_INDEX[name]

    def embed(op: Operation) -> list[Instruction]:
        out = [_ins("EMBED", tensor("embed"), a.width, at[op.output])]
        return out + [
            _ins("ADD_POSITION", tensor("pos"), a.width, at[op.output]) for name in op.tensors if name == "pos"
        ]

    def norm(op: Operation) -> list[Instruction]:
        last = op.layer is None  # the final norm feeds the logits only
        source, weight = at[op.inputs[0]], tensor(op.tensors[0])
        if a.norm_kind == "layernorm":
            return [_ins("LAYERNORM", source, a.width, weight, tensor(op.tensors[1]), at[op.output], last=last)]
        return [_ins("RMSNORM", source, a.width, weight, at[op.output], last=last)]

    def project(op: Operation, last: bool = False) -> list[Instruction]:
        source, out_len = op.inputs[0], widths[op.output]
        listed = [_ins("MATVEC", at[source], widths[source], tensor(op.tensors[0]), out_len, at[op.output], last=last)]
        return listed + [_ins("ADD_VECTOR", tensor(name), out_len, at[op.output], last=last) for name in op.tensors[1:]]

    def rope(op: Operation) -> list[Instruction]:
        return [_ins("ROPE", at[op.output], a.heads if op.output == "q" else a.kv_heads)]

    def attend(op: Operation) -> list[Instruction]:
        q, k, v = (at[name] for name in op.inputs)
        return [_ins("ATTEND", q, k, v, int(op.layer or 0), at[op.output])]

    def activate(op: Operation) -> list[Instruction]:
        name = "GELU" if a.mlp_kind == "gelu" else "GELU_TANH"
        return [_ins(name, at[op.inputs[0]], widths[op.output], at[op.output])]

    def gate(op: Operation) -> list[Instruction]:
        g, up = (at[name] for name in op.inputs)
        return [_ins("SILU_GATE", g, up, widths[op.output], at[op.output])]

    def add(op: Operation) -> list[Instruction]:
        return [_ins("ADD", at[op.output], at[op.inputs[1]], widths[op.output])]

    def logits(op: Operation) -> list[Instruction]:
        listed = project(op, last=True)
        return [*listed, _ins("PREDICT", at[op.output], a.vocab_size, 0, last=True)]

    emit: dict[str, Callable[[Operation], list[Instruction]]] = {
        "embed": embed,
        "norm": norm,
        "project": project,
        "rope": rope,
        "attend": attend,
        "activate": activate,
        "gate": gate,
        "add": add,
        "logits": logits,
    }
    program = [ins for op in operations(a) for ins in emit[op.kind](op)]
    return [*program, _ins("HALT")]


def compile_transformer(architecture: TransformerArchitecture) -> np.ndarray:
    """The model's version-2 program as pixels, (height, width, 3) uint8."""
    row_floats = row_layout(architecture)[1]
    if row_floats > MAX_ROW_FLOATS:
        raise PxglError(
            f"this model's activations take {row_floats:,} floats a position, past the {MAX_ROW_FLOATS:,} a "
            "version-2 pxVM program holds (§7.7); use the passes executor"
        )
    return encode(row_floats, compiled_instructions(architecture))
