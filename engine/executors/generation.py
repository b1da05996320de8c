"""GPU-resident generation (docs/FORMATS.md §11): each step copies every row's window out of the generated
texture into the token texture and runs the executor's forward pass; then, for passes, a sampling pass over
the logits stores the chosen token (greedy or drawn) in the row's next column, and for pxvm (no logits on
the GPU: greedy only) an append pass copies its prediction pixel's id there. All steps of a tile are one
submission; the host reads the generated texture and the log-probabilities once, at the end."""

import dataclasses
from collections.abc import Callable

import numpy as np

from ..constants import TOKEN_MARK, WRITTEN_ALPHA
from ..errors import PxglError
from ..generation import Sampling
from ..gl import GLBackend, Texture
from ..kernel import TOP1_SOFTMAX_SHARED, Image, Kernel, Shared, Uniform
from .passes import PassesExecutor, forward
from .protocol import largest_pow2_group, model_constants, next_pow2
from .pxvm import PxvmExecutor

GENERATE_WINDOW = Kernel(
    "generate_window",
    (
        Image("generated", "rgba8ui", read=True),
        Image("lengths", "rgba8ui", read=True),
        Image("window_out", "rgba8ui", write=True),
        Uniform("step"),
    ),
)
GENERATE_SAMPLE = Kernel(
    "generate_sample",
    (
        Image("logits_in", "r32f", read=True),
        Image("kept", "r32f", read=True, write=True),
        Image("lengths", "rgba8ui", read=True),
        Image("generated", "rgba8ui", write=True),
        Image("logprobs_out", "r32f", write=True),
        Uniform("step"),
        Uniform("seed"),
        Uniform("row_base"),
        Uniform("temperature"),
        Uniform("top_k"),
        Uniform("top_p"),
    ),
    shared=(*TOP1_SOFTMAX_SHARED, Shared("partial", "float", "LOCAL_SIZE")),
)
GENERATE_APPEND = Kernel(
    "generate_append",
    (
        Image("prediction_in", "rgba8ui", read=True),
        Image("lengths", "rgba8ui", read=True),
        Image("generated", "rgba8ui", write=True),
        Uniform("step"),
        Uniform("rows"),
    ),
)
SAMPLE_MAX_THREADS = 256
APPEND_GROUP = 64


def check_generates(name: str, executor: object, sampling: Sampling) -> None:
    """Refuse, in one line naming one that does, what an executor cannot generate."""
    if isinstance(executor, PxvmExecutor) and sampling.temperature > 0:
        raise PxglError("the pxvm executor generates greedily only (it keeps no logits); sample with -x passes")
    if not isinstance(executor, PassesExecutor | PxvmExecutor):
        raise PxglError(f"the {name} executor does not generate; use -x passes")


def pixel_rows(ids: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(B, width, 4) RGBA8 token pixels: row r's first lengths[r] ids, then (0, 0, 0, 0); alpha 0, so a
    generated column the GPU fails to write (alpha WRITTEN_ALPHA) shows."""
    pixels = np.zeros((len(ids), width, 4), np.uint8)
    used = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    pixels[:, : ids.shape[1], 0] = np.where(used, ids % 256, 0)
    pixels[:, : ids.shape[1], 1] = np.where(used, ids // 256, 0)
    pixels[:, : ids.shape[1], 2] = np.where(used, TOKEN_MARK, 0)
    return pixels


def passes_step(
    executor: PassesExecutor, n: int, sampling: Sampling, row_base: int, textures: dict[str, Texture]
) -> Callable[[int], None]:
    """One step's forward pass and sampling pass, reading the window texture, writing `generated`."""
    gpu, spec, programs = executor.gpu, executor.spec, executor.programs
    act = executor.activations(n)
    step_act = dataclasses.replace(act, tokens=textures["window"])
    kept = textures["kept"] = gpu.float_image(act.logits.width, act.logits.height, "T_kept")
    group = largest_pow2_group(gpu, min(SAMPLE_MAX_THREADS, next_pow2(spec.vocab_size)))
    sample = gpu.program(GENERATE_SAMPLE, programs.constants, group)
    top_k = min(sampling.top_k or spec.vocab_size, spec.vocab_size)

    def step(index: int) -> None:
        forward(gpu, spec, programs, executor.weights, step_act, n)
        gpu.run(
            sample,
            (n, 1, 1),
            logits_in=act.logits,
            kept=kept,
            lengths=textures["lengths"],
            generated=textures["generated"],
            logprobs_out=textures["logprobs"],
            step=index,
            seed=sampling.seed,
            row_base=row_base,
            temperature=sampling.temperature,
            top_k=top_k,
            top_p=sampling.top_p,
        )

    return step


def pxvm_step(executor: PxvmExecutor, n: int, textures: dict[str, Texture]) -> Callable[[int], None]:
    """One step's pxVM run over the window texture, then its prediction's id appended to `generated`."""
    gpu = executor.gpu
    tile = executor.tile(n)
    append = gpu.program(GENERATE_APPEND, model_constants(executor.spec), largest_pow2_group(gpu, APPEND_GROUP))

    def step(index: int) -> None:
        executor.dispatch(n, textures["window"], tile)
        gpu.run(
            append,
            (-(-n // append.local_size), 1, 1),
            prediction_in=tile.prediction,
            lengths=textures["lengths"],
            generated=textures["generated"],
            step=index,
            rows=n,
        )

    return step


def generate_tile(
    executor: PassesExecutor | PxvmExecutor,
    ids: np.ndarray,
    lengths: np.ndarray,
    steps: int,
    sampling: Sampling,
    row_base: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, P) int ids, each row's last ≤ context_window prompt tokens left-aligned, and their counts →
    (n, steps) generated ids and (n, steps) float32 log-probabilities (NaN from pxvm, which keeps no
    logits). n ≤ executor.max_tile; check_generates has accepted the executor and the sampling."""
    gpu: GLBackend = executor.gpu
    n, window = len(ids), executor.spec.context_window
    width = int(lengths.max()) + steps
    length_pixels = np.zeros((n, 1, 4), np.uint8)
    length_pixels[:, 0, 0], length_pixels[:, 0, 1] = lengths % 256, lengths // 256
    textures = {
        "generated": gpu.rgba8ui_image(width, n, "generated token texture"),
        "lengths": gpu.rgba8ui_image(1, n, "prompt lengths"),
        "window": gpu.rgba8ui_image(window, n, "generation window"),
        "logprobs": gpu.float_image(steps, n, "T_generated_logprobs"),
    }
    try:
        gpu.write(textures["generated"], pixel_rows(ids, lengths, width))
        gpu.write(textures["lengths"], length_pixels)
        gpu.write(textures["logprobs"], np.full((n, steps), np.nan, np.float32))
        if isinstance(executor, PassesExecutor):
            forward_and_choose = passes_step(executor, n, sampling, row_base, textures)
        else:
            forward_and_choose = pxvm_step(executor, n, textures)
        window_program = gpu.program(
            GENERATE_WINDOW, model_constants(executor.spec), largest_pow2_group(gpu, min(64, next_pow2(window)))
        )
        for step in range(steps):
            gpu.run(
                window_program,
                (-(-window // window_program.local_size), n, 1),
                generated=textures["generated"],
                lengths=textures["lengths"],
                window_out=textures["window"],
                step=step,
            )
            gpu.barrier()
            forward_and_choose(step)
            gpu.barrier()
        pixels = gpu.read_uint8(textures["generated"])
        columns = lengths[:, None] + np.arange(steps)[None, :]
        chosen = pixels[np.arange(n)[:, None], columns].astype(np.int64)
        unwritten = np.argwhere(chosen[..., 3] != WRITTEN_ALPHA)
        if unwritten.size:
            row, step = (int(v) for v in unwritten[0])
            raise PxglError(
                f"the GPU left generated token {step} of prompt {row + row_base} unwritten; its driver "
                "misbehaved: try another --device"
            )
        return chosen[..., 0] + 256 * chosen[..., 1], gpu.read_float(textures["logprobs"]).copy()
    finally:
        for texture in textures.values():
            texture.release()
