"""Where a batch's time goes on the fused executor: each batch size checked against the oracle, then timed
end to end (run_ids: host ids in, pixels out), as GPU busy time (a GL timer around the same run: uploads
and dispatches) and as the fused_tiles kernel alone (one chunk's dispatch over prompts already uploaded).
The kernel's rate next to the model's arithmetic floor says how much a better kernel could give; the rest
is host work a better host path could hide.

    python -m bench.variants.batch [--sizes 16384,262144,1048576] [--tflops 63.3]"""

import argparse
import time
from itertools import pairwise

import numpy as np
from pxgl.executors.fused import FUSED_TILES, IDS, FusedExecutor, grid
from pxgl.executors.protocol import ExecutorInputs, ceil_div
from pxgl.gl import BufferRange, GLBackend
from pxgl.loading import load_model

from bench.peers import FP32
from bench.reference import Reference
from bench.report import si
from bench.run import PROMPT_TOKENS, bundled
from tests.models import params_of

FP32_TFLOPS_H200 = 63.3
"""A GLSL fp32 FMA loop on the H200 (driver 580), TFLOP/s: the arithmetic floor's rate."""


def tiles_kernel_seconds(executor: FusedExecutor, ids: np.ndarray, repeats: int = 5) -> float:
    """GPU seconds of fused_tiles over the first chunk of `ids` (uploaded by a run_ids first), scaled to all
    of them: the kernel alone, no upload, no host work."""
    executor.run_ids(ids)
    gpu, config = executor.gpu, executor.config
    count = min(len(ids), config.chunk)
    buffers = executor._batch_buffers(len(ids), 2 * ids.shape[1])
    program = gpu.program(FUSED_TILES, executor._tile_constants[IDS, False], config.tile_threads)
    size = 16 * ceil_div(16 + count * 2 * ids.shape[1], 16)
    timer, times = gpu.timer(), []
    for _ in range(repeats):
        with timer:
            gpu.run(
                program,
                grid(ceil_div(count, config.tile_m)),
                **executor._weights,
                prompts=BufferRange(buffers.prompts[0], 0, size),
                predictions=BufferRange(buffers.predictions.buffer, 0, 4 * count),
            )
        times.append(timer.elapsed / 1e9)
    return float(np.median(times)) * len(ids) / count


def flops_per_prompt(executor: FusedExecutor) -> float:
    """Multiply-adds of one prompt in the fused pass, times two: the first layer's table sums, the head, the
    dense layers and the logits (docs/PERFORMANCE.md's arithmetic floor)."""
    spec = executor.spec
    hidden = spec.hidden
    fma = sum(a * b for a, b in pairwise(hidden)) + hidden[-1] * spec.vocab_size
    context = spec.context
    window = min(context.window, PROMPT_TOKENS)
    if context.mode == "attention":  # the concatenated slots' table rows, the scores, the values, the head's rows
        fma += hidden[0] * context.concat + 2 * window * context.head_dim + context.head_dim * hidden[0]
    else:
        fma += hidden[0] * window  # a table row per token of the window
    return 2.0 * fma


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="16384,262144,1048576")
    parser.add_argument("--tflops", type=float, default=FP32_TFLOPS_H200, help="the GPU's fp32 rate, TFLOP/s")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    gpu = GLBackend()
    print(f"fused batches on {gpu.renderer} ({gpu.version})", flush=True)
    rng = np.random.default_rng(1)
    for path in bundled():
        model = load_model(path)
        spec = model.spec
        prompts = rng.integers(0, spec.vocab_size, (max(sizes), PROMPT_TOKENS)).astype(np.uint16)
        reference = Reference(params_of(model), spec.context_window, prompts)
        executor = FusedExecutor(gpu, ExecutorInputs(spec, gpu.uint_texture(model.weights, "weights")))
        floor = args.tflops * 1e12 / flops_per_prompt(executor)
        print(f"\n## {path.name} ({spec.architecture.describe()}), {executor.config}")
        print(f"arithmetic floor at {args.tflops} TFLOP/s: {si(floor)} prompts/s")
        for size in sizes:
            ids = prompts[:size]
            pixels, refused = executor.run_ids(ids)
            assert refused is None
            reference.check(pixels, slice(0, size), FP32)
            walls = []
            for _ in range(5):
                start = time.perf_counter()
                executor.run_ids(ids)
                walls.append(time.perf_counter() - start)
            timer = gpu.timer()
            with timer:
                executor.run_ids(ids)
            busy = timer.elapsed / 1e9
            kernel = tiles_kernel_seconds(executor, ids)
            wall = float(np.median(walls))
            print(
                f"B={size:>8}: end to end {si(size / wall):>7}/s ({wall * 1e3:7.2f} ms), GPU busy "
                f"{busy * 1e3:7.2f} ms, kernel alone {kernel * 1e3:7.2f} ms = {si(size / kernel):>7}/s "
                f"({size / kernel / floor:.0%} of the floor)",
                flush=True,
            )
        executor.close()


if __name__ == "__main__":
    main()
