"""The reusable engine: open a model once (weights upload, kernels compiled), then predict many times.

It validates token textures, cuts each prompt to its last `context_window` tokens and feeds tiles that
respect the GPU's limits to the executor the front door chose (engine/loading.py).

Lifecycle and threads: `Engine.close()` (or `with Engine(...) as engine:`) frees its GPU resources and its
GL context. A GL context belongs to the thread that created it: an Engine must be built, used and closed
on one thread; a call from another raises RuntimeError (a server gives each engine one owning thread)."""

import operator
import re
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType

import numpy as np

from .constants import TOKEN_MARK
from .errors import PxglError
from .executors import AUTO, EXECUTORS, Executor, ExecutorInputs, LeanExecutor, ScoringExecutor, Trace, resolve
from .executors.generation import (
    StepOutputs,
    check_generates,
    generation_job,
    stream_chunks,
    stream_tile,
    tile_rows,
)
from .generation import GeneratedStep, Generation, Sampling, check_steps, check_top_logprobs
from .gl import GLBackend, gl_errors
from .loading import Runnable, plan
from .model import Model
from .pacing import ChunkSizer
from .pxi import encode_tokens, token_lengths, token_tails
from .pxvm.program import Program
from .transformer.model import TransformerModel

BLOCK_PIXELS = 1 << 20
"""Token pixels validated at a time."""
PASSES = "passes"
"""The executor that generates everything: sampled, and with alternatives."""


class Engine:
    def __new__(cls, model: "Model | Runnable | TransformerModel", **options: object) -> "Engine":
        """A version-2 model (§14) opens as a TransformerEngine: the same verbs over a transformer."""
        if cls is Engine and isinstance(model.model if isinstance(model, Runnable) else model, TransformerModel):
            from .transformer.engine import TransformerEngine

            return TransformerEngine(model, **options)  # type: ignore[return-value,arg-type]
        return super().__new__(cls)

    def __init__(
        self,
        model: Model | Runnable,
        *,
        executor: str | None = None,
        program: Path | Program | None = None,
        device: int | None = None,
        gpu: GLBackend | None = None,
        tuning: object | None = None,
    ) -> None:
        """`model`: what engine.loading.open_model returns, or a Model (then `executor` and `program` are
        chosen by engine.loading.plan). `tuning`: the executor's own work-shape settings (bench, tests)."""
        runnable = model if isinstance(model, Runnable) else plan(model, executor, program)
        if isinstance(model, Runnable) and (executor is not None or program is not None):
            raise TypeError("a Runnable already says its executor and program; pass a Model to choose them")
        self.runnable = runnable
        self.model = runnable.model
        self.spec = self.model.spec
        self._owns_gpu = gpu is None
        self.gpu = gpu if gpu is not None else GLBackend(device)
        self._closed = False
        self.executor_name = resolve(runnable.executor, self.spec, self.gpu)
        """The executor that runs: the one chosen, `auto` decided for this GPU."""
        with gl_errors(self.model.source):
            self.weights = self.gpu.uint_texture(self.model.weights, f"{self.model.source}: weight texture")
            inputs = ExecutorInputs(self.spec, self.weights, runnable.program)
            self.executor: Executor = EXECUTORS[self.executor_name](self.gpu, inputs, tuning)
        self._lean = isinstance(self.executor, LeanExecutor)
        self._passes: Executor | None = None
        """An `auto` engine's passes executor, on the same weights, made for the first generation its own
        executor cannot run."""
        self._spare_outputs: StepOutputs | None = None
        """The last generation's step outputs, reused by the next one that fits in them."""

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the executor's GPU resources, the weights and (if the engine made it) the GL context."""
        if self._closed:
            return
        self._check_thread()
        self._closed = True
        if self._spare_outputs is not None:
            self._spare_outputs.release(self.gpu)
        if self._passes is not None:
            self._passes.close()
        self.executor.close()
        self.weights.release()
        if self._owns_gpu:
            self.gpu.release()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None):
        self.close()

    def _check_thread(self) -> None:
        if threading.get_ident() != self.gpu.thread:
            raise RuntimeError("an Engine is used on the thread that created it (its GL context is bound there)")
        if self._closed:
            raise RuntimeError("this Engine is closed")

    # --- predictions -------------------------------------------------------------------------------
    def _tails(self, token_pixels: np.ndarray, source: str) -> np.ndarray:
        """Validate a token texture and cut each row to its last context_window tokens, a block of rows at a
        time: the validation's temporaries stay near BLOCK_PIXELS whatever the texture's size."""
        if token_pixels.ndim != 3 or token_pixels.shape[2] != 3 or 0 in token_pixels.shape:
            raise PxglError(f"{source}: expected an RGB token texture, got an array of shape {token_pixels.shape}")
        height, width, _ = token_pixels.shape
        window = self.spec.context_window
        tails = np.empty((height, window, 3), dtype=np.uint8)
        block = max(1, BLOCK_PIXELS // width)
        for start in range(0, height, block):
            rows = token_pixels[start : start + block]
            try:
                lengths = token_lengths(rows, self.spec.vocab_size, source)
            except PxglError as e:  # number the row in the whole texture, not in the block
                row = re.compile(rf"^{re.escape(source)}: row (\d+)")
                raise PxglError(
                    row.sub(lambda m, at=start: f"{source}: row {int(m[1]) + at}", str(e), count=1)
                ) from None
            tails[start : start + block] = token_tails(rows, lengths, window)
        return tails

    def predict(
        self, token_pixels: np.ndarray, source: str = "token texture", on_tile: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for a token texture of B rows (docs/FORMATS.md §4, §5).
        `on_tile(n)` is called after each tile of n prompts (for progress bars): tiles then sized by time
        (engine/pacing.py), so progress moves on a CPU renderer too."""
        self._check_thread()
        tails = self._tails(token_pixels, source)
        out = np.empty((len(tails), 1, 3), dtype=np.uint8)
        sizer = ChunkSizer(self.executor.max_tile)
        start = 0
        with gl_errors(source):
            while start < len(tails):
                began = time.monotonic()
                chunk = tails[start : start + (self.executor.max_tile if on_tile is None else sizer.size)]
                out[start : start + len(chunk), 0] = self.executor.run(chunk)
                start += len(chunk)
                if on_tile is not None:
                    sizer.after(len(chunk), time.monotonic() - began)
                    on_tile(len(chunk))
        return out

    def predict_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Prediction pixels for prompts of token ids; only each one's last context_window tokens are kept."""
        vocab, window = self.spec.vocab_size, self.spec.context_window
        for r, row in enumerate(rows):
            ids = np.asarray(row)
            if ids.size == 0:
                raise PxglError(f"prompt {r} is empty: every prompt needs at least one token")
            bad = np.flatnonzero((ids < 0) | (ids >= vocab))
            if bad.size:
                i = int(bad[0])
                raise PxglError(f"prompt {r}, position {i}: token id {ids[i]} is outside 0..{vocab - 1}")
        return self.predict(encode_tokens([row[-window:] for row in rows], vocab), "prompts")

    def predict_one(self, ids: Sequence[int]) -> np.ndarray:
        """The prediction pixel, (3,) uint8, of one prompt of token ids: the lean single-prompt path (a list
        of ids needs only its range checked; a LeanExecutor then skips the token texture)."""
        self._check_thread()
        try:
            ids = [operator.index(t) for t in ids]
        except TypeError:
            raise PxglError("prompt: token ids must be integers") from None
        vocab = self.spec.vocab_size
        if not ids or min(ids) < 0 or max(ids) >= vocab:
            encode_tokens([ids], vocab)  # raises the error naming the first bad position
        if not self._lean:
            return self.predict(encode_tokens([ids], vocab), "prompt")[0, 0]
        with gl_errors("prompt"):
            return self.executor.run_one(ids[-self.spec.context_window :])

    def predict_array(self, ids: np.ndarray, source: str = "prompts") -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for a (B, L) integer array of token ids: B prompts of L
        tokens each. A LeanExecutor gets the ids as they are and checks them against the vocabulary."""
        self._check_thread()
        ids = np.asarray(ids)
        if ids.ndim != 2 or 0 in ids.shape or ids.dtype.kind not in "iu":
            raise PxglError(f"{source}: expected a (prompts, tokens) integer array, got {ids.dtype} {ids.shape}")
        window, vocab = self.spec.context_window, self.spec.vocab_size
        if not self._lean:
            out_of_range = (ids < 0) | (ids >= vocab)
            if out_of_range.any():
                self._refuse(ids, np.flatnonzero(out_of_range)[0], source)
            ids = ids[:, -window:]
            pixels = np.stack([ids % 256, ids // 256, np.full_like(ids, TOKEN_MARK)], axis=-1).astype(np.uint8)
            return self.predict(pixels, source)
        if ids.dtype != np.uint16:  # uint16 ids need only the executor's vocabulary check
            out_of_range = (ids < 0) | (ids >= vocab)
            if out_of_range.any():
                self._refuse(ids, np.flatnonzero(out_of_range)[0], source)
            ids = ids[:, -window:].astype(np.uint16)
        parts = []
        step = self.executor.max_tile
        with gl_errors(source):
            for start in range(0, len(ids), step):
                chunk = ids[start : start + step]
                pixels, refused = self.executor.run_ids(chunk)
                if refused is not None:
                    row = chunk[refused]
                    position = int(np.flatnonzero(row >= vocab)[0])
                    self._refuse(chunk, refused * chunk.shape[1] + position, source, row_offset=start)
                parts.append(pixels)
        return (parts[0] if len(parts) == 1 else np.concatenate(parts))[:, None, :]

    def _refuse(self, ids: np.ndarray, flat: int, source: str, row_offset: int = 0) -> None:
        row, position = divmod(int(flat), ids.shape[1])
        raise PxglError(
            f"{source}: row {row + row_offset}, position {position}: token id {ids[row, position]} is outside "
            f"0..{self.spec.vocab_size - 1}; re-encode the prompt with this model's tokenizer"
        )

    def score(self, tails: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prediction pixels (n, 3) and log p(target) (n,) for contexts already cut to the window (token
        rows, possibly empty) and their targets (docs/FORMATS.md §9); any n, in the executor's tiles."""
        self._check_thread()
        if not isinstance(self.executor, ScoringExecutor):
            raise PxglError(f"the {self.executor_name} executor predicts but does not score; use -x fused or passes")
        pixels = np.empty((len(tails), 3), np.uint8)
        logprobs = np.empty(len(tails), np.float32)
        with gl_errors("scoring"):
            for start in range(0, len(tails), self.executor.max_tile):
                end = start + self.executor.max_tile
                pixels[start:end], logprobs[start:end] = self.executor.score(tails[start:end], targets[start:end])
        return pixels, logprobs

    def generate(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None = None,
        *,
        top_logprobs: int = 0,
        draw_rows: Sequence[int] | None = None,
    ) -> Generation:
        """`steps` new tokens after each prompt of token ids (any lengths; or a (B, L) integer array of B
        prompts of L ids), each step's token fed back as the next input on the GPU (docs/FORMATS.md §11);
        greedy unless `sampling` says otherwise; with `top_logprobs` K, each token's K likeliest
        alternatives. An `auto` engine (the default) samples and reports alternatives on passes, which it
        builds then on the same weights; fused and pxvm engines generate greedily only. `draw_rows`: each
        prompt's row number for the seeded draw (its index in its own request; default 0..B-1)."""
        blocks = list(self._generate(rows, steps, sampling, top_logprobs, draw_rows, streaming=False))
        return blocks[0] if len(blocks) == 1 else Generation.joined(blocks, axis=1)

    def stream(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None = None,
        *,
        top_logprobs: int = 0,
        draw_rows: Sequence[int] | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> Generator[GeneratedStep, None, None]:
        """As `generate`, one step of every prompt at a time, each as soon as the GPU has it (the next steps
        already running); closing the iterator early stops the GPU work. With `on_tokens` (for progress bars),
        `on_tokens(n)` is told each chunk of n generated tokens as the GPU finishes it, prompts in tiles and
        steps in chunks sized by time (engine/pacing.py), and the steps come once all are done."""
        if on_tokens is not None:
            paced = self._generate(rows, steps, sampling, top_logprobs, draw_rows, streaming=False, on_tokens=on_tokens)
            return (step for block in paced for step in block.steps())
        blocks = self.stream_blocks(rows, steps, sampling, top_logprobs=top_logprobs, draw_rows=draw_rows)

        def each_step() -> Generator[GeneratedStep, None, None]:
            with closing(blocks):
                for block in blocks:
                    yield from block.steps()

        return each_step()

    def stream_blocks(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None = None,
        *,
        top_logprobs: int = 0,
        draw_rows: Sequence[int] | None = None,
    ) -> Generator[Generation, None, None]:
        """As `stream`, the steps as the GPU hands them over: a block of consecutive steps of every prompt at
        a time (1, 2, 4, … steps), for callers that pass steps on in bulk (the server)."""
        return self._generate(rows, steps, sampling, top_logprobs, draw_rows, streaming=True)

    def _generate(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None,
        top_logprobs: int,
        draw_rows: Sequence[int] | None,
        streaming: bool,
        on_tokens: Callable[[int], None] | None = None,
    ) -> Generator[Generation, None, None]:
        self._check_thread()
        check_steps(steps)
        check_top_logprobs(top_logprobs)
        sampling = sampling or Sampling()
        executor = self._generator(sampling, top_logprobs)
        window = self.spec.context_window
        if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype.kind in "iu" and rows.shape[1]:
            out_of_range = (rows < 0) | (rows >= self.spec.vocab_size)  # prompts of one length, as an array
            if out_of_range.any():
                self._refuse(rows, np.flatnonzero(out_of_range)[0], "prompts")
            tails = rows[:, -window:].astype(np.int64)
            lengths = np.full(len(rows), tails.shape[1], np.int64)
        else:
            pixels = encode_tokens(rows, self.spec.vocab_size)  # checks every id
            lengths = np.minimum(token_lengths(pixels, self.spec.vocab_size, "prompts"), window)
            tails = np.zeros((len(rows), int(lengths.max())), np.int64)
            for r, row in enumerate(rows):
                tails[r, : lengths[r]] = list(row)[-window:]
        draws = np.arange(len(rows)) if draw_rows is None else np.asarray(draw_rows, np.int64)
        if draws.shape != (len(rows),) or draws.min() < 0 or draws.max() > 2**32 - 1:
            raise PxglError(f"draw rows: one number in 0..2^32-1 per prompt, got {draws.shape[0]} for {len(rows)}")
        if on_tokens is not None:
            return self._generate_paced(executor, tails, lengths, steps, sampling, top_logprobs, draws, on_tokens)
        return self._generate_tiles(executor, tails, lengths, steps, sampling, top_logprobs, draws, streaming)

    def _generator(self, sampling: Sampling, top_logprobs: int) -> Executor:
        """The executor a generation runs on: the engine's own where it can; an `auto` engine's passes where
        it cannot (fused and pxvm generate greedily only, without alternatives), as `auto` means the fastest
        executor that does what is asked."""
        try:
            check_generates(self.executor_name, self.executor, sampling, top_logprobs)
            return self.executor
        except PxglError:
            if self.runnable.executor != AUTO:
                raise
        if self._passes is None:
            with gl_errors(self.model.source):
                inputs = ExecutorInputs(self.spec, self.weights, None)
                self._passes = EXECUTORS[PASSES](self.gpu, inputs, None)
        return self._passes

    def _generate_tiles(
        self,
        executor: Executor,
        tails: np.ndarray,
        lengths: np.ndarray,
        steps: int,
        sampling: Sampling,
        top_logprobs: int,
        draws: np.ndarray,
        streaming: bool,
    ) -> Generator[Generation, None, None]:
        """Blocks of steps of every prompt: chunk by chunk when the prompts fit one tile, else each tile runs
        all its steps and the blocks are joined."""
        window = self.spec.context_window
        tile = tile_rows(self.gpu, executor.max_tile, window, steps, top_logprobs)
        chunks = stream_chunks(steps, streaming and len(tails) <= tile)
        per_tile = []
        with gl_errors("generation"):
            for start in range(0, len(tails), tile):
                end = min(start + tile, len(tails))
                spare, self._spare_outputs = self._spare_outputs, None
                outputs = StepOutputs.allocate(self.gpu, end - start, steps, top_logprobs, spare)
                try:
                    job = generation_job(
                        executor, tails[start:end], lengths[start:end], sampling, draws[start:end], outputs
                    )
                    tile_blocks = stream_tile(self.gpu, job, outputs, start, chunks)
                    if len(tails) <= tile:
                        yield from tile_blocks
                        return
                    per_tile.append(list(tile_blocks))
                finally:
                    if self._spare_outputs is None and not self._closed:
                        self._spare_outputs = outputs
                    else:
                        outputs.release(self.gpu)
            for blocks in zip(*per_tile, strict=True):  # the same chunks in every tile
                yield Generation.joined(blocks, axis=0)

    def _generate_paced(
        self,
        executor: Executor,
        tails: np.ndarray,
        lengths: np.ndarray,
        steps: int,
        sampling: Sampling,
        top_logprobs: int,
        draws: np.ndarray,
        on_tokens: Callable[[int], None],
    ) -> Generator[Generation, None, None]:
        """Every step of every prompt as one block, `on_tokens(n)` told of each chunk of n tokens as it lands:
        tiles of prompts sized so that two steps take about CHUNK_SECONDS, steps in chunks sized so that a
        chunk does, so progress moves on a CPU renderer too. Two steps, as a tile's first chunk is reported
        only once its second is submitted, and on a CPU renderer (llvmpipe) submitting a chunk runs it; so
        each tile starts again from chunks of one step."""
        largest = tile_rows(self.gpu, executor.max_tile, self.spec.context_window, steps, top_logprobs)
        tile_sizer = ChunkSizer(largest)
        per_tile, start = [], 0
        with gl_errors("generation"):
            while start < len(tails):
                end = start + tile_sizer.take(len(tails) - start)
                step_sizer = ChunkSizer(steps, smallest=1)
                spare, self._spare_outputs = self._spare_outputs, None
                outputs = StepOutputs.allocate(self.gpu, end - start, steps, top_logprobs, spare)
                try:
                    began = last = time.monotonic()
                    job = generation_job(
                        executor, tails[start:end], lengths[start:end], sampling, draws[start:end], outputs
                    )
                    blocks = []
                    for block in stream_tile(self.gpu, job, outputs, start, step_sizer.sizes()):
                        now = time.monotonic()
                        step_sizer.after(block.tokens.shape[1], now - last)
                        last = now
                        blocks.append(block)
                        on_tokens(block.tokens.size)
                    per_tile.append(Generation.joined(blocks, axis=1))
                    tile_sizer.after(end - start, 2 * (last - began) / steps)
                finally:
                    if self._spare_outputs is None and not self._closed:
                        self._spare_outputs = outputs
                    else:
                        outputs.release(self.gpu)
                start = end
        yield Generation.joined(per_tile, axis=0)

    def trace(self, token_pixels: np.ndarray, source: str = "token texture") -> Trace:
        """Run the prompts and read back every intermediate texture (one tile's worth of prompts at most)."""
        self._check_thread()
        tails = self._tails(token_pixels, source)
        if len(tails) > self.executor.max_tile:
            raise PxglError(f"{source}: trace takes at most {self.executor.max_tile} prompts, got {len(tails)}")
        with gl_errors(source):
            return self.executor.trace(tails)

    def poison(self) -> None:
        """Refill the executor's outputs with garbage (tests call it before a checked run)."""
        self.executor.poison()
