"""Variants of the fused executor (engine/fused.py), llm.c dev/cuda style: each work shape is checked against
the oracle, then timed; the table at the end says which wins. Also the floors of the single-prompt path:
a fence round trip with no work, and where a prompt's time goes.

    python -m bench.variants.sweep [--big 1048576] [--check 262144]"""

import argparse
import re
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from pxgl.constants import POISON_WORD
from pxgl.executors.fused import FusedExecutor
from pxgl.executors.fused_config import FUSED_SMALL, FUSED_TILES, IDS, FusedConfig
from pxgl.executors.protocol import ExecutorInputs
from pxgl.gl import GLBackend, GpuProgram
from pxgl.loading import load_model

from bench.peers import FP32
from bench.reference import CheckFailed, Reference
from bench.report import si
from bench.run import PROMPT_TOKENS, bundled
from bench.timing import time_batch, time_calls
from bench.variants.batch import batch_kernel_seconds
from tests.models import params_of, random_model

TILE_SHAPES = [  # (tile_m, tm, tn, tile_n, stage_k)
    (64, 4, 8, 128, 8),
    (64, 4, 8, 128, 4),
    (64, 4, 4, 128, 8),
    (64, 4, 4, 64, 8),
    (64, 4, 8, 64, 8),
    (64, 8, 4, 64, 8),
    (64, 8, 4, 128, 8),
    (64, 8, 8, 128, 8),
    (64, 4, 16, 256, 4),
    (32, 4, 8, 128, 8),
]
SMALL_SHAPES = [(threads, split) for threads in (128, 256, 1024) for split in (1, 4, 16)]
CHUNKS = (1 << 16, 1 << 18, 1 << 20)
CROSSOVER_SIZES = (2, 8, 32, 64, 128, 256, 512)


def median_us(action, calls: int = 2000) -> float:
    for _ in range(calls // 10):
        action()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        action()
        times[i] = time.perf_counter_ns() - start
    return float(np.median(times)) / 1e3


def fused_program(executor: FusedExecutor, name: str) -> GpuProgram:
    """The executor's compiled fused_small or fused_tiles program for uint16 ids."""
    config, gpu = executor.config, executor.gpu
    if name == "fused_small":
        return gpu.program(FUSED_SMALL, executor._small_constants[IDS, False], config.small_threads)
    return gpu.program(FUSED_TILES, executor._tile_constants[IDS, False], config.tile_threads)


def assembly_report(gpu: GLBackend, executor: FusedExecutor, name: str, out: Path | None) -> str:
    """Local-memory use in NVIDIA's assembly of a kernel (its program binary holds the text)."""
    binary = gpu.program_binary(fused_program(executor, name))
    text = "\n".join(chunk.decode() for chunk in re.findall(rb"[\x20-\x7e\t\n]{6,}", binary))
    if out is not None:
        with out.open("a") as log:
            log.write(f"\n==== {name}, {executor.config}\n{text}\n")
    summary = re.findall(r"# \d+ instructions, \d+ R-regs", text)
    return f"{len(binary)} bytes, {summary or 'no instruction count'}, {text.count('lmem')} mentions of lmem"


def gpu_time_us(gpu: GLBackend, action, calls: int = 200) -> float:
    """Median GPU time of `action`'s commands (GL_TIME_ELAPSED), µs."""
    timer, times = gpu.timer(), []
    for _ in range(calls):
        with timer:
            action()
        times.append(timer.elapsed / 1e3)
    return float(np.median(times))


def one_prompt_breakdown(gpu: GLBackend, spec, weights, ids: list[int]) -> None:
    """Where one prompt's time goes: the upload, the wait, the kernel on the GPU, the barrier."""
    executor = FusedExecutor(gpu, ExecutorInputs(spec, weights))
    buffers = executor._small
    prompts = buffers.prompts[0]
    packed = struct.pack(f"<4I{len(ids)}H", 1, len(ids), 0, 0, *ids)
    prompts.write(packed)
    program = fused_program(executor, "fused_small")

    def dispatch_and_poll() -> None:
        buffers.words[0] = POISON_WORD
        executor._dispatch_small(buffers, prompts, 1, IDS)

    def dispatch_only() -> None:
        resources = {"prompts": prompts, "predictions": buffers.predictions, "scratch": executor.scratch}
        gpu.run(program, (executor.config.split, 1, 1), **executor._weights, **resources)

    def cpu_cost(action) -> float:
        """CPU time of one call, each after the GPU went idle (no queue to wait behind)."""
        times = []
        for _ in range(300):
            gpu.wait_for_gpu()
            start = time.perf_counter_ns()
            action()
            times.append(time.perf_counter_ns() - start)
        return float(np.median(times)) / 1e3

    rows = [
        ("fence round trip, no work", median_us(gpu.wait_for_gpu)),
        ("CPU: glBufferSubData of the prompt", cpu_cost(lambda: prompts.write(packed))),
        ("CPU: glMemoryBarrier", cpu_cost(gpu.storage_barrier)),
        ("CPU: glUseProgram + glDispatchCompute", cpu_cost(dispatch_only)),
        ("CPU: glFlush", cpu_cost(gpu.flush)),
        ("GPU: one fused_small dispatch (timer query)", gpu_time_us(gpu, dispatch_only)),
        ("dispatch + poll, no upload", median_us(dispatch_and_poll)),
        ("run_one (upload + dispatch + poll)", median_us(lambda: executor.run_one(ids))),
    ]
    barrier = gpu.storage_barrier
    gpu.storage_barrier = lambda: None  # what the memory barrier before each dispatch costs
    rows.append(("run_one without the memory barrier", median_us(lambda: executor.run_one(ids))))
    gpu.storage_barrier = barrier
    for name, us in rows:
        print(f"{name:44} {us:7.1f} µs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=1 << 20, help="batch timed for throughput")
    parser.add_argument("--check", type=int, default=1 << 16, help="prompts checked against the oracle")
    parser.add_argument("--asm-out", type=Path, help="file to append the kernels' assembly text to")
    parser.add_argument("--one-prompt-only", action="store_true", help="only where one prompt's time goes")
    parser.add_argument("--model", type=Path, help="weights .pxi (default: the bundled default model)")
    args = parser.parse_args()
    gpu = GLBackend()
    print(f"fused variants on {gpu.renderer} ({gpu.version}); limits {gpu.limits}", flush=True)
    model_path = args.model or (bundled() or [None])[0]
    if model_path is None:
        import tempfile

        model_path = Path(random_model(Path(tempfile.mkdtemp()), np.random.default_rng(0)).source)
    model = load_model(model_path)
    spec = model.spec
    weights = gpu.uint_texture(model.weights, "weights")
    rng = np.random.default_rng(1)
    prompts = rng.integers(0, spec.vocab_size, (args.big, PROMPT_TOKENS)).astype(np.uint16)
    start = time.perf_counter()
    reference = Reference(params_of(model), spec.context_window, prompts[: args.check])
    print(f"oracle for {args.check:,} prompts: {time.perf_counter() - start:.1f} s", flush=True)
    rows = [p[-spec.context_window :].tolist() for p in prompts[:2000]]

    def latency(config: FusedConfig) -> float:
        executor = FusedExecutor(gpu, ExecutorInputs(spec, weights), config)
        result, outputs = time_calls(executor.run_one, rows, warmup=200)
        reference.check(np.stack(outputs), slice(0, len(rows)), FP32)
        return result.median_us

    def throughput(config: FusedConfig) -> tuple[float, float, FusedExecutor]:
        executor = FusedExecutor(gpu, ExecutorInputs(spec, weights), config)
        checked, _ = executor.run_ids(prompts[: args.check])
        reference.check(checked, slice(0, args.check), FP32)
        result, outputs = time_batch(lambda ids: executor.run_ids(ids)[0], prompts, 1.0, 5)
        for output in outputs:
            reference.check(output[: args.check], slice(0, args.check), FP32)
        return result.prompts_per_s, batch_kernel_seconds(executor, prompts), executor

    print("\n## one prompt: where the time goes", flush=True)
    one_prompt_breakdown(gpu, spec, weights, rows[0])
    if args.one_prompt_only:
        return
    for sync in ("poll", "fence"):
        print(f"run_one, sync {sync:5}: {latency(FusedConfig(sync=sync)):7.1f} µs", flush=True)

    print("\n## fused_small: single-prompt latency by (threads, split), poll", flush=True)
    table = []
    for threads, split in SMALL_SHAPES:
        try:
            table.append((latency(FusedConfig(small_threads=threads, split=split)), threads, split))
        except (CheckFailed, Exception) as e:  # a shape the GPU refuses is a result too
            print(f"threads {threads:5} split {split:3}: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        print(f"threads {threads:5} split {split:3}: median {table[-1][0]:6.1f} µs", flush=True)
    best_small = min(table)
    print(f"best: threads {best_small[1]}, split {best_small[2]}: {best_small[0]:.1f} µs", flush=True)

    print("\n## fused_tiles: throughput by (tile_m, tm, tn, tile_n, stage_k)", flush=True)
    results = []
    for shape in TILE_SHAPES:
        tile_m, tm, tn, tile_n, stage_k = shape
        config = FusedConfig(tile_m=tile_m, tm=tm, tn=tn, tile_n=tile_n, stage_k=stage_k, gemm=None)
        try:
            rate, kernel_s, executor = throughput(config)
        except (CheckFailed, Exception) as e:
            print(f"{shape}: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        if executor.config.tile_m != tile_m:
            print(f"{shape}: does not fit ({executor.config})", flush=True)
            continue
        results.append((rate, shape))
        print(
            f"{shape}: {si(rate):>7} prompts/s end to end, kernel alone "
            f"{kernel_s * 1e3:6.2f} ms = {si(args.big / kernel_s):>7} prompts/s",
            flush=True,
        )
    best = max(results)
    print(f"best: {best[1]}: {si(best[0])} prompts/s", flush=True)
    tile_m, tm, tn, tile_n, stage_k = best[1]
    best_config = FusedConfig(tile_m, tm, tn, tile_n, stage_k, best_small[1], best_small[2])
    for chunk in CHUNKS:
        rate, _, executor = throughput(replace(best_config, chunk=chunk))
        print(f"chunk {chunk:>8}: {si(rate):>7} prompts/s end to end", flush=True)
    for name in ("fused_tiles", "fused_small"):
        print(f"assembly {name}: {assembly_report(gpu, executor, name, args.asm_out)}", flush=True)

    print("\n## crossover: small vs tiles kernel (prompts/s)", flush=True)
    for small_max, label in ((1, "tiles"), (max(CROSSOVER_SIZES), "small")):
        executor = FusedExecutor(gpu, ExecutorInputs(spec, weights), replace(best_config, small_max=small_max))
        cells = []
        for b in CROSSOVER_SIZES:
            result, outputs = time_batch(lambda ids, ex=executor: ex.run_ids(ids)[0], prompts[:b], 0.2, 300)
            reference.check(outputs[-1], slice(0, b), FP32)
            cells.append(f"{b}: {si(result.prompts_per_s)}")
        print(f"{label:6} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
