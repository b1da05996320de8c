"""Where a batch's time goes on the fused executor, for each batch path side by side (fused_tiles alone, and
hidden layers then fused_logits.comp's GEMM in the shapes asked for): each batch size checked against the
oracle, then timed end to end (run_ids: host ids in, pixels out), as GPU busy time (a GL timer around the
same run: uploads and dispatches) and as the kernels alone (one chunk's dispatches over prompts already
uploaded). The kernels' rate next to the model's arithmetic floor says how much a better kernel could give;
the rest is host work a better host path could hide.

    python -m bench.variants.batch [--sizes 16384,262144,1048576] [--tflops 63.3] [--gemm default,tiles,64x128x8x8x8]"""

import argparse
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
from pxgl.executors.fused import FusedExecutor, grid
from pxgl.executors.fused_config import FUSED_HIDDEN, FUSED_TILES, IDS, FusedConfig
from pxgl.executors.fused_gemm import GemmConfig
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


def batch_kernel_seconds(executor: FusedExecutor, ids: np.ndarray, repeats: int = 5) -> float:
    """GPU seconds of the batch kernels over the first chunk of `ids` (uploaded by a run_ids first), scaled to
    all of them: the hidden layers and fused_logits' parts, or fused_tiles; no upload, no host work."""
    executor.run_ids(ids)
    gpu, config = executor.gpu, executor.config
    count = min(len(ids), config.chunk)
    buffers = executor._batch_buffers(len(ids), 2 * ids.shape[1])
    prompts = BufferRange(buffers.prompts[0], 0, 16 * ceil_div(16 + count * 2 * ids.shape[1], 16))
    if config.gemm:
        hidden = gpu.program(FUSED_HIDDEN, executor._hidden_constants[IDS], config.gemm.hidden_threads)
        parts = executor._gemm_parts(count)

        def dispatch() -> None:
            parts.run(hidden, executor._weights, prompts, count, buffers.predictions.buffer, 0)
    else:
        tiles = gpu.program(FUSED_TILES, executor._tile_constants[IDS, False], config.tile_threads)
        words = BufferRange(buffers.predictions.buffer, 0, 4 * count)

        def dispatch() -> None:
            gpu.run(
                tiles, grid(ceil_div(count, config.tile_m)), **executor._weights, prompts=prompts, predictions=words
            )

    timer, times = gpu.timer(), []
    for _ in range(repeats):
        with timer:
            dispatch()
        times.append(timer.elapsed / 1e9)
    return float(np.median(times)) * len(ids) / count


def batch_config(name: str) -> FusedConfig:
    """ "default", "tiles" (fused_tiles alone), "pooled" (the GEMM path, its hidden units pooled in shared
    memory) or a GEMM shape "MxNxTMxTNxK" (fused_logits' work shape), each optionally "@CHUNK" (prompts a
    chunk)."""
    name, _, chunk = name.partition("@")
    if chunk:
        return replace(batch_config(name), chunk=int(chunk))
    if name == "default":
        return FusedConfig()
    if name == "tiles":
        return FusedConfig(gemm=None)
    if name == "pooled":
        return FusedConfig(hidden_tile_m=0)
    m, n, tm, tn, k = (int(x) for x in name.split("x"))
    return FusedConfig(gemm=GemmConfig(m, n, tm, tn, k))


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
    parser.add_argument(
        "--gemm",
        default="default,tiles",
        help="batch paths: default, tiles, pooled, MxNxTMxTNxK, each optionally @CHUNK",
    )
    parser.add_argument("--models", default="", help="weights .pxi files (default: the bundled models)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    gpu = GLBackend()
    print(f"fused batches on {gpu.renderer} ({gpu.version})", flush=True)
    rng = np.random.default_rng(1)
    for path in [Path(m) for m in args.models.split(",") if m] or bundled():
        model = load_model(path)
        spec = model.spec
        prompts = rng.integers(0, spec.vocab_size, (max(sizes), PROMPT_TOKENS)).astype(np.uint16)
        reference = Reference(params_of(model), spec.context_window, prompts)
        weights = gpu.uint_texture(model.weights, "weights")
        print(f"\n## {path.name} ({spec.architecture.describe()})")
        for variant in args.gemm.split(","):
            executor = FusedExecutor(gpu, ExecutorInputs(spec, weights), batch_config(variant))
            floor = args.tflops * 1e12 / flops_per_prompt(executor)
            print(f"{variant}: {executor.config}; floor at {args.tflops} TFLOP/s: {si(floor)} prompts/s", flush=True)
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
                kernel = batch_kernel_seconds(executor, ids)
                wall = float(np.median(walls))
                print(
                    f"  B={size:>8}: end to end {si(size / wall):>7}/s ({wall * 1e3:7.2f} ms), GPU busy "
                    f"{busy * 1e3:7.2f} ms, kernels alone {kernel * 1e3:7.2f} ms = {si(size / kernel):>7}/s "
                    f"({size / kernel / floor:.0%} of the floor)",
                    flush=True,
                )
            executor.close()


if __name__ == "__main__":
    main()
