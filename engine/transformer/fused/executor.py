"""The fused executor of version 2 (docs/FORMATS.md §14.4): the same forward as the operation list, in few
dispatches a layer — (norm + q/k/v products + biases + RoPE + the float16 cache store), (attention split over
the cached keys), (the segments' merge + out product + residual), (norm + up/gate products + activation),
(down product + residual): five, whatever the architecture; then (final norm + logits). A product's weights
are dequantized once for a tile of rows (glsl/tff_matvec.comp), and attention never writes its scores.

Slots, the KV cache, prefill, batched decode and choosing tokens are GPUTransformer's (gpu/base.py); this
class supplies the forward over its rows."""

import numpy as np

from ...gl import Buffer, GLBackend
from ...kernel import DISPATCH_LOOPS
from ..gpu import GPUTransformer, Step
from ..gpu.executor import folded
from ..gpu.loops import GROUP, ceil_div
from ..gpu.scratch import Scratches
from ..meta import TransformerSpec
from .kernels import ATTEND, EMBED, MATVEC, TILES, matvec_constants, plan_fused
from .packs import Pack, Packs, Record

ATTEND_SCRATCH = 1 << 23
"""Floats of attention partials one block of rows writes at most: a longer prefill runs its rows through every
layer a block at a time (causal: a block reads only the cache the blocks before it wrote)."""


class FusedTransformer(GPUTransformer):
    """The fused executor: GPUTransformer's slots, prefill and decode over five dispatches a layer. `run` and
    `generate` are slot 0's prefill and greedy decode."""

    def __init__(
        self,
        gpu: GLBackend,
        spec: TransformerSpec,
        weight_bytes: bytes | np.ndarray,
        loop_budget: int = DISPATCH_LOOPS,
        slots: int = 1,
    ) -> None:
        super().__init__(gpu, spec, weight_bytes, slots, loop_budget)
        a = self.architecture
        quants = frozenset(t.quant for t in spec.tensors.values() if len(t.shape) == 2)
        self.fused_plan = plan_fused(a, loop_budget, quants)
        self.records = self._records()
        self.embed = gpu.program(EMBED, self.fused_plan.constants, GROUP)
        self.attend = gpu.program(ATTEND, self.fused_plan.constants, GROUP)
        gelu = "gated" if a.mlp_kind == "silu_gated" else "gelu"
        kinds = {"qkv": ("norm", "qkv"), "out": ("attention", "residual"), "up": ("norm", gelu)}
        kinds |= {"down": ("plain", "residual"), "logits": ("norm", "logits")}
        self.matvecs = {
            (tile, stage): gpu.program(MATVEC, matvec_constants(self.fused_plan, tile, *kind), GROUP)
            for tile in TILES
            for stage, kind in kinds.items()
        }
        self.params = self._buffer(np.array(self.packs.params, np.int32), "dispatch records")
        self._scratch = Scratches(gpu)

    def upload_tensors(self, stream: np.ndarray) -> None:
        """The weights as packs (packs.py), one buffer each, instead of the base's one buffer a tensor."""
        self.packs = Packs(self.spec)
        self.packs.check(self.gpu.limits.max_storage_block_size)
        self.buffers = {
            id(pack): self._buffer(self.packs.bytes_of(pack, stream), pack.what) for pack in self.packs.all()
        }

    def _records(self) -> list[dict[str, Record]]:
        a, packs = self.architecture, self.packs
        records = []
        for layer, pack in enumerate(packs.layers):
            b = f"block{layer}."
            qkv = [(f"{b}attn.{part}.weight", f"{b}attn.{part}.bias") for part in "qkv"]
            gated = a.mlp_kind == "silu_gated"
            up = [(f"{b}mlp.{part}.weight", f"{b}mlp.{part}.bias") for part in (("gate", "up") if gated else ("up",))]
            records.append(
                {
                    "qkv": packs.matvec_record(pack["attn_in"], qkv, f"{b}attn_norm"),
                    "out": packs.matvec_record(pack["attn_out"], [(f"{b}attn.out.weight", f"{b}attn.out.bias")], None),
                    "up": packs.matvec_record(pack["mlp_in"], up, f"{b}mlp_norm", gated),
                    "down": packs.matvec_record(pack["mlp_down"], [(f"{b}mlp.down.weight", f"{b}mlp.down.bias")], None),
                }
            )
        head = "embed" if a.tied_head else "head.weight"
        self.logits_record = packs.matvec_record(packs.ends, [(head, "head.bias")], "final_norm")
        self.embed_record = packs.embed_record()
        return records

    # --- the forward ----------------------------------------------------------------------------
    def forward(self, step: Step) -> None:
        """The step's rows through every layer, a block of rows at a time, then the last rows' logits."""
        a, gpu, n = self.architecture, self.gpu, step.positions
        x = step.buffers["x"]
        groups = folded(ceil_div(n * a.width, GROUP))
        gpu.run(
            self.embed,
            groups,
            weights=self.buffers[id(self.packs.ends)],
            params=self.params,
            tokens=self.tokens,
            rows=self.rows,
            target=x,
            run=(self.embed_record.at, n, 0, groups[0]),
        )
        gpu.barrier()
        segments = ceil_div(step.span, self.fused_plan.attend_segment)
        block = max(1, min(n, ATTEND_SCRATCH // (a.heads * segments * (a.head_dim + 2))))
        partial = self._scratch("attend", 4 * block * a.heads * segments * (a.head_dim + 2))
        for row0 in range(0, n, block):
            count = min(block, n - row0)
            tile = 1 if count == 1 else TILES[-1]
            for layer, (packs, records) in enumerate(zip(self.packs.layers, self.records, strict=True)):
                caches = {"keys": self.keys[layer], "values": self.values[layer]}
                self._matvec(tile, "qkv", packs["attn_in"], records["qkv"], row0, count, x, step.buffers["q"], caches)
                gpu.run(
                    self.attend,
                    (segments, a.heads, count),
                    q=step.buffers["q"],
                    rows=self.rows,
                    partial=partial,
                    run=(row0, segments),
                    **caches,
                )
                gpu.barrier()
                self._matvec(tile, "out", packs["attn_out"], records["out"], row0, count, partial, x, caches, segments)
                inner = step.buffers["inner"]
                self._matvec(tile, "up", packs["mlp_in"], records["up"], row0, count, x, inner, caches)
                self._matvec(tile, "down", packs["mlp_down"], records["down"], row0, count, inner, x, caches)
        rows = step.logit_rows
        caches = {"keys": self.keys[0], "values": self.values[0]}
        tile = 1 if rows == 1 else TILES[-1]
        logits = step.buffers["logits"]
        self._matvec(tile, "logits", self.packs.ends, self.logits_record, n - rows, rows, x, logits, caches)

    def _matvec(
        self,
        tile: int,
        stage: str,
        pack: Pack,
        record: Record,
        row0: int,
        n: int,
        source: Buffer,
        target: Buffer,
        caches: dict[str, Buffer],
        segments: int = 1,
    ) -> None:
        """One tff_matvec stage over rows row0 .. row0 + n - 1, in as many dispatches as its columns need."""
        in_dim = self.packs.params[record.at]
        span = self.fused_plan.spans[tile]
        pieces = ceil_div(in_dim, span)
        groups = folded(record.groups)
        scratch = self._scratch("split", 8 * n * groups[0] * groups[1] * GROUP if pieces > 1 else 4)
        for piece in range(pieces):
            flags = int(piece == 0) | 2 * int(piece == pieces - 1)
            self.gpu.run(
                self.matvecs[(tile, stage)],
                (groups[0], groups[1], ceil_div(n, tile)),
                weights=self.buffers[id(pack)],
                params=self.params,
                source=source,
                target=target,
                rows=self.rows,
                table=self.rope_table,
                scratch=scratch,
                run=(record.at, n, row0, groups[0]),
                split=(piece * span, span, flags, segments),
                **caches,
            )
            self.gpu.barrier()

    def close(self) -> None:
        for buffer in [*self.buffers.values(), self.params]:
            self.gpu.release_storage(buffer)
        self.buffers.clear()
        self._scratch.close()
        super().close()
