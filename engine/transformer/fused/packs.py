"""The fused executor's weights on the GPU: the tensors each dispatch reads laid end to end in one buffer (a
pack), and one record of ints per dispatch saying where they lie (glsl/tff_pack.glsl, tff_matvec.comp's
header). A q8/q4 matrix is regrouped there: its blocks' quant bytes in order, then their float16 d's, so a
block's quants are one or two aligned 16-byte words. Packs: `ends` (embed, pos, head, the final norm, head
bias: the embed kernel and a tied head read the same bytes) and per layer `attn_in` (norm, q, k, v,
biases), `attn_out`, `mlp_in` (norm, gate, up, biases) and `mlp_down`."""

from dataclasses import dataclass, field

import numpy as np

from ...errors import PxglError
from ..gpu.kernels import QUANT_CODES
from ..gpu.loops import GROUP, ceil_div
from ..meta import QuantizedTensor, TransformerSpec
from ..quant import BLOCK_BYTES

ATTN_IN = ("attn_norm.weight", "attn_norm.bias", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.q.bias")
ATTN_IN += ("attn.k.bias", "attn.v.bias")
MLP_IN = ("mlp_norm.weight", "mlp_norm.bias", "mlp.gate.weight", "mlp.up.weight", "mlp.gate.bias", "mlp.up.bias")
RECORD_INTS = 32
"""A record: 8 ints of header, then 8 per part (at most 3)."""
LARGEST_PACK = (1 << 31) - 64
"""Byte offsets are GLSL ints."""


def float_bits(value: float) -> int:
    return int(np.array(value, np.float32).view(np.int32))


@dataclass
class Pack:
    """Tensors laid end to end, each at a multiple of 16 bytes."""

    what: str
    offsets: dict[str, int] = field(default_factory=dict)
    size: int = 0

    def place(self, name: str, nbytes: int) -> None:
        self.offsets[name] = self.size
        self.size += ceil_div(nbytes, 16) * 16

    def nbytes(self) -> int:
        return max(self.size, 16)


@dataclass(frozen=True)
class Record:
    """One dispatch's record: where in `params` it starts, and its work groups."""

    at: int
    groups: int


class Packs:
    """Every pack of a model and the params records of its dispatches."""

    def __init__(self, spec: TransformerSpec) -> None:
        self.spec = spec
        a = spec.architecture
        shapes = a.shapes()
        self.ends = Pack("embedding and output")
        for name in ("embed", "pos", "head.weight", "final_norm.weight", "final_norm.bias", "head.bias"):
            if name in shapes:
                self.ends.place(name, spec.tensors[name].nbytes)
        self.layers: list[dict[str, Pack]] = []
        for layer in range(a.layers):
            b = f"block{layer}."
            groups = {
                "attn_in": ATTN_IN,
                "attn_out": ("attn.out.weight", "attn.out.bias"),
                "mlp_in": MLP_IN,
                "mlp_down": ("mlp.down.weight", "mlp.down.bias"),
            }
            packs = {}
            for key, names in groups.items():
                pack = Pack(f"layer {layer}'s {key}")
                for name in names:
                    if b + name in shapes:
                        pack.place(b + name, spec.tensors[b + name].nbytes)
                packs[key] = pack
            self.layers.append(packs)
        self.params: list[int] = []

    def all(self) -> list[Pack]:
        return [self.ends, *(pack for packs in self.layers for pack in packs.values())]

    def check(self, binding: int) -> None:
        limit = min(binding, LARGEST_PACK)
        for pack in self.all():
            if pack.nbytes() > limit:
                raise PxglError(
                    f"{pack.what}: {pack.nbytes():,} bytes of weights are past the {limit:,} one storage buffer of "
                    "this GPU binds; the fused executor does not split them across buffers: use -x passes"
                )

    def bytes_of(self, pack: Pack, stream: np.ndarray) -> np.ndarray:
        data = np.zeros(pack.nbytes(), np.uint8)
        for name, offset in pack.offsets.items():
            t = self.spec.tensors[name]
            raw = stream[t.offset : t.offset + t.nbytes]
            if t.quant in BLOCK_BYTES:
                blocks = raw.reshape(-1, BLOCK_BYTES[t.quant])
                raw = np.concatenate([blocks[:, 2:].reshape(-1), blocks[:, :2].reshape(-1)])
            data[offset : offset + t.nbytes] = raw
        return data

    def aux(self, pack: Pack, t: QuantizedTensor) -> int:
        """glsl/tff_pack.glsl's element_at `aux`: a q8/q4 matrix's scales' byte, a u8 one's scale's bits."""
        if t.quant in BLOCK_BYTES:
            return pack.offsets[t.name] + t.nbytes // BLOCK_BYTES[t.quant] * (BLOCK_BYTES[t.quant] - 2)
        return float_bits(t.scale)

    def _tensor(self, pack: Pack, name: str) -> QuantizedTensor | None:
        return self.spec.tensors.get(name) if name in pack.offsets else None

    def _half_index(self, pack: Pack, name: str) -> int:
        return pack.offsets[name] // 2 if name in pack.offsets else -1

    def matvec_record(self, pack: Pack, parts: list[tuple[str, str]], norm: str | None, gated: bool = False) -> Record:
        """A tff_matvec record: parts (matrix, bias), the norm's tensors' prefix. A part's units are pairs of
        its rows; gated, a unit is one row of the gate and the same of up, and only the gate's work groups run."""
        first = self.spec.tensors[parts[0][0]]
        record = [first.shape[1], -1, -1, len(parts), 0, 0, 0, 0]
        if norm is not None:
            record[1:3] = [self._half_index(pack, f"{norm}.weight"), self._half_index(pack, f"{norm}.bias")]
        groups = 0
        for matrix, bias in parts:
            t = self.spec.tensors[matrix]
            count = t.shape[0] if gated else ceil_div(t.shape[0], 2)
            record += [pack.offsets[matrix], QUANT_CODES[t.quant], self.aux(pack, t), float_bits(t.zero_point)]
            record += [t.shape[0], self._half_index(pack, bias), count, groups]
            groups += 0 if gated and groups else ceil_div(count, GROUP)
        return self._add(record, groups)

    def embed_record(self) -> Record:
        record = []
        for name in ("embed", "pos"):
            t = self._tensor(self.ends, name)
            record += [-1, 0, 0, 0] if t is None else [self.ends.offsets[name], QUANT_CODES[t.quant]]
            record += [] if t is None else [self.aux(self.ends, t), float_bits(t.zero_point)]
        return self._add(record, 0)

    def _add(self, record: list[int], groups: int) -> Record:
        at = len(self.params)
        self.params += record + [0] * (RECORD_INTS - len(record))
        return Record(at, groups)
