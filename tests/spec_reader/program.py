"""§7.7: decode a version-2 pxVM program and check the validator's rules 1-8 against a meta."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .meta import SpecError, tensor_table

MAGIC = (0x70, 0x78, 0x56)
HEAD_NAMES = ["embed", "pos", "final_norm.weight", "final_norm.bias", "head.weight", "head.bias"]
BLOCK_NAMES = [
    "attn_norm.weight", "attn_norm.bias", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.q.bias",
    "attn.k.bias", "attn.v.bias", "attn.out.weight", "attn.out.bias", "mlp_norm.weight", "mlp_norm.bias",
    "mlp.gate.weight", "mlp.up.weight", "mlp.down.weight", "mlp.gate.bias", "mlp.up.bias", "mlp.down.bias",
]  # fmt: skip
# operand kinds: s scratch, T tensor, N length, L layer, o output
OPCODES = {
    0x20: ("EMBED", "TNs"), 0x21: ("ADD_POSITION", "TNs"), 0x22: ("LAYERNORM", "sNTTs"),
    0x23: ("RMSNORM", "sNTs"), 0x24: ("MATVEC", "sNTNs"), 0x25: ("ADD_VECTOR", "TNs"), 0x26: ("ROPE", "sN"),
    0x27: ("ATTEND", "sssLs"), 0x28: ("GELU_TANH", "sNs"), 0x29: ("GELU", "sNs"), 0x2A: ("SILU_GATE", "ssNs"),
    0x2B: ("ADD", "ssN"), 0x2C: ("PREDICT", "sNo"), 0xFF: ("HALT", ""),
}  # fmt: skip


def tensor_name(index: int) -> str | None:
    if index < len(HEAD_NAMES):
        return HEAD_NAMES[index]
    layer, j = divmod(index - len(HEAD_NAMES), len(BLOCK_NAMES))
    return f"block{layer}.{BLOCK_NAMES[j]}" if layer < 128 else None


@dataclass(frozen=True)
class Instruction:
    pixel: int
    name: str
    last: bool
    operands: tuple[int, ...]


def decode(pixels: np.ndarray) -> tuple[int, list[Instruction]]:
    """Rules 1-4: the format. `pixels` [h, w, 3] uint8. Returns (S, instructions incl. HALT)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] * pixels.shape[1] > 65536:
        raise SpecError("program: not an RGB image within 65,536 pixels")
    if max(pixels.shape[:2]) > 16384:
        raise SpecError("program: over 16,384 a side")
    flat = pixels.reshape(-1, 3).astype(np.int64)
    values = flat[:, 0] + 256 * flat[:, 1] + 65536 * flat[:, 2]
    if len(flat) < 3 or tuple(flat[0]) != MAGIC:
        raise SpecError("pixel 0: not the magic")
    if values[1] != 2:
        raise SpecError("pixel 1: not version 2")
    scratch = int(values[2])
    if not 1 <= scratch <= 16_777_215:
        raise SpecError("pixel 2: scratch size outside 1..16,777,215")
    program, at = [], 3
    while True:
        if at >= len(flat):
            raise SpecError("program: ends without HALT")
        opcode, count, flags = (int(c) for c in flat[at])
        if opcode not in OPCODES:
            raise SpecError(f"pixel {at}: unknown opcode {opcode:#x}")
        name, kinds = OPCODES[opcode]
        if count != len(kinds):
            raise SpecError(f"pixel {at}: {name} takes {len(kinds)} operands, not {count}")
        if flags & ~1 or (name == "HALT" and flags):
            raise SpecError(f"pixel {at}: flags {flags}")
        end = at + 1 + 2 * count
        if end > len(flat):
            raise SpecError(f"pixel {at}: {name}'s operands run past the image")
        operands = tuple(int(values[at + 1 + 2 * i] + 2**24 * values[at + 2 + 2 * i]) for i in range(count))
        for kind, value in zip(kinds, operands, strict=True):
            if value >= 2**24:
                raise SpecError(f"pixel {at}: {name} operand at or past 2^24")
            if kind == "N" and value == 0:
                raise SpecError(f"pixel {at}: {name} LENGTH 0")
            if kind == "T" and tensor_name(value) is None:
                raise SpecError(f"pixel {at}: {name} tensor index {value} outside the table")
        program.append(Instruction(at, name, bool(flags & 1), operands))
        at = end
        if name == "HALT":
            break
    if (flat[at:] != 0).any():
        raise SpecError("program: a pixel after HALT is not (0, 0, 0)")
    return scratch, program


def _ranges(ins: Instruction, meta: dict) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[str]]:
    """(read ranges, written ranges, tensors with their expected shape checked) of one instruction."""
    H, K, D, V = meta["heads"], meta["kv_heads"], meta["head_dim"], meta["vocab_size"]
    ops = ins.operands
    name = ins.name
    if name in ("EMBED", "ADD_POSITION", "ADD_VECTOR"):
        dst = (ops[2], ops[2] + ops[1])
        return ([dst] if name != "EMBED" else []), [dst], []
    if name in ("LAYERNORM", "RMSNORM"):
        return [(ops[0], ops[0] + ops[1])], [(ops[-1], ops[-1] + ops[1])], []
    if name == "MATVEC":
        return [(ops[0], ops[0] + ops[1])], [(ops[4], ops[4] + ops[3])], []
    if name == "ROPE":
        dst = (ops[0], ops[0] + ops[1] * D)
        return [dst], [dst], []
    if name == "ATTEND":
        q, k, v, _, dst = ops
        return [(q, q + H * D), (k, k + K * D), (v, v + K * D)], [(dst, dst + H * D)], []
    if name in ("GELU_TANH", "GELU"):
        return [(ops[0], ops[0] + ops[1])], [(ops[2], ops[2] + ops[1])], []
    if name == "SILU_GATE":
        return [(ops[0], ops[0] + ops[2]), (ops[1], ops[1] + ops[2])], [(ops[3], ops[3] + ops[2])], []
    if name == "ADD":
        return [(ops[0], ops[0] + ops[2]), (ops[1], ops[1] + ops[2])], [(ops[0], ops[0] + ops[2])], []
    if name == "PREDICT":
        if ops[1] != V or ops[2] != 0:
            raise SpecError(f"pixel {ins.pixel}: PREDICT needs length V and out 0")
        return [(ops[0], ops[0] + ops[1])], [], []
    return [], [], []


def _expect_shapes(ins: Instruction, meta: dict) -> None:
    table = tensor_table(meta)
    ops, name = ins.operands, ins.name
    H, K = meta["heads"], meta["kv_heads"]
    V, C = meta["vocab_size"], meta["context_length"]
    expected = {
        "EMBED": [(ops[0], (V, ops[1]))] if name == "EMBED" else [],
        "ADD_POSITION": [(ops[0], (C, ops[1]))] if name == "ADD_POSITION" else [],
        "ADD_VECTOR": [(ops[0], (ops[1],))] if name == "ADD_VECTOR" else [],
        "LAYERNORM": [(ops[2], (ops[1],)), (ops[3], (ops[1],))] if name == "LAYERNORM" else [],
        "RMSNORM": [(ops[2], (ops[1],))] if name == "RMSNORM" else [],
        "MATVEC": [(ops[2], (ops[3], ops[1]))] if name == "MATVEC" else [],
    }.get(name, [])
    for index, shape in expected:
        tensor = tensor_name(index)
        if tensor not in table or table[tensor][0] != shape:
            raise SpecError(f"pixel {ins.pixel}: {name} names {tensor}, which the model lacks or is not {shape}")
    if name == "ROPE" and (meta["positions"]["kind"] != "rope" or ops[1] not in (H, K)):
        raise SpecError(f"pixel {ins.pixel}: ROPE in a model without rope, or heads not H nor K")
    if name == "ATTEND" and ops[3] >= meta["layers"]:
        raise SpecError(f"pixel {ins.pixel}: layer past L")


def validate(scratch: int, program: list[Instruction], meta: dict) -> None:
    """Rules 5-9 against the model's meta (rule 9: against the compiled program of the listing)."""
    written_all = np.zeros(scratch, bool)  # by instructions without LAST
    written_last = np.zeros(scratch, bool)  # by any instruction (seen by LAST ones)
    predicts = 0
    for ins in program[:-1]:
        _expect_shapes(ins, meta)
        reads, writes, _ = _ranges(ins, meta)
        for lo, hi in reads + writes:
            if hi > scratch:
                raise SpecError(f"pixel {ins.pixel}: {ins.name} range [{lo}, {hi}) past the scratch {scratch}")
        in_place = ins.name in ("ADD", "ADD_VECTOR", "ADD_POSITION", "ROPE")
        for w_lo, w_hi in writes:
            others = reads[1:] if in_place else reads
            if any(lo < w_hi and w_lo < hi for lo, hi in others):
                raise SpecError(f"pixel {ins.pixel}: {ins.name} writes over an operand")
        seen = written_last if ins.last else written_all
        for lo, hi in reads:
            if not seen[lo:hi].all():
                raise SpecError(f"pixel {ins.pixel}: {ins.name} reads a float nothing wrote")
        for lo, hi in writes:
            written_last[lo:hi] = True
            if not ins.last:
                written_all[lo:hi] = True
        if ins.name == "ATTEND" and ins.last:
            raise SpecError(f"pixel {ins.pixel}: ATTEND with LAST")
        if ins.name == "PREDICT":
            if not ins.last:
                raise SpecError(f"pixel {ins.pixel}: PREDICT without LAST")
            predicts += 1
    if not predicts:
        raise SpecError("program: no PREDICT")
    limit = 4 * work(compiled(meta)[1], meta)
    if work(program, meta) > limit:
        raise SpecError(f"program: work {work(program, meta)} past 4 times the compiled program's ({limit})")


def tensor_index(name: str) -> int:
    if name in HEAD_NAMES:
        return HEAD_NAMES.index(name)
    block, rest = name.split(".", 1)
    return len(HEAD_NAMES) + len(BLOCK_NAMES) * int(block.removeprefix("block")) + BLOCK_NAMES.index(rest)


def row_layout(meta: dict) -> tuple[dict[str, int], int]:
    E, H, K, D = meta["width"], meta["heads"], meta["kv_heads"], meta["head_dim"]
    F, V = meta["mlp"]["width"], meta["vocab_size"]
    widths = {"x": E, "a": E, "q": H * D, "k": K * D, "v": K * D, "o": H * D, "y": E, "m": E}
    widths |= {"up": F, "gate": F, "inner": F, "h": E, "logits": V}
    at, offsets = 0, {}
    for name, width in widths.items():
        offsets[name], at = at, at + width
    return offsets, at


def compiled(meta: dict) -> tuple[int, list[Instruction]]:
    """§7.7's compiled program of a model, from its listing."""
    E, H, K, D = meta["width"], meta["heads"], meta["kv_heads"], meta["head_dim"]
    F, V = meta["mlp"]["width"], meta["vocab_size"]
    s, size = row_layout(meta)
    table = tensor_table(meta)
    out: list[Instruction] = []

    def ins(name: str, *operands: int, last: bool = False) -> None:
        out.append(Instruction(-1, name, last, operands))

    def norm(src: str, prefix: str, dst: str, last: bool = False) -> None:
        if meta["norm"]["kind"] == "layernorm":
            weight, bias = tensor_index(prefix + ".weight"), tensor_index(prefix + ".bias")
            ins("LAYERNORM", s[src], E, weight, bias, s[dst], last=last)
        else:
            ins("RMSNORM", s[src], E, tensor_index(prefix + ".weight"), s[dst], last=last)

    def matvec(src: str, in_len: int, weight: str, out_len: int, dst: str, last: bool = False) -> None:
        ins("MATVEC", s[src], in_len, tensor_index(weight), out_len, s[dst], last=last)
        bias = "head.bias" if dst == "logits" else weight.removesuffix(".weight") + ".bias"
        if bias in table:
            ins("ADD_VECTOR", tensor_index(bias), out_len, s[dst], last=last)

    ins("EMBED", 0, E, s["x"])
    if meta["positions"]["kind"] == "learned":
        ins("ADD_POSITION", 1, E, s["x"])
    for layer in range(meta["layers"]):
        b = f"block{layer}."
        norm("x", b + "attn_norm", "a")
        matvec("a", E, b + "attn.q.weight", H * D, "q")
        matvec("a", E, b + "attn.k.weight", K * D, "k")
        matvec("a", E, b + "attn.v.weight", K * D, "v")
        if meta["positions"]["kind"] == "rope":
            ins("ROPE", s["q"], H)
            ins("ROPE", s["k"], K)
        ins("ATTEND", s["q"], s["k"], s["v"], layer, s["o"])
        matvec("o", H * D, b + "attn.out.weight", E, "y")
        ins("ADD", s["x"], s["y"], E)
        norm("x", b + "mlp_norm", "m")
        if meta["mlp"]["kind"] == "silu_gated":
            matvec("m", E, b + "mlp.gate.weight", F, "gate")
            matvec("m", E, b + "mlp.up.weight", F, "up")
            ins("SILU_GATE", s["gate"], s["up"], F, s["inner"])
        else:
            matvec("m", E, b + "mlp.up.weight", F, "up")
            ins("GELU_TANH" if meta["mlp"]["kind"] == "gelu_tanh" else "GELU", s["up"], F, s["inner"])
        matvec("inner", F, b + "mlp.down.weight", E, "y")
        ins("ADD", s["x"], s["y"], E)
    norm("x", "final_norm", "h", last=True)
    matvec("h", E, "embed" if meta["tied_head"] else "head.weight", V, "logits", last=True)
    ins("PREDICT", s["logits"], V, 0, last=True)
    ins("HALT")
    return size, out


def instruction_work(ins: Instruction, meta: dict) -> int:
    """Rule 9's count of one instruction."""
    H, K, D, C = meta["heads"], meta["kv_heads"], meta["head_dim"], meta["context_length"]
    ops, name = ins.operands, ins.name
    if name == "MATVEC":
        return ops[1] * ops[3]
    if name == "ATTEND":
        return 2 * H * D * C + 2 * K * D
    if name in ("PREDICT", "LAYERNORM", "RMSNORM"):
        return (2 if name == "PREDICT" else 3) * ops[1]
    if name == "ROPE":
        return ops[1] * D
    if name in ("EMBED", "ADD_POSITION", "ADD_VECTOR", "GELU_TANH", "GELU"):
        return ops[1]
    return 0 if name == "HALT" else ops[2]  # SILU_GATE, ADD: their length


def work(program: list[Instruction], meta: dict) -> int:
    return sum(instruction_work(ins, meta) for ins in program)


def encode(scratch: int, program: list[Instruction]) -> np.ndarray:
    """The program's pixels in the near-square image (§1) of its pixel count."""
    codes = {name: code for code, (name, _) in OPCODES.items()}
    stream = [MAGIC, (2, 0, 0), (scratch % 256, scratch // 256 % 256, scratch // 65536)]
    for ins in program:
        stream.append((codes[ins.name], len(ins.operands), int(ins.last)))
        for value in ins.operands:
            for part in (value % 2**24, value // 2**24):
                stream.append((part % 256, part // 256 % 256, part // 65536))
    width = math.ceil(math.sqrt(len(stream)))
    height = math.ceil(len(stream) / width)
    image = np.zeros((height * width, 3), np.uint8)
    image[: len(stream)] = stream
    return image.reshape(height, width, 3)
