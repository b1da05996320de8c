"""The fused executor of version 2 (docs/FORMATS.md §14.4): the same forward as the operation list, in few
dispatches a layer — (norm + q/k/v products + biases + RoPE + the float16 cache store), (attention split over
the cached keys), (the segments' merge + out product + residual), (norm + up/gate products + activation),
(down product + residual): five, whatever the architecture; then (final norm + logits). A product's weights
are dequantized once for a tile of rows (glsl/tff_matvec.comp), and attention never writes its scores.

Rows are (slot, position) pairs, as the executors' shared API has them; until that API lands this class holds
one slot: `run` appends positions and gives their logits and predictions, `generate` appends a prompt and
greedy tokens chosen on the GPU (passes' argmax kernels), read back once."""

from collections.abc import Sequence

import numpy as np

from ...errors import PxglError
from ...gl import Buffer, GLBackend
from ...kernel import DISPATCH_LOOPS
from ..gpu.executor import Prefill, folded
from ..gpu.kernels import ARGMAX, ARGMAX_MERGE, kernel_constants
from ..gpu.loops import GROUP, argmax_loops, ceil_div, reduction_loops
from ..meta import TransformerSpec
from ..numpy_executor import rope_frequencies
from .kernels import ATTEND, EMBED, MATVEC, TILES, matvec_constants, plan_fused
from .packs import Pack, Packs, Record

ROWS_AT_ONCE = 256
"""Rows one forward runs at most: a longer prefill runs in blocks (the cache makes them exact)."""
ATTEND_SCRATCH = 1 << 23
"""Floats of attention partials one forward writes at most."""
STAGES = ("qkv", "out", "up", "down")


class FusedTransformer:
    """One version-2 model on the GPU, fused: `run`, `generate`, `reset`, `close`, as PassesTransformer."""

    def __init__(
        self, gpu: GLBackend, spec: TransformerSpec, weight_bytes: bytes | np.ndarray, loop_budget: int = DISPATCH_LOOPS
    ) -> None:
        self.gpu, self.spec, self.architecture = gpu, spec, spec.architecture
        a = self.architecture
        self.plan = plan_fused(a, loop_budget)
        self.packs = Packs(spec)
        self.packs.check(gpu.limits.max_storage_block_size)
        self.records = self._records()
        argmax_segment = GROUP * max(1, min(loop_budget - reduction_loops(), ceil_div(a.vocab_size, GROUP)))
        if argmax_loops(argmax_segment) > loop_budget:
            raise PxglError(f"the argmax of {a.vocab_size:,} logits is past {loop_budget:,} loops an invocation")
        self.argmax_segment = argmax_segment
        bounds = {"LOOP_ARGMAX_SEGMENT": argmax_segment, "LOOP_ARGMAX_SEGMENTS": ceil_div(a.vocab_size, argmax_segment)}
        argmax_constants = kernel_constants(a.head_dim, bounds)
        self.argmax = gpu.program(ARGMAX, argmax_constants, GROUP)
        self.argmax_merge = gpu.program(ARGMAX_MERGE, argmax_constants, GROUP)
        self.embed = gpu.program(EMBED, self.plan.constants, GROUP)
        self.attend = gpu.program(ATTEND, self.plan.constants, GROUP)
        gelu = "gated" if a.mlp_kind == "silu_gated" else "gelu"
        kinds = {"qkv": ("norm", "qkv"), "out": ("attention", "residual"), "up": ("norm", gelu)}
        kinds |= {"down": ("plain", "residual"), "logits": ("norm", "logits")}
        self.matvecs = {
            (tile, stage): gpu.program(MATVEC, matvec_constants(self.plan, tile, *kind), GROUP)
            for tile in TILES
            for stage, kind in kinds.items()
        }
        stream = np.frombuffer(weight_bytes, np.uint8) if isinstance(weight_bytes, bytes) else weight_bytes.reshape(-1)
        self.buffers = {
            id(pack): self._buffer(self.packs.bytes_of(pack, stream), pack.what) for pack in self.packs.all()
        }
        self.params = self._buffer(np.array(self.packs.params, np.int32), "dispatch records")
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
        self._scratches: dict[str, Buffer] = {}
        self.length = 0
        """Positions held in the cache."""

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

    def _buffer(self, data: np.ndarray, what: str) -> Buffer:
        buffer = self.gpu.storage_buffer(data.nbytes, what)
        self.gpu.write_storage(buffer, data)
        return buffer

    def _scratch(self, what: str, size: int) -> Buffer:
        """A scratch buffer of at least `size` bytes, grown when a run needs more."""
        if what not in self._scratches or self._scratches[what].size < size:
            if what in self._scratches:
                self.gpu.release_storage(self._scratches[what])
            self._scratches[what] = self.gpu.storage_buffer(max(size, 4), f"{what} scratch")
        return self._scratches[what]

    def reset(self) -> None:
        """Start a new sequence: the cache's positions are overwritten from position 0."""
        self.length = 0

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
        """Positions length.. of the tokens through the model; the logits of every new position (or the last)
        read back with the GPU's predictions; the cache grows by len(tokens)."""
        ids = np.asarray(tokens, dtype=np.int64)
        self._check_tokens(ids)
        start, n = self.length, len(ids)
        self.gpu.write_storage(self.tokens, ids.astype(np.int32), offset=4 * start)
        v = self.architecture.vocab_size
        logits, ids_out, sums = [], [], []
        block = self._block_rows()
        for first in range(start, start + n, block):
            count = min(block, start + n - first)
            rows = count if all_logits else int(first + count == start + n)
            if rows:
                self._forward(first, count, rows, token_at=-1)
                out = self._read_predictions(rows)
                logits.append(
                    np.frombuffer(
                        self.gpu.read_storage(self._scratch("logits", 4 * rows * v), 4 * rows * v), np.float32
                    )
                    .reshape(rows, v)
                    .copy()
                )
                ids_out.append(out[0])
                sums.append(out[1])
            else:
                self._forward(first, count, 0, token_at=-1)
        self.length += n
        return Prefill(np.concatenate(logits), np.concatenate(ids_out), np.concatenate(sums))

    def generate(self, prompt: Sequence[int], steps: int) -> np.ndarray:
        """Greedy: the prompt appended, then `steps` tokens each the argmax of the position before it; the GPU
        writes each chosen id where the next step's embed reads it, and the host reads them at the end."""
        ids = np.asarray(prompt, dtype=np.int64)
        if steps < 1:
            raise PxglError(f"generate {steps} tokens: give at least 1")
        self._check_tokens(ids, steps)
        start, n = self.length, len(ids)
        self.gpu.write_storage(self.tokens, ids.astype(np.int32), offset=4 * start)
        block = self._block_rows()
        for first in range(start, start + n, block):
            count = min(block, start + n - first)
            last = first + count == start + n
            self._forward(first, count, int(last), token_at=first + count if last else -1)
        for position in range(start + n, start + n + steps - 1):
            self._forward(position, 1, 1, token_at=position + 1)
        self.length = start + n + steps - 1  # the last token is chosen, not run: a later call appends it first
        chosen = self.gpu.read_storage(self.tokens, 4 * steps, offset=4 * (start + n))
        return np.frombuffer(chosen, np.int32).astype(np.int64)

    def _block_rows(self) -> int:
        a = self.architecture
        per_row = a.heads * self.plan.segments * (a.head_dim + 2)
        return max(1, min(ROWS_AT_ONCE, ATTEND_SCRATCH // per_row))

    # --- the forward ----------------------------------------------------------------------------
    def _forward(self, start: int, n: int, logit_rows: int, token_at: int) -> None:
        """Positions start..start + n - 1 of slot 0 through every layer; the last `logit_rows` rows' logits and
        predictions (and, token_at ≥ 0, the chosen id written there)."""
        a, gpu = self.architecture, self.gpu
        rows = np.stack([np.zeros(n, np.int32), np.arange(start, start + n, dtype=np.int32)], axis=1)
        row_buffer = self._scratch("rows", rows.nbytes)
        gpu.write_storage(row_buffer, rows)
        tile = 1 if n == 1 else TILES[-1]
        x = self._scratch("x", 4 * n * a.width)
        q = self._scratch("q", 4 * n * a.heads * a.head_dim)
        inner = self._scratch("inner", 4 * n * a.mlp_width)
        segments = ceil_div(start + n, self.plan.attend_segment)
        partial = self._scratch("attend", 4 * n * a.heads * segments * (a.head_dim + 2))
        groups = folded(ceil_div(n * a.width, GROUP))
        gpu.run(
            self.embed,
            groups,
            weights=self.buffers[id(self.packs.ends)],
            params=self.params,
            tokens=self.tokens,
            rows=row_buffer,
            target=x,
            run=(self.embed_record.at, n, 0, groups[0]),
        )
        gpu.barrier()
        for layer, (packs, records) in enumerate(zip(self.packs.layers, self.records, strict=True)):
            common = {"rows": row_buffer, "keys": self.keys[layer], "values": self.values[layer]}
            self._matvec(tile, "qkv", packs["attn_in"], records["qkv"], n, x, q, **common)
            gpu.run(
                self.attend,
                (segments, a.heads, n),
                q=q,
                keys=self.keys[layer],
                values=self.values[layer],
                rows=row_buffer,
                partial=partial,
                run=(0, segments),
            )
            gpu.barrier()
            self._matvec(tile, "out", packs["attn_out"], records["out"], n, partial, x, segments=segments, **common)
            self._matvec(tile, "up", packs["mlp_in"], records["up"], n, x, inner, **common)
            self._matvec(tile, "down", packs["mlp_down"], records["down"], n, inner, x, **common)
        if logit_rows:
            logits = self._scratch("logits", 4 * logit_rows * a.vocab_size)
            common = {"rows": row_buffer, "keys": self.keys[0], "values": self.values[0]}
            self._matvec(
                1 if logit_rows == 1 else TILES[-1],
                "logits",
                self.packs.ends,
                self.logits_record,
                logit_rows,
                x,
                logits,
                source_row0=n - logit_rows,
                **common,
            )
            self._predict(logits, logit_rows, token_at)

    def _matvec(
        self,
        tile: int,
        stage: str,
        pack: Pack,
        record: Record,
        n: int,
        source: Buffer,
        target: Buffer,
        source_row0: int = 0,
        segments: int = 1,
        **common: Buffer,
    ) -> None:
        """One tff_matvec stage over n rows, in as many dispatches as its input columns need."""
        in_dim = self.packs.params[record.at]
        span = self.plan.spans[tile]
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
                table=self.rope_table,
                scratch=scratch,
                run=(record.at, n, source_row0, groups[0]),
                split=(piece * span, span, flags, segments),
                **common,
            )
            self.gpu.barrier()

    def _predict(self, logits: Buffer, rows: int, token_at: int) -> None:
        v = self.architecture.vocab_size
        segments = ceil_div(v, self.argmax_segment)
        partial = self._scratch("argmax", 12 * rows * segments)
        predictions = self._scratch("predictions", 8 * rows)
        self.gpu.run(
            self.argmax,
            (segments, rows, 1),
            logits=logits,
            partial=partial,
            vocab=v,
            segment=self.argmax_segment,
            segments=segments,
        )
        self.gpu.barrier()
        self.gpu.run(
            self.argmax_merge,
            (rows, 1, 1),
            partial=partial,
            predictions=predictions,
            tokens=self.tokens,
            segments=segments,
            token_at=token_at,
        )
        self.gpu.barrier()

    def _read_predictions(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        raw = np.frombuffer(self.gpu.read_storage(self._scratches["predictions"], 8 * rows), np.uint32).reshape(rows, 2)
        return raw[:, 0].astype(np.int64), raw[:, 1].view(np.float32).copy()

    def close(self) -> None:
        buffers = [*self.buffers.values(), self.params, *self.keys, *self.values, self.tokens, self.rope_table]
        for buffer in buffers + list(self._scratches.values()):
            self.gpu.release_storage(buffer)
        self.buffers.clear()
        self._scratches.clear()
