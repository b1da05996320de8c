"""Variants of the fused executor (engine/fused.py), llm.c dev/cuda style: each work shape is checked against
the oracle, then timed; the table at the end says which wins. Also the floors of the single-prompt path:
a fence round trip with no work, and where a prompt's time goes.

    python bench/variants/sweep.py [--big 1048576] [--check 262144]"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH.parent), str(BENCH.parent / "tests"), str(BENCH)]

import numpy as np  # noqa: E402
from models import random_model  # noqa: E402
from peers import FP32  # noqa: E402
from reference import CheckFailed, Reference  # noqa: E402
from report import si  # noqa: E402
from run import PROMPT_TOKENS, params_of  # noqa: E402
from timing import time_batch, time_calls  # noqa: E402

from engine.fused import IDS, FusedConfig, FusedExecutor, grid  # noqa: E402
from engine.gl import GLBackend  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.resources import bundled_model  # noqa: E402

TILE_SHAPES = [  # (tile_m, tm, tn, tile_n)
    (64, 8, 8, 64),
    (64, 8, 8, 128),
    (64, 8, 4, 32),
    (64, 8, 4, 64),
    (64, 4, 8, 64),
    (64, 4, 4, 64),
    (64, 16, 4, 64),
    (64, 8, 16, 128),
    (32, 8, 8, 64),
    (32, 8, 8, 128),
    (32, 4, 8, 64),
]
SMALL_SHAPES = [(threads, split) for threads in (128, 256, 512, 1024) for split in (1, 2, 4, 8, 16, 32)]
CROSSOVER_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)


def median_us(action, calls: int = 2000) -> float:
    for _ in range(calls // 10):
        action()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        action()
        times[i] = time.perf_counter_ns() - start
    return float(np.median(times)) / 1e3


def gpu_seconds(executor: FusedExecutor, ids: np.ndarray, repeats: int = 5) -> float:
    """The tiles kernel alone on prompts already uploaded: dispatch + fence wait, median of `repeats`."""
    executor.run_ids(ids)  # uploads the prompts and binds this batch's buffers
    kernel = executor._kernel("fused_tiles", IDS)
    groups = grid(-(-len(ids) // executor.config.tile_m))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        executor.gpu.dispatch(kernel, groups, "fused_tiles")
        executor.gpu.wait_for_gpu()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=1 << 20, help="batch timed for throughput")
    parser.add_argument("--check", type=int, default=1 << 18, help="prompts checked against the oracle")
    args = parser.parse_args()
    gpu = GLBackend()
    print(f"fused variants on {gpu.renderer} ({gpu.version}); limits {gpu.limits}", flush=True)
    path = bundled_model()
    if not path.exists():
        import tempfile

        path = Path(random_model(Path(tempfile.mkdtemp()), np.random.default_rng(0)).source)
    model = load_model(path)
    spec = model.spec
    weights = gpu.uint_texture(model.weights, "weights")
    rng = np.random.default_rng(1)
    prompts = rng.integers(0, spec.vocab_size, (args.big, PROMPT_TOKENS)).astype(np.uint16)
    start = time.perf_counter()
    reference = Reference(params_of(model), spec.context_window, prompts[: args.check])
    print(f"oracle for {args.check:,} prompts: {time.perf_counter() - start:.1f} s", flush=True)
    rows = [p.tolist() for p in prompts[:2000]]

    print("\n## floors of one prompt", flush=True)
    base = FusedExecutor(gpu, spec, weights)
    print(f"fence round trip, no work:     {median_us(gpu.wait_for_gpu):7.1f} µs", flush=True)
    print(f"glFinish, no work:             {median_us(gpu.finish):7.1f} µs", flush=True)

    def dispatch_only():
        base._dispatch_small(1, IDS)

    print(f"dispatch fused_small, no wait: {median_us(dispatch_only, 200):7.1f} µs", flush=True)
    gpu.wait_for_gpu()

    def dispatch_finish():
        base._dispatch_small(1, IDS)
        gpu.finish()

    print(f"dispatch + glFinish:           {median_us(dispatch_finish):7.1f} µs", flush=True)
    print(f"run_one (dispatch + fence):    {median_us(lambda: base.run_one(rows[0])):7.1f} µs", flush=True)

    print("\n## fused_small: single-prompt latency by (threads, split)", flush=True)
    table = []
    for threads, split in SMALL_SHAPES:
        config = replace(FusedConfig(), small_threads=threads, split=split)
        try:
            executor = FusedExecutor(gpu, spec, weights, config)
            latency, outputs = time_calls(executor.run_one, rows, warmup=200)
            reference.check(np.stack(outputs), slice(0, len(rows)), FP32)
        except (CheckFailed, Exception) as e:  # a shape the GPU refuses is a result too
            print(f"threads {threads:5} split {split:3}: {type(e).__name__}: {e}", flush=True)
            continue
        table.append((latency.median_us, threads, split))
        print(
            f"threads {threads:5} split {split:3}: median {latency.median_us:6.1f} µs  p99 {latency.p99_us:6.1f} µs",
            flush=True,
        )
    best_small = min(table)
    print(f"best: threads {best_small[1]}, split {best_small[2]}: {best_small[0]:.1f} µs", flush=True)

    print("\n## fused_tiles: throughput by (tile_m, tm, tn, tile_n)", flush=True)
    results = []
    for shape in TILE_SHAPES:
        tile_m, tm, tn, tile_n = shape
        config = replace(FusedConfig(), tile_m=tile_m, tm=tm, tn=tn, tile_n=tile_n)
        try:
            executor = FusedExecutor(gpu, spec, weights, config)
            if executor.config.tile_m != tile_m:
                print(f"{shape}: does not fit ({executor.config})", flush=True)
                continue
            checked, _ = executor.run_ids(prompts[: args.check])
            reference.check(checked, slice(0, args.check), FP32)
            throughput, outputs = time_batch(lambda ids, ex=executor: ex.run_ids(ids)[0], prompts, 2.0, 10)
            for output in outputs:
                reference.check(output[: args.check], slice(0, args.check), FP32)
            kernel_s = gpu_seconds(executor, prompts)
        except (CheckFailed, Exception) as e:
            print(f"{shape}: {type(e).__name__}: {e}", flush=True)
            continue
        results.append((throughput.prompts_per_s, shape, kernel_s))
        print(
            f"{shape}: {si(throughput.prompts_per_s):>7} prompts/s end to end, kernel alone "
            f"{kernel_s * 1e3:6.2f} ms = {si(args.big / kernel_s):>7} prompts/s",
            flush=True,
        )
    best = max(results)
    print(f"best: {best[1]}: {si(best[0])} prompts/s", flush=True)

    print("\n## crossover: small vs tiles kernel (prompts/s)", flush=True)
    tile_m, tm, tn, tile_n = best[1]
    for small_max, label in ((1, "tiles"), (max(CROSSOVER_SIZES), "small")):
        config = FusedConfig(tile_m, tm, tn, tile_n, best_small[1], best_small[2], small_max)
        executor = FusedExecutor(gpu, spec, weights, config)
        cells = []
        for b in CROSSOVER_SIZES:
            throughput, outputs = time_batch(lambda ids, ex=executor: ex.run_ids(ids)[0], prompts[:b], 0.3, 500)
            reference.check(outputs[-1], slice(0, b), FP32)
            cells.append(f"{b}: {si(throughput.prompts_per_s)}")
        print(f"{label:6} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
