"""The passes executor of version 2 (docs/FORMATS.md §14.4): the list of operations (operations.py) walked on
the GPU, one kernel per operation kind (glsl/tf_*.comp), over the rows of a run — each (slot, position), so
a prefill's positions of one slot and a decode step's one row a slot run alike (base.py holds the slots).

Every tensor is uploaded as its bytes (a buffer each, a matrix past one buffer in pieces of whole rows; q8/q4
blocks packed for vector loads, glsl/tf_blocks.glsl; dequantized inside the kernels); activations are float32
buffers of (rows, width); each row's embed, RoPE angle, KV store and attention read its own slot and
position."""

from dataclasses import dataclass

import numpy as np

from ...errors import PxglError
from ...gl import Buffer, GLBackend
from ..meta import TransformerSpec
from ..operations import Operation
from ..quant import BLOCK, BLOCK_BYTES
from . import kernels as k
from .base import GPUTransformer, Step
from .loops import DISPATCH_LOOPS, GROUP, PROJECT_SHAPES, ceil_div
from .scratch import Scratches

MAX_GROUPS = 65535
"""Work groups GL guarantees on each axis; longer grids fold into a second one."""
MAX_PIECE_BYTES = 1 << 30
"""The most bytes of a tensor one buffer holds, whatever the GPU binds: kernels index bytes with a GLSL int."""
ATTEND_SCRATCH = 1 << 23
"""Floats of attention partials one dispatch writes at most; a long prefill's queries are run in blocks."""


ONE_PIXEL_VOCAB = 65536
"""Up to this many ids a prediction is one pixel (§5); past it, two (§14.5)."""


def prediction_pixels(ids: np.ndarray, sums: np.ndarray, vocab_size: int) -> np.ndarray:
    """docs/FORMATS.md §14.5's prediction pixels of rows whose argmax is `ids` and Σ exp(logit - top) `sums`:
    (rows, 1, 3), or (rows, 2, 3) past 65,536 ids (the id's token pixel, then the confidence)."""
    confidence = np.floor(255 / sums.astype(np.float64) + 0.5).astype(np.int64)  # §3's c: halves up
    if vocab_size <= ONE_PIXEL_VOCAB:
        return np.stack([ids % 256, ids // 256, confidence], axis=-1).astype(np.uint8)[:, None, :]
    token = np.stack([ids % 256, ids // 256 % 256, 255 - ids // 65536], axis=-1)
    zero = np.zeros_like(confidence)
    return np.stack([token, np.stack([confidence, zero, zero], axis=-1)], axis=1).astype(np.uint8)


def pack_blocks(data: np.ndarray, quant: str) -> np.ndarray:
    """q8/q4 blocks (§14.3: d, then the quants) as glsl/tf_blocks.glsl reads them: every block's quants, then
    every block's d; other quantizations as they are."""
    if quant not in BLOCK_BYTES:
        return data
    blocks = data.reshape(-1, BLOCK_BYTES[quant])
    return np.concatenate([blocks[:, 2:].reshape(-1), blocks[:, :2].reshape(-1)])


@dataclass(frozen=True)
class Piece:
    """Rows row0..row0 + rows - 1 of a matrix in a storage buffer (q8/q4 packed: pack_blocks): one piece holds
    the whole matrix unless it is larger than one buffer may be, when it is split by rows."""

    buffer: Buffer
    row0: int
    rows: int


def folded(groups: int) -> tuple[int, int, int]:
    x = min(groups, MAX_GROUPS)
    return x, ceil_div(groups, x), 1


class PassesTransformer(GPUTransformer):
    """The passes executor: GPUTransformer's slots, prefill and decode over one kernel per operation kind.
    `run` and `generate` are slot 0's prefill and greedy decode."""

    def __init__(
        self,
        gpu: GLBackend,
        spec: TransformerSpec,
        weight_bytes: bytes | np.ndarray,
        loop_budget: int = DISPATCH_LOOPS,
        slots: int = 1,
        buffer_bytes: int = 0,
    ) -> None:
        """`buffer_bytes`: the most bytes one tensor's buffer holds (0: what this GPU binds, at most 1 GiB so
        every byte offset is a GLSL int); a matrix past it is split by rows."""
        self.buffer_bytes = buffer_bytes or min(gpu.limits.max_storage_block_size, MAX_PIECE_BYTES)
        self.pieces: dict[str, list[Piece]] = {}
        """Each tensor's pieces: its buffer in self.tensors, or (a matrix past one buffer) several of their own."""
        super().__init__(gpu, spec, weight_bytes, slots, loop_budget)
        kernels = [kernel for kernel in k.KERNELS if kernel is not k.PROJECT]  # compiled per shape below
        self.programs = {kernel.shader: gpu.program(kernel, self.constants, GROUP) for kernel in kernels}
        self.project_shapes = PROJECT_SHAPES["cpu" if gpu.cpu_renderer else "gpu"]
        """(rows, positions, split) of tf_project, by positions (each compiled at its first run)."""
        self.project_constants = {s: k.project_kernel_constants(*s, self.plan.project[s]) for s in self.project_shapes}
        self._scratch = Scratches(gpu)

    def upload_tensors(self, stream: np.ndarray) -> None:
        """Each tensor in pieces of whole rows within buffer_bytes (one, in self.tensors, unless it is larger),
        q8/q4 blocks packed for tf_project's vector loads (pack_blocks)."""
        most = self.buffer_bytes // 4 * 4
        for name, t in self.spec.tensors.items():
            rows = t.shape[0] if len(t.shape) == 2 else 1
            row_bytes = t.nbytes // rows
            per_piece = most // row_bytes
            if per_piece < 1:
                raise PxglError(f"tensor '{name}': one row of {row_bytes:,} bytes is past the {most:,} a buffer holds")
            for row0 in range(0, rows, per_piece):
                count = min(per_piece, rows - row0)
                begin, size = t.offset + row0 * row_bytes, count * row_bytes
                data = np.zeros(ceil_div(size, 4) * 4, np.uint8)
                data[:size] = pack_blocks(stream[begin : begin + size], t.quant)
                what = f"tensor '{name}'" + (f" rows {row0}..{row0 + count - 1}" if count < rows else "")
                self.pieces.setdefault(name, []).append(Piece(self._buffer(data, what), row0, count))
            if len(self.pieces[name]) == 1:
                self.tensors[name] = self.pieces[name][0].buffer

    # --- the passes ------------------------------------------------------------------------------
    def forward(self, step: Step) -> None:
        for op in self.operations:
            PASSES[op.kind](self, op, step)
            self.gpu.barrier()
            if self.after_operation is not None:
                self.after_operation(op, step)

    def _matrix(self, name: str, piece: Piece) -> dict[str, object]:
        t = self.spec.tensors[name]
        return {
            "matrix": piece.buffer,
            "m_quant": k.QUANT_CODES[t.quant],
            "m_scale": t.scale,
            "m_zero": float(t.zero_point),
        }

    def _elementwise(self, shader: str, count: int, **resources: object) -> None:
        groups = folded(ceil_div(count, GROUP))
        self.gpu.run(self.programs[shader], groups, count=count, groups_x=groups[0], **resources)

    def _embed(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        width = self.architecture.width
        groups = folded(ceil_div(n * width, GROUP))
        for by_position, name in enumerate(op.tensors):
            if by_position:
                self.gpu.barrier()
            for piece in self.pieces[name]:
                self.gpu.run(
                    self.programs["tf_embed"],
                    groups,
                    **self._matrix(name, piece),
                    tokens=self.tokens,
                    rows=self.rows,
                    target=buffers[op.output],
                    width=width,
                    positions=n,
                    context=self.context,
                    by_position=by_position,
                    table_row0=piece.row0,
                    table_rows=piece.rows,
                    groups_x=groups[0],
                )

    def _norm(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        weight = self.tensors[op.tensors[0]]
        bias = self.tensors[op.tensors[1]] if len(op.tensors) > 1 else weight
        a = self.architecture
        self.gpu.run(
            self.programs["tf_norm"],
            (n, 1, 1),
            source=buffers[op.inputs[0]],
            target=buffers[op.output],
            weight=weight,
            bias=bias,
            width=a.width,
            layernorm=int(a.norm_kind == "layernorm"),
            eps=a.norm_eps,
        )

    def _project(self, op: Operation, step: Step, rows: int = 0) -> None:
        """`rows` (0: all) of the step's last positions, in tf_project's shape for one position (a decode step)
        or more; each piece of the matrix a dispatch per chunk of its rows' columns, each adding to the last."""
        buffers, n = step.buffers, rows or step.positions
        name = op.tensors[0]
        out_dim, in_dim = self.spec.tensors[name].shape
        bias = op.tensors[1] if len(op.tensors) > 1 else None
        shape = next((s for s in self.project_shapes if s[1] >= n), self.project_shapes[-1])
        per_row, tile, split = shape
        blocks, columns = self.plan.project[shape]
        program = self.gpu.program(k.PROJECT, self.project_constants[shape], GROUP)
        chunk = blocks * BLOCK if self.spec.tensors[name].quant in ("q8", "q4") else columns
        for piece in self.pieces[name]:
            groups = folded(ceil_div(piece.rows, GROUP // split * per_row))
            for column0 in range(0, in_dim, chunk):
                if column0:
                    self.gpu.barrier()
                self.gpu.run(
                    program,
                    (groups[0], groups[1], ceil_div(n, tile)),
                    **self._matrix(name, piece),
                    source=buffers[op.inputs[0]],
                    target=buffers[op.output],
                    bias=self.tensors[bias] if bias else piece.buffer,
                    in_dim=in_dim,
                    out_dim=out_dim,
                    rows=piece.rows,
                    row0=piece.row0,
                    positions=n,
                    source_row0=step.positions - n,
                    column0=column0,
                    columns=min(chunk, in_dim - column0),
                    has_bias=int(bias is not None),
                    groups_x=groups[0],
                )

    def _logits(self, op: Operation, step: Step) -> None:
        self._project(op, step, rows=step.logit_rows)

    def _rope(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        a = self.architecture
        heads = self.widths[op.output] // a.head_dim
        groups = folded(ceil_div(n * heads * (a.head_dim // 2), GROUP))
        self.gpu.run(
            self.programs["tf_rope"],
            groups,
            target=buffers[op.output],
            table=self.rope_table,
            rows=self.rows,
            heads=heads,
            head_dim=a.head_dim,
            positions=n,
            pairs=int(a.rope is not None and a.rope.rotation == "pairs"),
            groups_x=groups[0],
        )

    def _attend(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        a, layer = self.architecture, op.layer
        q, key, value = (buffers[name] for name in op.inputs)
        keys, values = self.keys[layer], self.values[layer]
        groups = folded(ceil_div(n * self.row_words, GROUP))
        self.gpu.run(
            self.programs["tf_kv_store"],
            groups,
            k=key,
            v=value,
            keys=keys,
            values=values,
            rows=self.rows,
            kv_width=a.kv_heads * a.head_dim,
            row_words=self.row_words,
            positions=n,
            context=self.context,
            groups_x=groups[0],
        )
        self.gpu.barrier()
        segment = self.plan.attend_segment
        segments = ceil_div(step.span, segment)
        per_query = a.heads * segments * (a.head_dim + 2)
        block = max(1, min(n, ATTEND_SCRATCH // per_query))
        partial = self._scratch("attend", 4 * block * per_query)
        for first in range(0, n, block):
            count = min(block, n - first)
            self.gpu.run(
                self.programs["tf_attend"],
                (segments, a.heads, count),
                q=q,
                keys=keys,
                values=values,
                partial=partial,
                rows=self.rows,
                heads=a.heads,
                group_size=a.heads // a.kv_heads,
                head_dim=a.head_dim,
                row_words=self.row_words,
                context=self.context,
                first_query=first,
                segment=segment,
                segments=segments,
                scale=a.attention_scale,
            )
            self.gpu.barrier()
            self.gpu.run(
                self.programs["tf_attend_combine"],
                (a.heads, count, 1),
                partial=partial,
                target=buffers[op.output],
                heads=a.heads,
                head_dim=a.head_dim,
                segments=segments,
                first_query=first,
            )
            self.gpu.barrier()

    def _activate(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        exact = int(self.architecture.mlp_kind == "gelu")
        source, target = buffers[op.inputs[0]], buffers[op.output]
        self._elementwise("tf_activate", n * self.widths[op.output], source=source, target=target, exact=exact)

    def _gate(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        gate, up = (buffers[name] for name in op.inputs)
        self._elementwise("tf_gate", n * self.widths[op.output], gate=gate, up=up, target=buffers[op.output])

    def _add(self, op: Operation, step: Step) -> None:
        buffers, n = step.buffers, step.positions
        if op.inputs[0] != op.output:
            raise ValueError(f"add writes its first input in place, not {op}")
        target, source = buffers[op.output], buffers[op.inputs[1]]
        self._elementwise("tf_add", n * self.widths[op.output], target=target, source=source)

    def close(self) -> None:
        split = [piece.buffer for pieces in self.pieces.values() if len(pieces) > 1 for piece in pieces]
        for buffer in split:
            self.gpu.release_storage(buffer)
        self._scratch.close()
        self.pieces.clear()
        super().close()


PASSES = {
    "embed": PassesTransformer._embed,
    "norm": PassesTransformer._norm,
    "project": PassesTransformer._project,
    "rope": PassesTransformer._rope,
    "attend": PassesTransformer._attend,
    "activate": PassesTransformer._activate,
    "gate": PassesTransformer._gate,
    "add": PassesTransformer._add,
    "logits": PassesTransformer._logits,
}
"""One per OPERATION_KINDS entry."""
