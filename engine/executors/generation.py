"""GPU-resident generation (docs/FORMATS.md §11): each executor turns a tile of prompts into a job whose
steps run on the GPU with no trip to the host between tokens, and every job writes the same step outputs
(mapped host memory, [step][row]): the chosen token's prediction word (§5 bytes), its log-probability and
the likeliest alternatives.

    passes  each step copies every row's window out of the generated texture into the token texture, runs
            the forward pass, then a sampling pass over the logits stores the chosen token (greedy or drawn)
            in the row's next column;
    pxvm    the same with its pxVM run, then an append pass copies its prediction pixel's id there (greedy);
    fused   one dispatch runs a chunk of steps, each work group looping over its rows' steps (greedy;
            fused_generation.py).

Steps are submitted in chunks, each closed by a fence: `stream_tile` submits the next chunk before it waits
for one, so the GPU never idles while the host reads what has landed."""

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..constants import POISON_WORD, TOKEN_MARK, WRITTEN_ALPHA
from ..errors import PxglError
from ..generation import MAX_TOP_LOGPROBS, Generation, Sampling
from ..gl import GLBackend, MappedBuffer, Texture
from ..kernel import TOP1_SOFTMAX_SHARED, Constants, Image, Kernel, Shared, Storage, Uniform, ceil_div, log2, top1_loops
from .fused import FusedExecutor
from .fused_generation import FusedGeneration
from .passes import PassesExecutor, forward
from .protocol import largest_pow2_group, model_constants, next_pow2
from .pxvm import PxvmExecutor

RANK_KEY_BITS = 48
"""Bits of glsl/generate_sample.comp's rank key (a logit's 32, an id's 16): the passes of each bisection."""


def sample_loops(c: Constants, size: int) -> int:
    """glsl/generate_sample.comp's loops, at their worst (MAX_TOP_LOGPROBS alternatives, top-k and top-p):
    the softmax, a round a chosen alternative, two bisections of RANK_KEY_BITS passes, the kept mass and the
    walk of one invocation over the chunks' masses and one chunk."""
    chunk, tree = ceil_div(int(c["VOCAB"]), size) + 1, log2(size) + 1
    alternatives = MAX_TOP_LOGPROBS * (1 + chunk + tree) + 1
    bisection = RANK_KEY_BITS * (1 + chunk + tree) + 1
    return top1_loops(int(c["VOCAB"]), size) + alternatives + 2 * bisection + 3 * chunk + 2 * tree + size + 1 + chunk


GENERATE_WINDOW = Kernel(
    "generate_window",
    (
        Image("generated", "rgba8ui", read=True),
        Image("lengths", "rgba8ui", read=True),
        Image("window_out", "rgba8ui", write=True),
        Uniform("step"),
    ),
    loops=lambda c, size: 0,
)
GENERATE_SAMPLE = Kernel(
    "generate_sample",
    (
        Image("logits_in", "r32f", read=True),
        Image("lengths", "rgba8ui", read=True),
        Image("generated", "rgba8ui", write=True),
        Storage("draw_rows"),
        Storage("words"),
        Storage("logprobs"),
        Storage("alternatives"),
        Uniform("step"),
        Uniform("rows"),
        Uniform("top_count"),
        Uniform("seed"),
        Uniform("temperature"),
        Uniform("top_k"),
        Uniform("top_p"),
    ),
    shared=(*TOP1_SOFTMAX_SHARED, Shared("partial", "float", "LOCAL_SIZE")),
    loops=sample_loops,
)
GENERATE_APPEND = Kernel(
    "generate_append",
    (
        Image("prediction_in", "rgba8ui", read=True),
        Image("lengths", "rgba8ui", read=True),
        Image("generated", "rgba8ui", write=True),
        Storage("words"),
        Uniform("step"),
        Uniform("rows"),
    ),
    loops=lambda c, size: 0,
)
SAMPLE_MAX_THREADS = 256
APPEND_GROUP = 64
STREAM_CHUNK_MAX = 32
"""Steps a streamed chunk grows to (1, 2, 4, … steps): the first token soon, later ones in fewer fences."""


ON_PASSES = '-x passes (in Python: executor="passes", or no executor)'
"""How to ask for the executor that generates everything, on the command line and from the Python API."""


def check_generates(name: str, executor: object, sampling: Sampling, top_count: int) -> None:
    """Refuse, in one line naming one that does, what an executor cannot generate."""
    if isinstance(executor, PassesExecutor):
        return
    if not isinstance(executor, PxvmExecutor | FusedExecutor):
        raise PxglError(f"the {name} executor does not generate; use {ON_PASSES}")
    if sampling.temperature > 0:
        raise PxglError(f"the {name} executor generates greedily only (it keeps no logits); sample with {ON_PASSES}")
    if top_count:
        raise PxglError(f"the {name} executor keeps only the chosen token; alternatives run with {ON_PASSES}")


def tile_rows(gpu: GLBackend, max_tile: int, window: int, steps: int, top_count: int) -> int:
    """Prompts a generation tile holds: the executor's tile, with its step outputs and its rows of ids each
    within one storage binding and its rows within a texture's side."""
    per_row = max(steps * max(4, 8 * top_count), 2 * (window + steps + 1))
    return max(1, min(max_tile, gpu.limits.max_storage_block_size // per_row, gpu.limits.max_texture_size))


@dataclass(frozen=True)
class StepOutputs:
    """What every generating job writes, in mapped host memory, [step][row] (alternatives [step][row][j])."""

    rows: int
    steps: int
    top_count: int
    words: MappedBuffer
    logprobs: MappedBuffer
    alternatives: MappedBuffer

    @staticmethod
    def allocate(gpu: GLBackend, rows: int, steps: int, top_count: int, spare: "StepOutputs | None") -> "StepOutputs":
        """Outputs for rows x steps, in `spare`'s buffers where they are large enough (mapping buffers costs
        more than a short generation), else new ones (then `spare` is released)."""
        cells = rows * steps
        sizes = (4 * cells, 4 * cells, max(8 * cells * top_count, 8))
        if spare is not None and all(m.view.size >= size for m, size in zip(spare.buffers(), sizes, strict=True)):
            outputs = StepOutputs(rows, steps, top_count, *spare.buffers())
        else:
            if spare is not None:
                spare.release(gpu)
            names = ("generated words", "generated log-probabilities", "alternatives")
            outputs = StepOutputs(
                rows, steps, top_count, *(gpu.mapped_buffer(b, n) for b, n in zip(sizes, names, strict=True))
            )
        outputs.words.view.view(np.uint32)[:cells] = POISON_WORD
        outputs.logprobs.view.view(np.float32)[:cells] = np.nan
        return outputs

    def buffers(self) -> tuple[MappedBuffer, MappedBuffer, MappedBuffer]:
        return self.words, self.logprobs, self.alternatives

    def release(self, gpu: GLBackend) -> None:
        for mapped in self.buffers():
            gpu.release_mapped(mapped)

    def block(self, first: int, last: int, row_base: int) -> Generation:
        """Steps first..last - 1 of every row, copied out of the mapped memory; refused if the GPU left one
        unwritten."""
        n, k, count = self.rows, self.top_count, last - first
        words = self.words.view.view(np.uint32)[first * n : last * n].reshape(count, n).T
        unwritten = np.argwhere(words >> 24 != WRITTEN_ALPHA)
        if unwritten.size:
            row, step = (int(v) for v in unwritten[0])
            raise PxglError(
                f"the GPU left generated token {step + first} of prompt {row + row_base} unwritten; its driver "
                "misbehaved: try another --device"
            )
        pairs = self.alternatives.view.view(np.uint32)[2 * first * n * k : 2 * last * n * k]
        pairs = pairs.reshape(count, n, k, 2).transpose(1, 0, 2, 3)
        return Generation(
            tokens=(words & 0xFFFF).astype(np.int64),
            confidences=((words >> 16) & 0xFF).astype(np.uint8),
            logprobs=self.logprobs.view.view(np.float32)[first * n : last * n].reshape(count, n).T.copy(),
            top_ids=pairs[..., 0].astype(np.int64),
            top_logprobs=pairs[..., 1].copy().view(np.float32),
            first=first,
        )


class GenerationJob(Protocol):
    def submit(self, first: int, last: int) -> None:
        """Issue steps first..last - 1 (after those before them)."""

    def close(self) -> None: ...


def stream_tile(
    gpu: GLBackend, job: GenerationJob, outputs: StepOutputs, row_base: int, chunks: Sequence[int]
) -> Iterator[Generation]:
    """Run the job's steps in chunks of the given sizes (repeating the last), yielding each chunk's block of
    steps once its fence has passed; the next chunk is already on the GPU meanwhile. Closing the iterator
    early stops issuing steps."""
    pending: deque[tuple[int, int, int]] = deque()
    sizes = iter(chunks)
    size, first = next(sizes), 0
    try:
        while first < outputs.steps or pending:
            if first < outputs.steps:
                last = min(first + size, outputs.steps)
                job.submit(first, last)
                gpu.mapped_read_barrier()
                pending.append((first, last, gpu.fence()))
                gpu.flush()
                first, size = last, next(sizes, size)
                if len(pending) < 2 and first < outputs.steps:
                    continue
            done_first, done_last, fence = pending.popleft()
            gpu.wait(fence)
            yield outputs.block(done_first, done_last, row_base)
    finally:
        for _, _, fence in pending:  # the GPU is done with the job's buffers before they are freed
            gpu.wait(fence)
        job.close()


def stream_chunks(steps: int, streaming: bool) -> list[int]:
    """Chunk sizes: all steps in one submission, or, streaming, 1, 2, 4, … up to STREAM_CHUNK_MAX."""
    if not streaming:
        return [steps]
    return [1 << i for i in range(STREAM_CHUNK_MAX.bit_length())]


def pixel_rows(ids: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(B, width, 4) RGBA8 token pixels: row r's first lengths[r] ids, then (0, 0, 0, 0)."""
    pixels = np.zeros((len(ids), width, 4), np.uint8)
    used = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    pixels[:, : ids.shape[1], 0] = np.where(used, ids % 256, 0)
    pixels[:, : ids.shape[1], 1] = np.where(used, ids // 256, 0)
    pixels[:, : ids.shape[1], 2] = np.where(used, TOKEN_MARK, 0)
    return pixels


class TextureGeneration:
    """passes and pxvm: the generated texture, each step's window copied out of it, the step run over the
    window by the executor, then its token stored back (GENERATE_SAMPLE for passes, GENERATE_APPEND for pxvm)."""

    def __init__(
        self,
        executor: PassesExecutor | PxvmExecutor,
        ids: np.ndarray,
        lengths: np.ndarray,
        sampling: Sampling,
        draw_rows: np.ndarray,
        outputs: StepOutputs,
    ) -> None:
        gpu = self.gpu = executor.gpu
        n, window = len(ids), executor.spec.context_window
        self.executor, self.sampling, self.outputs, self.n = executor, sampling, outputs, n
        length_pixels = np.zeros((n, 1, 4), np.uint8)
        length_pixels[:, 0, 0], length_pixels[:, 0, 1] = lengths % 256, lengths // 256
        width = int(lengths.max()) + outputs.steps
        gpu.check_size(width, n, "generated token texture")
        self.textures: dict[str, Texture] = {
            "generated": gpu.rgba8ui_image(width, n, "generated token texture"),
            "lengths": gpu.rgba8ui_image(1, n, "prompt lengths"),
            "window": gpu.rgba8ui_image(window, n, "generation window"),
        }
        gpu.write(self.textures["generated"], pixel_rows(ids, lengths, width))
        gpu.write(self.textures["lengths"], length_pixels)
        self.draw_rows = gpu.storage_buffer(4 * n, "draw rows")
        gpu.write_storage(self.draw_rows, np.ascontiguousarray(draw_rows, np.uint32))
        constants = model_constants(executor.spec)
        self.window_program = gpu.program(
            GENERATE_WINDOW, constants, largest_pow2_group(gpu, min(64, next_pow2(window)))
        )
        if isinstance(executor, PassesExecutor):
            self.act = executor.activations(n)
            self.step_act = dataclasses.replace(self.act, tokens=self.textures["window"])
            group = largest_pow2_group(gpu, min(SAMPLE_MAX_THREADS, next_pow2(executor.spec.vocab_size)))
            constants = executor.programs.constants | {"RANK_KEY_BITS": RANK_KEY_BITS}
            self.choose = gpu.program(GENERATE_SAMPLE, constants, group)
        else:
            self.tile = executor.tile(n)
            self.choose = gpu.program(GENERATE_APPEND, constants, largest_pow2_group(gpu, APPEND_GROUP))

    def submit(self, first: int, last: int) -> None:
        gpu, n, textures, outputs = self.gpu, self.n, self.textures, self.outputs
        for step in range(first, last):
            gpu.run(
                self.window_program,
                (-(-self.executor.spec.context_window // self.window_program.local_size), n, 1),
                generated=textures["generated"],
                lengths=textures["lengths"],
                window_out=textures["window"],
                step=step,
            )
            gpu.barrier()
            if isinstance(self.executor, PassesExecutor):
                executor, sampling = self.executor, self.sampling
                forward(gpu, executor.spec, executor.programs, executor.weights, self.step_act, n)
                gpu.run(
                    self.choose,
                    (n, 1, 1),
                    logits_in=self.act.logits,
                    lengths=textures["lengths"],
                    generated=textures["generated"],
                    draw_rows=self.draw_rows,
                    words=outputs.words,
                    logprobs=outputs.logprobs,
                    alternatives=outputs.alternatives,
                    step=step,
                    rows=n,
                    top_count=outputs.top_count,
                    seed=sampling.seed,
                    temperature=sampling.temperature,
                    top_k=min(sampling.top_k or executor.spec.vocab_size, executor.spec.vocab_size),
                    top_p=sampling.top_p,
                )
            else:
                self.executor.dispatch(n, textures["window"], self.tile)
                gpu.run(
                    self.choose,
                    (-(-n // self.choose.local_size), 1, 1),
                    prediction_in=self.tile.prediction,
                    lengths=textures["lengths"],
                    generated=textures["generated"],
                    words=outputs.words,
                    step=step,
                    rows=n,
                )
            gpu.barrier()

    def close(self) -> None:
        for texture in self.textures.values():
            texture.release()
        self.gpu.release_storage(self.draw_rows)


def generation_job(
    executor: object,
    ids: np.ndarray,
    lengths: np.ndarray,
    sampling: Sampling,
    draw_rows: np.ndarray,
    outputs: StepOutputs,
) -> GenerationJob:
    """(n, P) int ids, each row's last ≤ context_window prompt tokens left-aligned, and their counts → the
    executor's job (check_generates has accepted the executor and the request)."""
    if isinstance(executor, FusedExecutor):
        return FusedGeneration(executor, ids, lengths, outputs)
    assert isinstance(executor, PassesExecutor | PxvmExecutor)
    return TextureGeneration(executor, ids, lengths, sampling, draw_rows, outputs)
