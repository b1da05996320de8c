"""GPU-resident generation over the passes executor's forward pass (docs/FORMATS.md §11): each step copies
every row's window out of the generated texture into the token texture, runs the passes, and a sampling
pass stores the chosen token in the row's next column. All steps of a tile are one submission; the host
reads the generated texture and the log-probabilities once, at the end."""

import dataclasses

import numpy as np

from ..constants import TOKEN_MARK, WRITTEN_ALPHA
from ..errors import PxglError
from ..generation import Sampling
from ..gl import GLBackend
from ..kernel import TOP1_SOFTMAX_SHARED, Image, Kernel, Shared, Uniform
from .passes import PassesExecutor, forward
from .protocol import largest_pow2_group, next_pow2

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
SAMPLE_MAX_THREADS = 256


def pixel_rows(ids: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(B, width, 4) RGBA8 token pixels: row r's first lengths[r] ids, then (0, 0, 0, 0); alpha 0, so a
    generated column the GPU fails to write (alpha WRITTEN_ALPHA) shows."""
    pixels = np.zeros((len(ids), width, 4), np.uint8)
    used = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    pixels[:, : ids.shape[1], 0] = np.where(used, ids % 256, 0)
    pixels[:, : ids.shape[1], 1] = np.where(used, ids // 256, 0)
    pixels[:, : ids.shape[1], 2] = np.where(used, TOKEN_MARK, 0)
    return pixels


def generate_tile(
    executor: PassesExecutor, ids: np.ndarray, lengths: np.ndarray, steps: int, sampling: Sampling, row_base: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n, P) int ids, each row's last ≤ context_window prompt tokens left-aligned, and their counts →
    (n, steps) generated ids and (n, steps) float32 log-probabilities. n ≤ executor.max_tile."""
    gpu: GLBackend = executor.gpu
    spec, programs = executor.spec, executor.programs
    n, window = len(ids), spec.context_window
    act = executor.activations(n)
    width = int(lengths.max()) + steps
    gpu.check_size(width, n, "generated token texture")
    generated = gpu.rgba8ui_image(width, n, "generated token texture")
    gpu.write(generated, pixel_rows(ids, lengths, width))
    length_pixels = np.zeros((n, 1, 4), np.uint8)
    length_pixels[:, 0, 0], length_pixels[:, 0, 1] = lengths % 256, lengths // 256
    length_texture = gpu.rgba8ui_image(1, n, "prompt lengths")
    gpu.write(length_texture, length_pixels)
    window_texture = gpu.rgba8ui_image(window, act.capacity, "generation window")
    kept = gpu.float_image(act.logits.width, act.logits.height, "T_kept")
    logprobs = gpu.float_image(steps, n, "T_generated_logprobs")
    step_act = dataclasses.replace(act, tokens=window_texture)
    constants = programs.constants
    window_program = gpu.program(GENERATE_WINDOW, constants, largest_pow2_group(gpu, min(64, next_pow2(window))))
    sample_group = largest_pow2_group(gpu, min(SAMPLE_MAX_THREADS, next_pow2(spec.vocab_size)))
    sample_program = gpu.program(GENERATE_SAMPLE, constants, sample_group)
    window_groups = (-(-window // window_program.local_size), n, 1)
    top_k = min(sampling.top_k or spec.vocab_size, spec.vocab_size)
    try:
        for step in range(steps):
            gpu.run(
                window_program,
                window_groups,
                generated=generated,
                lengths=length_texture,
                window_out=window_texture,
                step=step,
            )
            gpu.barrier()
            forward(gpu, spec, programs, executor.weights, step_act, n)
            gpu.run(
                sample_program,
                (n, 1, 1),
                logits_in=act.logits,
                kept=kept,
                lengths=length_texture,
                generated=generated,
                logprobs_out=logprobs,
                step=step,
                seed=sampling.seed,
                row_base=row_base,
                temperature=sampling.temperature,
                top_k=top_k,
                top_p=sampling.top_p,
            )
            gpu.barrier()
        pixels = gpu.read_uint8(generated)
        columns = lengths[:, None] + np.arange(steps)[None, :]
        chosen = pixels[np.arange(n)[:, None], columns].astype(np.int64)
        unwritten = np.argwhere(chosen[..., 3] != WRITTEN_ALPHA)
        if unwritten.size:
            row, step = (int(v) for v in unwritten[0])
            raise PxglError(
                f"the GPU left generated token {step} of prompt {row + row_base} unwritten; its driver "
                "misbehaved: try another --device"
            )
        return chosen[..., 0] + 256 * chosen[..., 1], gpu.read_float(logprobs).copy()
    finally:
        for texture in (generated, length_texture, window_texture, kept, logprobs):
            texture.release()
