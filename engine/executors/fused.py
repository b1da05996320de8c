"""The fused executor: the whole forward pass (docs/FORMATS.md §3) in one to three compute dispatches per part of
a run, for every family member inside its envelope (fused_weights.supports).

Once, at load, the weights are rearranged into float buffers (fused_weights.py): the first layer becomes
table rows per context slot and token (it is linear before its ReLU), the attention head's projections
become tables too. Then each run is a dispatch of

    fused_small   few prompts: work groups over vocabulary slices, merged on the GPU (single prompts: the
                  same kernel left running, fused_resident.py, where the GPU and the model allow)
    fused_tiles   batches: TILE_M prompts a work group, register tiles of logits, fused online softmax
                  (when scoring, or where fused_logits' shape does not fit the GPU), or two dispatches a
                  part of a batch: fused_tiles writes the hidden units, fused_logits.comp runs the logits
                  as a GEMM with the same fused softmax (fused_gemm.py)

so logits never reach memory. The kernels' declarations and work shapes are in fused_config.py. Prompts arrive
as token-texture rows (the Executor protocol, and scoring: rows may be empty) or as uint16 ids (the engine's
lean paths) and are uploaded to device memory; the GPU writes each prediction straight into host memory (a
persistent mapped buffer), and when scoring each target's log-probability into a device buffer. A few prompts
are waited for by watching those words change from the poison left in them (no fence, no glFinish, no readback
call); a batch, cut into chunks so that preparing, uploading and reading one overlaps computing another, by a
fence a chunk."""

import struct
from dataclasses import dataclass

import numpy as np

from ..constants import POISON_WORD, REFUSED_WORD, WRITTEN_ALPHA
from ..errors import PxglError
from ..gl import Buffer, BufferRange, GLBackend, GpuProgram, MappedBuffer
from ..kernel import ceil_div
from .fused_config import (
    FUSED_HIDDEN,
    FUSED_SMALL,
    FUSED_SMALL_SCORING,
    FUSED_TILES,
    FUSED_TILES_SCORING,
    HEADER_BYTES,
    IDS,
    LAYOUTS,
    PIXELS,
    FusedConfig,
    hidden_constants,
    kernel_constants,
    loop_refusal,
    small_constants,
    tile_constants,
)
from .fused_gemm import GemmParts
from .fused_loops import MAX_ROW_TOKENS
from .fused_weights import (
    WeightsLayout,
    cached_weights,
    check_envelope,
    grid,
    weights_layout,
)
from .protocol import ExecutorInputs, Trace, next_pow2

MAX_TILE = 1 << 20
"""Prompts per run at most: the largest batch the bench times; buffers grow to it only when used."""
"""Id rows up to this long are checked on the GPU (a batch chunk whose ids the host found all in the vocabulary
goes as windows); longer ones are checked and cut here."""
SPIN_LIMIT = 2_000_000
"""Polls of the prediction words before falling back to a fence (a GPU that never writes them)."""


def window_columns(ids: np.ndarray, window: int) -> np.ndarray:
    """The last `window` columns of (n, L) uint16 ids as a contiguous (n, window) array, each row's window
    copied as one opaque item (numpy copies 2-byte items of a strided view several times slower)."""
    ids = np.ascontiguousarray(ids, dtype=np.uint16)
    length = ids.shape[1]
    tail = np.dtype(
        {"names": ["w"], "formats": [f"V{2 * window}"], "offsets": [2 * (length - window)], "itemsize": 2 * length}
    )
    return ids.view(tail).reshape(-1)["w"].copy().view(np.uint16).reshape(-1, window)


@dataclass(frozen=True)
class RunBuffers:
    """Buffers for runs of up to `capacity` prompts, `chunk` a dispatch: prompts in device memory, a buffer per
    chunk (writing a buffer the GPU still reads stalls until it is done: few prompts take turns between two
    for the same reason), predictions in mapped host memory."""

    capacity: int
    chunk: int
    row_bytes: int  # per prompt row, at most
    prompts: tuple[Buffer, ...]
    predictions: MappedBuffer
    words: np.ndarray  # (capacity,) uint32 view of the predictions


class FusedExecutor:
    """The forward pass fused into one dispatch: weights prepared once, logits kept in registers."""

    def __init__(self, gpu: GLBackend, inputs: ExecutorInputs, tuning: FusedConfig | None = None) -> None:
        spec = inputs.spec
        check_envelope(spec, gpu)
        self.gpu, self.spec = gpu, spec
        self.config = (tuning or FusedConfig()).fitted(gpu, spec)
        reason = loop_refusal(spec, self.config)
        if reason is not None:
            raise PxglError(f"{reason}; the passes executor runs every family member")
        self.constants = kernel_constants(spec, self.config)
        self.layout: WeightsLayout = weights_layout(spec, self.constants.int("VOCAB_PAD"))
        self.prepared = cached_weights(gpu, spec, inputs.weights, self.layout)
        self._weights = self.prepared.resources()
        self._small_constants = {
            (layout, scoring): small_constants(self.constants, layout, scoring)
            for layout in LAYOUTS
            for scoring in (False, True)
        }
        self._tile_constants = {
            (layout, scoring): tile_constants(self.constants, self.config, layout, scoring)
            for layout in LAYOUTS
            for scoring in (False, True)
            if self.config.tile_m
        }
        gemm = self.config.gemm
        self._hidden_constants = (
            {layout: hidden_constants(self.constants, self.config, layout) for layout in LAYOUTS} if gemm else {}
        )
        self._gemm: GemmParts | None = None
        largest_row = max(3 * spec.context_window, 2 * MAX_ROW_TOKENS)
        small = self.config.small_max
        self.scratch = gpu.storage_buffer(16 * ceil_div(4 * small, 16) + 16 * small * self.config.split, "scratch")
        gpu.write_storage(self.scratch, np.zeros(small, np.uint32))
        by_storage = (gpu.limits.max_storage_block_size - HEADER_BYTES) // largest_row
        self.max_tile = min(MAX_TILE, by_storage) if self.config.tile_m else small
        self._small = self._buffers(small, small, 3 * spec.context_window)
        self._small_turn = 0
        self.weights = inputs.weights
        self.generation_cache: dict[str, Buffer] = {}
        """Buffers generation prepares once (fused_generation.py), freed with the executor."""
        self.small_generator: GpuProgram | None = None
        """fused_small compiled for generation (fused_generation.py), once its shape is known."""
        self._batches: dict[int, RunBuffers] = {}
        self._scores: tuple[Buffer, Buffer] | None = None
        """(targets, logprobs) device buffers of the last scoring run's capacity."""
        self._one_rows: dict[int, struct.Struct] = {}

    # --- the Executor protocol ---------------------------------------------------------------------
    def run(self, tails: np.ndarray) -> np.ndarray:
        """(n, context_window, 3) validated token rows → (n, 3) prediction pixels."""
        pixels, refused = self._run(np.ascontiguousarray(tails, dtype=np.uint8), PIXELS)
        if refused is not None:
            raise PxglError(f"prompt {refused}: a token id ≥ vocab size {self.spec.vocab_size}")
        return pixels

    def score(self, tails: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, context_window, 3) token rows (a row may be empty: an empty context) and (n,) target ids →
        (n, 3) prediction pixels and (n,) float32 log p(target) (docs/FORMATS.md §9)."""
        n = len(tails)
        if self._scores is None or self._scores[0].size < 4 * n:
            if self._scores is not None:
                for buffer in self._scores:
                    self.gpu.release_storage(buffer)
            capacity = next_pow2(n)
            self._scores = (
                self.gpu.storage_buffer(4 * capacity, "targets"),
                self.gpu.storage_buffer(4 * capacity, "log-probabilities"),
            )
        self.gpu.write_storage(self._scores[0], np.ascontiguousarray(targets, dtype=np.uint32))
        pixels, refused = self._run(np.ascontiguousarray(tails, dtype=np.uint8), PIXELS, scoring=True)
        if refused is not None:
            raise PxglError(f"prompt {refused}: a token id ≥ vocab size {self.spec.vocab_size}")
        self.gpu.storage_barrier()  # shader writes are visible to the buffer read that follows
        logprobs = np.frombuffer(self.gpu.read_storage(self._scores[1], 4 * n), dtype=np.float32)
        return pixels, logprobs.copy()

    def trace(self, tails: np.ndarray) -> Trace:
        """The fused pass keeps no intermediate in memory: only the tokens and predictions to show."""
        prediction = self.run(tails)[:, None, :]
        return Trace(tokens=np.array(tails), context=None, hidden=None, logits=None, prediction=prediction)

    def poison(self) -> None:
        for buffers in (self._small, *self._batches.values()):
            buffers.words[:] = POISON_WORD

    def close(self) -> None:
        for buffers in (self._small, *self._batches.values()):
            self._release(buffers)
        self._batches.clear()
        for buffer in (*self.prepared.buffers(), self.scratch, *(self._scores or ()), *self.generation_cache.values()):
            self.gpu.release_storage(buffer)
        if self._gemm is not None:
            self._gemm.close()

    # --- lean paths (engine.Engine.predict_one / predict_array) -----------------------------------
    def run_ids(self, ids: np.ndarray) -> tuple[np.ndarray, int | None]:
        """(n, L) uint16 ids → (n, 3) prediction pixels, and the first prompt holding an id ≥ vocab_size
        (found by the GPU as it reads them; the pixels are then void) or None."""
        window, vocab = self.spec.context_window, self.spec.vocab_size
        if window < ids.shape[1] <= MAX_ROW_TOKENS and len(ids) > self.config.small_max:
            return self._run(np.ascontiguousarray(ids, dtype=np.uint16), IDS, window=window)
        if ids.shape[1] > max(window, MAX_ROW_TOKENS):
            refused = np.flatnonzero((ids[:, :-window] >= vocab).any(axis=1))
            pixels, refused_in_window = self._run(np.ascontiguousarray(ids[:, -window:]), IDS)
            firsts = [int(r) for r in (*refused[:1], refused_in_window) if r is not None]
            return pixels, min(firsts, default=None)
        return self._run(np.ascontiguousarray(ids, dtype=np.uint16), IDS)

    def run_one(self, ids: list[int]) -> np.ndarray:
        """One prompt's last ≤ context_window ids (already checked: 0 ≤ id < vocab_size) → (3,) pixel."""
        row = self._one_rows.get(len(ids))
        if row is None:
            row = self._one_rows[len(ids)] = struct.Struct(f"<4I{len(ids)}H")
        buffers = self._small
        prompts = self._next_small_prompts()
        self.gpu.write_storage(prompts, row.pack(1, len(ids), 0, 0, *ids))
        buffers.words[0] = POISON_WORD
        self._dispatch_small(buffers, prompts, 1, IDS)
        word = int(buffers.words[0])
        if word >> 24 != WRITTEN_ALPHA:
            raise PxglError(f"the GPU refused or did not write the prediction (word {word:#010x})")
        return buffers.predictions.view[:3].copy()

    # --- runs --------------------------------------------------------------------------------------
    def _run(
        self, rows: np.ndarray, layout: str, scoring: bool = False, window: int = 0
    ) -> tuple[np.ndarray, int | None]:
        """Prediction pixels of `rows` and the first refused prompt. A batch goes in chunks, each uploaded and
        dispatched while the GPU runs the one before, whose words are then read while it runs this one;
        `window` > 0 (ids): a chunk whose ids are all in the vocabulary is uploaded as its rows' last `window`
        ids only."""
        n = len(rows)
        if n > self.max_tile:
            raise PxglError(f"fused executor: {n} prompts in one run, at most {self.max_tile}")
        row_bytes = rows[0].nbytes if n else 0
        small = n <= self.config.small_max
        if small:
            if row_bytes > self._small.row_bytes:
                self._release(self._small)
                self._small = self._buffers(self.config.small_max, self.config.small_max, row_bytes)
            buffers = self._small
        else:
            buffers = self._batch_buffers(n, row_bytes)
        words = buffers.words[:n]
        written = buffers.predictions.view[: 4 * n].reshape(n, 4)
        out = np.empty((n, 4), np.uint8)
        pending: list[tuple[slice, int]] = []  # chunks dispatched, with their fences
        try:
            for start in range(0, n, buffers.chunk):
                chunk = slice(start, min(start + buffers.chunk, n))
                words[chunk] = POISON_WORD  # a word the GPU fails to write cannot pass for one it wrote
                part = rows[chunk]
                if window and int(part.max()) < self.spec.vocab_size:
                    part = window_columns(part, window)  # checked here: the GPU needs only the windows
                prompts = self._next_small_prompts() if small else buffers.prompts[start // buffers.chunk]
                self._upload(prompts, part)
                if small:
                    self._dispatch_small(buffers, prompts, n, layout, scoring)
                    continue
                self._dispatch_chunk(buffers, prompts, part, chunk, layout, scoring)
                self.gpu.mapped_read_barrier()
                pending.append((chunk, self.gpu.fence()))
                self.gpu.flush()  # start this chunk now, while the next one uploads
                if len(pending) > 1:  # the GPU is busy with this chunk: read the one before
                    done, fence = pending.pop(0)
                    self.gpu.wait(fence)
                    out[done] = written[done]
        finally:  # also when a chunk failed: no run leaves the GPU writing words the next one poisons
            for done, fence in pending:
                self.gpu.wait(fence)
                out[done] = written[done]
        if small:
            out[:] = written
        unwritten = out[:, 3] != WRITTEN_ALPHA
        pixels = out[:, :3]  # a view of whole words: copying them was one memcpy, 3 bytes a row are not
        if not unwritten.any():
            return pixels, None
        first = int(np.flatnonzero(unwritten)[0])
        if words[first] != REFUSED_WORD:
            raise PxglError(f"the GPU did not write the prediction of prompt {first} (word {words[first]:#010x})")
        return pixels, first

    def _upload(self, prompts: Buffer, rows: np.ndarray) -> None:
        self.gpu.write_storage(prompts, np.array([len(rows), rows.shape[1], 0, 0], np.uint32))
        self.gpu.write_storage(prompts, rows, HEADER_BYTES)

    def _dispatch_chunk(
        self, buffers: RunBuffers, prompts: Buffer, rows: np.ndarray, chunk: slice, layout: str, scoring: bool
    ) -> None:
        """Queue a batch chunk's dispatches: the GEMM path's, or fused_tiles' (always when scoring)."""
        start, count = chunk.start, chunk.stop - chunk.start
        size = 16 * ceil_div(HEADER_BYTES + rows.nbytes, 16)  # whole words: a row may end mid-word
        if self.config.gemm and not scoring:
            hidden = self.gpu.program(FUSED_HIDDEN, self._hidden_constants[layout], self.config.gemm.hidden_threads)
            self._gemm_parts(count).run(
                hidden, self._weights, BufferRange(prompts, 0, size), count, buffers.predictions.buffer, start
            )
            return
        kernel = FUSED_TILES_SCORING if scoring else FUSED_TILES
        scores = self._score_resources(start, count) if scoring else {}
        self.gpu.run(
            self.gpu.program(kernel, self._tile_constants[layout, scoring], self.config.tile_threads),
            grid(ceil_div(count, self.config.tile_m)),
            **self._weights,
            prompts=BufferRange(prompts, 0, size),
            predictions=BufferRange(buffers.predictions.buffer, 4 * start, 4 * count),
            **scores,
        )

    def _gemm_parts(self, prompts: int) -> GemmParts:
        """The GEMM path's buffers, grown to parts of `prompts` (up to their largest): a few hundred prompts
        need a few MB of hidden units, not the 64 MB a large batch's part takes."""
        held = self._gemm
        if held is None or (held.part < prompts and held.part < held.largest_part):
            assert self.config.gemm is not None
            if held is not None:
                held.close()
            hidden_tile = self.config.hidden_tile_m or self.config.tile_m
            wanted = max(prompts, 2 * held.part if held else 0)  # doubling: a growing batch regrows rarely
            self._gemm = GemmParts(self.gpu, self.config.gemm, self.constants, hidden_tile, wanted)
        return self._gemm

    def _score_resources(self, start: int, count: int) -> dict[str, BufferRange]:
        assert self._scores is not None
        targets, logprobs = self._scores
        return {
            "targets": BufferRange(targets, 4 * start, 4 * count),
            "logprobs": BufferRange(logprobs, 4 * start, 4 * count),
        }

    def _next_small_prompts(self) -> Buffer:
        self._small_turn = 1 - self._small_turn
        return self._small.prompts[self._small_turn]

    def _dispatch_small(self, buffers: RunBuffers, prompts: Buffer, n: int, layout: str, scoring: bool = False) -> None:
        """Dispatch fused_small over the first n prompts and wait until their prediction words are written."""
        self.gpu.storage_barrier()  # the previous run's arrival counts, reset on the GPU, are visible
        kernel = FUSED_SMALL_SCORING if scoring else FUSED_SMALL
        scores = self._score_resources(0, n) if scoring else {}
        self.gpu.run(
            self.gpu.program(kernel, self._small_constants[layout, scoring], self.config.small_threads),
            (self.config.split, n, 1),
            **self._weights,
            prompts=prompts,
            predictions=buffers.predictions,
            scratch=self.scratch,
            **scores,
        )
        self.gpu.mapped_read_barrier()
        if self.config.sync == "fence" or scoring or not self.gpu.spin_polls:
            self.gpu.wait_for_gpu()
            return
        self.gpu.flush()
        words = buffers.words
        for _ in range(SPIN_LIMIT):
            if words[n - 1] != POISON_WORD and (n == 1 or (words[:n] != POISON_WORD).all()):
                return
        self.gpu.wait_for_gpu()  # the caller then finds any word still unwritten

    def _buffers(self, capacity: int, chunk: int, row_bytes: int) -> RunBuffers:
        size = 16 * ceil_div(HEADER_BYTES + chunk * row_bytes, 16)
        count = max(ceil_div(capacity, chunk), 2)
        prompts = tuple(self.gpu.storage_buffer(size, "prompts") for _ in range(count))
        predictions = self.gpu.mapped_buffer(4 * capacity, "predictions")
        buffers = RunBuffers(capacity, chunk, row_bytes, prompts, predictions, predictions.view.view(np.uint32))
        buffers.words[:] = POISON_WORD
        return buffers

    def _batch_buffers(self, n: int, row_bytes: int) -> RunBuffers:
        capacity = min(next_pow2(n), self.max_tile)
        held = self._batches.get(capacity)
        if held is None or held.row_bytes < row_bytes:
            if held is not None:
                self._release(held)
            self._batches[capacity] = self._buffers(capacity, min(capacity, self.config.chunk), row_bytes)
        return self._batches[capacity]

    def _release(self, buffers: RunBuffers) -> None:
        for prompts in buffers.prompts:
            self.gpu.release_storage(prompts)
        self.gpu.release_mapped(buffers.predictions)
