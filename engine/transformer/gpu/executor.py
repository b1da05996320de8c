"""The passes executor of version 2 (docs/FORMATS.md §14.4): the list of operations (operations.py) walked on
the GPU, one kernel per operation kind (glsl/tf_*.comp), over a float16 KV cache that stays on the GPU.

Every tensor is uploaded as its raw bytes (one storage buffer each: q8/q4 blocks, u8, f16, dequantized inside
the kernels); activations are float32 buffers of (positions, width); the cache holds every layer's keys and
values of positions 0..length-1. A prefill runs the prompt's positions at once; greedy generation then runs
one position a step, the chosen id written by the GPU into the next position's token (no host round trip
until the generated ids are read at the end)."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import PxglError
from ...gl import Buffer, GLBackend
from ..meta import TransformerSpec
from ..numpy_executor import rope_frequencies
from ..operations import Operation, activation_widths, operations
from . import kernels as k
from .loops import DISPATCH_LOOPS, GROUP, TILE, ceil_div, plan_loops


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


MAX_GROUPS = 65535
"""Work groups GL guarantees on each axis; longer grids fold into a second one."""
ATTEND_SCRATCH = 1 << 23
"""Floats of attention partials one dispatch writes at most; a long prefill's queries are run in blocks."""


@dataclass(frozen=True)
class Prefill:
    """What a run gives back: the logits of its positions (all, or the last), and the GPU's prediction for
    each of those rows: the id (lowest on ties) and Σ exp(logit - top), whose inverse is the confidence."""

    logits: np.ndarray
    ids: np.ndarray
    sums: np.ndarray


ONE_PIXEL_VOCAB = 65536
"""Up to this many ids a prediction is one pixel (§5); past it, two (§14.5)."""


def prediction_pixels(ids: np.ndarray, sums: np.ndarray, vocab_size: int) -> np.ndarray:
    """docs/FORMATS.md §14.5's prediction pixels of rows whose argmax is `ids` and Σ exp(logit - top) `sums`:
    (rows, 1, 3), or (rows, 2, 3) past 65,536 ids (the id's token pixel, then the confidence)."""
    confidence = np.round(255 / sums.astype(np.float64)).astype(np.int64)
    if vocab_size <= ONE_PIXEL_VOCAB:
        return np.stack([ids % 256, ids // 256, confidence], axis=-1).astype(np.uint8)[:, None, :]
    token = np.stack([ids % 256, ids // 256 % 256, 255 - ids // 65536], axis=-1)
    zero = np.zeros_like(confidence)
    return np.stack([token, np.stack([confidence, zero, zero], axis=-1)], axis=1).astype(np.uint8)


@dataclass(frozen=True)
class Step:
    """One walk of the operations: `positions` new positions from `start` in `buffers`, and the logits of the
    last `logit_rows` of them."""

    buffers: dict[str, Buffer]
    positions: int
    start: int
    logit_rows: int


def folded(groups: int) -> tuple[int, int, int]:
    x = min(groups, MAX_GROUPS)
    return x, ceil_div(groups, x), 1


class PassesTransformer:
    """One version-2 model on the GPU with one sequence's KV cache: `run` appends positions and gives their
    logits and predictions; `generate` appends a prompt and greedy tokens."""

    def __init__(
        self, gpu: GLBackend, spec: TransformerSpec, weight_bytes: bytes | np.ndarray, loop_budget: int = DISPATCH_LOOPS
    ) -> None:
        self.gpu, self.spec, self.architecture = gpu, spec, spec.architecture
        a = self.architecture
        self.plan = plan_loops(a, loop_budget)
        self.operations = operations(a)
        self.widths = activation_widths(a)
        constants = k.kernel_constants(a.head_dim, self.plan.bounds)
        self.programs = {kernel.shader: gpu.program(kernel, constants, GROUP) for kernel in k.KERNELS}
        stream = np.frombuffer(weight_bytes, np.uint8) if isinstance(weight_bytes, bytes) else weight_bytes.reshape(-1)
        self.tensors: dict[str, Buffer] = {}
        binding = gpu.limits.max_storage_block_size
        for name, t in spec.tensors.items():
            if t.nbytes > binding:
                raise PxglError(
                    f"tensor '{name}': {t.nbytes:,} bytes are past the {binding:,} one storage buffer of this GPU "
                    "binds; the passes executor does not split a tensor across buffers yet"
                )
            data = np.zeros(ceil_div(t.nbytes, 4) * 4, np.uint8)
            data[: t.nbytes] = stream[t.offset : t.offset + t.nbytes]
            self.tensors[name] = self._buffer(data, f"tensor '{name}'")
        self.row_words = ceil_div(a.kv_heads * a.head_dim, 2)
        cache_bytes = a.context_length * self.row_words * 4
        self.keys = [gpu.storage_buffer(cache_bytes, f"layer {layer}'s key cache") for layer in range(a.layers)]
        self.values = [gpu.storage_buffer(cache_bytes, f"layer {layer}'s value cache") for layer in range(a.layers)]
        self.cache_bytes = 2 * a.layers * cache_bytes
        self.tokens = gpu.storage_buffer(4 * a.context_length, "token ids")
        table = np.zeros((a.context_length, max(1, a.head_dim // 2), 2), np.float32)
        if a.rope is not None:
            angles = np.arange(a.context_length, dtype=np.float64)[:, None] * rope_frequencies(a.rope, a.head_dim)
            table[..., 0], table[..., 1] = np.cos(angles), np.sin(angles)
        self.rope_table = self._buffer(table, "RoPE table")
        self._activations: dict[tuple[int, int], dict[str, Buffer]] = {}
        self._scratches: dict[str, Buffer] = {}
        self._predictions = self._scratch("predictions", 8)
        self.length = 0
        """Positions held in the cache."""

    def _buffer(self, data: np.ndarray, what: str) -> Buffer:
        buffer = self.gpu.storage_buffer(data.nbytes, what)
        self.gpu.write_storage(buffer, data)
        return buffer

    def reset(self) -> None:
        """Start a new sequence: the cache's positions are overwritten from position 0."""
        self.length = 0

    def activations(self, positions: int, logit_rows: int) -> dict[str, Buffer]:
        """Every activation's buffer with room for `positions` rows (logits: `logit_rows`), rounded up to a
        power of two and kept for later runs."""
        key = (min(next_pow2(positions), self.architecture.context_length), next_pow2(logit_rows))
        if key not in self._activations:
            rows = {name: key[1] if name == "logits" else key[0] for name in self.widths}
            self._activations[key] = {
                name: self.gpu.storage_buffer(4 * rows[name] * width, f"activation '{name}'")
                for name, width in self.widths.items()
            }
        return self._activations[key]

    def _check_tokens(self, ids: np.ndarray, steps: int = 0) -> None:
        a = self.architecture
        if not 1 <= len(ids) <= a.context_length - self.length - steps:
            raise PxglError(
                f"{self.length} cached + {len(ids)} new + {steps} generated tokens: the context holds "
                f"{a.context_length} positions"
            )
        if ids.min() < 0 or ids.max() >= a.vocab_size:
            raise PxglError(f"token ids must lie in 0..{a.vocab_size - 1}")

    def run(self, tokens: Sequence[int], all_logits: bool = True) -> Prefill:
        """Positions length.. of the tokens through every operation; the logits of every new position (or the
        last) read back with the GPU's predictions; the cache grows by len(tokens)."""
        ids = np.asarray(tokens, dtype=np.int64)
        self._check_tokens(ids)
        n, start = len(ids), self.length
        self.gpu.write_storage(self.tokens, ids.astype(np.int32), offset=4 * start)
        rows = n if all_logits else 1
        buffers = self.activations(n, rows)
        self._forward(Step(buffers, n, start, rows), token_at=-1)
        self.length += n
        v = self.architecture.vocab_size
        logits = np.frombuffer(self.gpu.read_storage(buffers["logits"], 4 * rows * v), np.float32).reshape(rows, v)
        predictions = np.frombuffer(self.gpu.read_storage(self._predictions, 8 * rows), np.uint32).reshape(rows, 2)
        return Prefill(logits.copy(), predictions[:, 0].astype(np.int64), predictions[:, 1].view(np.float32).copy())

    def generate(self, prompt: Sequence[int], steps: int) -> np.ndarray:
        """Greedy: the prompt appended, then `steps` tokens each the argmax of the position before it; the
        GPU writes each chosen id where the next step's embed reads it, and the host reads them at the end."""
        ids = np.asarray(prompt, dtype=np.int64)
        if steps < 1:
            raise PxglError(f"generate {steps} tokens: give at least 1")
        self._check_tokens(ids, steps)
        n, start = len(ids), self.length
        self.gpu.write_storage(self.tokens, ids.astype(np.int32), offset=4 * start)
        self._forward(Step(self.activations(n, 1), n, start, 1), token_at=start + n)
        step_buffers = self.activations(1, 1)
        for position in range(start + n, start + n + steps - 1):
            self._forward(Step(step_buffers, 1, position, 1), token_at=position + 1)
        self.length = start + n + steps - 1  # the last token is chosen, not run: a later call appends it first
        chosen = self.gpu.read_storage(self.tokens, 4 * steps, offset=4 * (start + n))
        return np.frombuffer(chosen, np.int32).astype(np.int64)

    # --- the passes ------------------------------------------------------------------------------
    def _forward(self, step: Step, token_at: int) -> None:
        for op in self.operations:
            PASSES[op.kind](self, op, step)
            self.gpu.barrier()
        self._predict(step.buffers["logits"], step.logit_rows, token_at)

    def _matrix(self, name: str) -> dict[str, object]:
        t = self.spec.tensors[name]
        return {
            "matrix": self.tensors[name],
            "m_quant": k.QUANT_CODES[t.quant],
            "m_scale": t.scale,
            "m_zero": float(t.zero_point),
        }

    def _elementwise(self, shader: str, count: int, **resources: object) -> None:
        groups = folded(ceil_div(count, GROUP))
        self.gpu.run(self.programs[shader], groups, count=count, groups_x=groups[0], **resources)

    def _embed(self, op: Operation, step: Step) -> None:
        buffers, n, start = step.buffers, step.positions, step.start
        width = self.architecture.width
        groups = folded(ceil_div(n * width, GROUP))
        for by_position, name in enumerate(op.tensors):
            if by_position:
                self.gpu.barrier()
            self.gpu.run(
                self.programs["tf_embed"],
                groups,
                **self._matrix(name),
                tokens=self.tokens,
                target=buffers[op.output],
                width=width,
                positions=n,
                start=start,
                by_position=by_position,
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
        """`rows` (0: all) of the step's last positions."""
        buffers, n = step.buffers, rows or step.positions
        out_dim, in_dim = self.spec.tensors[op.tensors[0]].shape
        bias = op.tensors[1] if len(op.tensors) > 1 else None
        rows = folded(out_dim)
        self.gpu.run(
            self.programs["tf_project"],
            (rows[0], rows[1], ceil_div(n, TILE)),
            **self._matrix(op.tensors[0]),
            source=buffers[op.inputs[0]],
            target=buffers[op.output],
            bias=self.tensors[bias or op.tensors[0]],
            in_dim=in_dim,
            out_dim=out_dim,
            positions=n,
            source_row0=step.positions - n,
            has_bias=int(bias is not None),
            groups_x=rows[0],
        )

    def _logits(self, op: Operation, step: Step) -> None:
        self._project(op, step, rows=step.logit_rows)

    def _rope(self, op: Operation, step: Step) -> None:
        buffers, n, start = step.buffers, step.positions, step.start
        a = self.architecture
        heads = self.widths[op.output] // a.head_dim
        groups = folded(ceil_div(n * heads * (a.head_dim // 2), GROUP))
        self.gpu.run(
            self.programs["tf_rope"],
            groups,
            target=buffers[op.output],
            table=self.rope_table,
            heads=heads,
            head_dim=a.head_dim,
            positions=n,
            start=start,
            pairs=int(a.rope is not None and a.rope.rotation == "pairs"),
            groups_x=groups[0],
        )

    def _attend(self, op: Operation, step: Step) -> None:
        buffers, n, start = step.buffers, step.positions, step.start
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
            kv_width=a.kv_heads * a.head_dim,
            row_words=self.row_words,
            positions=n,
            start=start,
            groups_x=groups[0],
        )
        self.gpu.barrier()
        segment = self.plan.attend_segment
        segments = ceil_div(start + n, segment)
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
                heads=a.heads,
                group_size=a.heads // a.kv_heads,
                head_dim=a.head_dim,
                row_words=self.row_words,
                start=start,
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

    def _scratch(self, what: str, size: int) -> Buffer:
        """A scratch buffer of at least `size` bytes, grown when a run needs more."""
        if what not in self._scratches or self._scratches[what].size < size:
            if what in self._scratches:
                self.gpu.release_storage(self._scratches[what])
            self._scratches[what] = self.gpu.storage_buffer(size, f"{what} scratch")
        return self._scratches[what]

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

    def _predict(self, logits: Buffer, rows: int, token_at: int) -> None:
        """Each logits row's id and softmax sum (tf_argmax, then its merge), into the predictions buffer."""
        v = self.architecture.vocab_size
        segment = self.plan.argmax_segment
        segments = ceil_div(v, segment)
        partial = self._scratch("argmax", 12 * rows * segments)
        self._predictions = self._scratch("predictions", 8 * rows)
        groups = (segments, rows, 1)
        self.gpu.run(
            self.programs["tf_argmax"],
            groups,
            logits=logits,
            partial=partial,
            vocab=v,
            segment=segment,
            segments=segments,
        )
        self.gpu.barrier()
        self.gpu.run(
            self.programs["tf_argmax_merge"],
            (rows, 1, 1),
            partial=partial,
            predictions=self._predictions,
            tokens=self.tokens,
            segments=segments,
            token_at=token_at,
        )
        self.gpu.barrier()

    def close(self) -> None:
        buffers = [*self.tensors.values(), *self.keys, *self.values, self.tokens, self.rope_table]
        buffers += [b for group in self._activations.values() for b in group.values()]
        buffers += list(self._scratches.values())
        for buffer in buffers:
            self.gpu.release_storage(buffer)
        self.tensors.clear()
        self._activations.clear()


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
