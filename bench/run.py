"""`make bench`: pxgl's executors against numpy and PyTorch on whatever machine this is.

Measures, in one run: single-prompt latency (token ids in host memory → prediction pixel in host memory),
batched throughput for growing batches, and cold `pxgl infer` as a new process; checks every measured
result against the oracle (tests/reference/oracle.py) before counting its time; writes
bench/results/<device>-<date>.{json,md,png}. Every executor in engine.engine.EXECUTORS is measured."""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors import EXECUTORS
from pxgl.gl import GLBackend
from pxgl.loading import load_model
from pxgl.model import Model
from pxgl.pxi import read_rgb
from pxgl.resources import bundled_models

from bench.peers import System, Tolerance, numpy_system, torch_systems
from bench.reference import CheckFailed, Reference
from bench.report import plot, si, write_json, write_markdown
from bench.timing import time_batch, time_calls
from tests.models import params_of

ROOT = Path(__file__).resolve().parent.parent
GPU_SIZES = (1, 64, 1024, 16384, 262144, 1048576)
CPU_SIZES = (1, 64, 1024, 16384)
"""Batch sizes where the renderer is a CPU (llvmpipe: CI's kind of machine)."""
PROMPT_TOKENS = 16
COLD_PROMPT = "pxOS evolution"
BATCH_BUDGET_S = 1.0
"""Timed runs of one batch size continue until this much time is spent (at least 3 runs)."""
MAX_RUNS = 200
SKIP_AFTER_S = 5.0
"""A batch size whose one run is expected to take longer than this is skipped (with the estimate)."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="comma-separated batch sizes (default: by renderer)")
    parser.add_argument("--calls", type=int, default=1000, help="timed single-prompt calls per system")
    parser.add_argument("--cold-runs", type=int, default=5, help="timed cold `pxgl infer` runs per executor")
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        help="weights .pxi; repeat for several (default: every bundled model, else a random one)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the results")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    parser.add_argument("--skip-after", type=float, default=SKIP_AFTER_S, help="longest expected run, s")
    return parser.parse_args()


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3/PCIe/SSE2' → 'nvidia-h100-80gb-hbm3'; 'llvmpipe (LLVM 15...)' → 'llvmpipe'."""
    head = re.split(r"[/(]", text)[0]
    return re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-") or "gpu"


def host_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def bundled() -> list[Path]:
    """The bundled models with their tokenizers, the default first."""
    return [path for path in bundled_models().values() if load_model(path).tokenizer_path.exists()]


def random_stand_in(directory: Path) -> Path:
    """No bundled model yet: a random model of pixellm_v0's shape with a tokenizer trained on random words."""
    from pxgl.tokenizer import Tokenizer

    from tests.models import random_model

    rng = np.random.default_rng(0)
    model = random_model(directory, rng, vocab=1024, embed=128, hidden=128, window=16, name="stand_in")
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, int(rng.integers(2, 9)))) for _ in range(20000)]
    Tokenizer.train(" ".join(words), model.spec.vocab_size).save(model.tokenizer_path)
    return Path(model.source)


def pxgl_systems(model: Model, gpu: GLBackend) -> tuple[list[System], list[str]]:
    systems, skipped = [], []
    for name in EXECUTORS:
        try:
            engine = Engine(model, gpu=gpu, executor=name)
        except PxglError as e:
            skipped.append(f"pxgl-{name}: skipped, {e}")
            continue
        systems.append(
            System(
                f"pxgl-{name}",
                "pxgl",
                "fp32",
                Tolerance(),
                engine.predict_one,
                engine.predict_array,
                f"engine.Engine(executor={name!r}): predict_one / predict_array",
            )
        )
    return systems, skipped


def measure_latency(system: System, prompts: np.ndarray, reference: Reference) -> dict:
    if system.predict_one is None:
        return {"skipped": "no single-prompt mode"}
    rows = [p.tolist() for p in prompts]
    try:
        latency, outputs = time_calls(system.predict_one, rows, warmup=min(100, len(rows)))
        reference.check(np.stack(outputs), slice(0, len(rows)), system.tolerance)
    except CheckFailed as e:
        return {"skipped": f"failed the oracle check: {e}"}
    return {"median_us": latency.median_us, "p99_us": latency.p99_us, "calls": latency.calls}


def measure_throughput(system: System, prompts: np.ndarray, sizes: list[int], reference: Reference, skip_after: float):
    results: dict[str, dict] = {}
    if system.predict_batch is None:
        return results
    seconds_per_prompt = 0.0
    for b in sizes:
        expected = seconds_per_prompt * b
        if expected > skip_after:
            results[str(b)] = {"skipped": f"expected {expected:.0f} s a run (limit {skip_after:.0f} s)"}
            print(f"  {system.name:22} B={b:>8}: skipped, expected {expected:.0f} s a run", flush=True)
            continue
        ids = prompts[:b]
        try:
            throughput, outputs = time_batch(system.predict_batch, ids, BATCH_BUDGET_S, MAX_RUNS)
            for output in outputs:
                reference.check(output, slice(0, b), system.tolerance)
        except CheckFailed as e:
            results[str(b)] = {"skipped": f"failed the oracle check: {e}"}
            print(f"  {system.name:22} B={b:>8}: FAILED the oracle check: {e}", flush=True)
            continue
        seconds_per_prompt = throughput.median_s / b
        results[str(b)] = {
            "prompts_per_s": throughput.prompts_per_s,
            "median_s": throughput.median_s,
            "runs": throughput.runs,
        }
        print(f"  {system.name:22} B={b:>8}: {si(throughput.prompts_per_s):>7} prompts/s", flush=True)
    return results


def measure_cold(executor: str, model_path: Path, runs: int, reference: Reference) -> dict:
    """`pxgl infer PROMPT` as a new process: first as after an install (pxgl's prepared weights and the GL
    driver's shaders not cached yet; Python's bytecode as the install compiled it), then `runs` timed runs
    with the caches as the run before left them; each checked against the oracle's prediction pixel."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's Python writes bytecode: later runs start from it
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "output_token.pxi"
        command = [sys.executable, "-m", "pxgl.cli", "infer", COLD_PROMPT, "--model", str(model_path.resolve())]
        command += ["--executor", executor, "--out", str(out)]
        caches = Path(tmp) / "caches"
        fresh = {  # the caches a first run fills, empty and this run's own
            "XDG_CACHE_HOME": str(caches / "xdg"),
            "PXGL_CACHE_DIR": str(caches / "pxgl"),
            "__GL_SHADER_DISK_CACHE_PATH": str(caches / "nvidia"),
            "MESA_SHADER_CACHE_DIR": str(caches / "mesa"),
        }
        for folder in fresh.values():
            Path(folder).mkdir(parents=True)
        times = []
        for _ in range(runs + 1):
            start = time.perf_counter()
            done = subprocess.run(command, env=env | fresh, cwd=tmp, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return {"skipped": f"pxgl infer exited {done.returncode}: {reason}"}
            try:
                reference.check(read_rgb(out), slice(0, 1), Tolerance())
            except CheckFailed as e:
                return {"skipped": f"failed the oracle check: {e}"}
            times.append(elapsed)
    return {"median_s": float(np.median(times[1:])), "runs_s": times[1:], "first_run_s": times[0]}


def main() -> None:
    args = arguments()
    gpu = GLBackend()
    default_sizes = CPU_SIZES if gpu.cpu_renderer else GPU_SIZES
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(default_sizes)
    date = datetime.date.today().isoformat()
    print(f"pxgl bench on {gpu.renderer} ({gpu.version}), {date}; batch sizes {sizes}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        models = args.model or bundled()
        if not models:
            print("no bundled model with a tokenizer yet: using a random stand-in of its shape", flush=True)
            models = [random_stand_in(Path(scratch))]
        # Cold starts first, on a machine the bench does not load yet (no oracle workers, no CUDA context).
        colds = {path: cold_starts(path, args.cold_runs) for path in models}
        for model_path in models:
            results = bench_model(model_path, gpu, sizes, args, date, colds[model_path])
            args.out.mkdir(parents=True, exist_ok=True)
            stem = args.out / f"{slug(gpu.renderer)}-{model_path.stem}-{date}"
            write_json(stem.with_suffix(".json"), results)
            write_markdown(stem.with_suffix(".md"), results)
            plot(stem.with_suffix(".png"), results)
            print(stem.with_suffix(".md").read_text(encoding="utf-8"))
            print(f"wrote {stem}.json, .md and .png")


def cold_starts(model_path: Path, runs: int) -> dict[str, dict]:
    """Cold `pxgl infer` of every executor on one model, each checked against the oracle's prediction."""
    if runs <= 0:
        return {}
    model = load_model(model_path)
    ids = model.tokenizer.encode(COLD_PROMPT)
    reference = Reference(params_of(model), model.spec.context_window, np.array([ids]))
    return {executor: measure_cold(executor, model_path, runs, reference) for executor in EXECUTORS}


def bench_model(
    model_path: Path, gpu: GLBackend, sizes: list[int], args: argparse.Namespace, date: str, colds: dict[str, dict]
) -> dict:
    """Every system on one model: latency, throughput by batch size, and the pxgl executors' cold starts."""
    print(f"== {model_path.stem}", flush=True)
    model = load_model(model_path)
    params, window = params_of(model), model.spec.context_window
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(0, model.spec.vocab_size, (max(*sizes, args.calls), PROMPT_TOKENS)).astype(np.uint16)

    start = time.perf_counter()
    reference = Reference(params, window, prompts)
    print(f"oracle answers for {len(prompts):,} prompts in {time.perf_counter() - start:.1f} s", flush=True)

    systems, skipped = pxgl_systems(model, gpu)
    systems.append(numpy_system(params))
    peers, peers_skipped = torch_systems(params, PROMPT_TOKENS)
    systems += peers
    skipped += peers_skipped
    for reason in skipped:
        print(reason, flush=True)

    results_systems: dict[str, dict] = {}
    for system in systems:
        print(f"{system.name}: {system.notes}", flush=True)
        entry: dict = {"kind": system.kind, "precision": system.precision, "notes": system.notes}
        entry["latency"] = measure_latency(system, prompts[: args.calls], reference)
        latency = entry["latency"]
        if "median_us" in latency:
            print(
                f"  {system.name:22} one prompt: median {latency['median_us']:.1f} µs, p99 {latency['p99_us']:.1f} µs",
                flush=True,
            )
        entry["throughput"] = measure_throughput(system, prompts, sizes, reference, args.skip_after)
        executor = system.name.removeprefix("pxgl-")
        if system.kind == "pxgl" and executor in colds:
            entry["cold_infer"] = colds[executor]
            print(f"  {system.name:22} cold pxgl infer: {entry['cold_infer']}", flush=True)
        results_systems[system.name] = entry
    return {
        "device": gpu.renderer,
        "gl_version": gpu.version,
        "date": date,
        "host": host_name(),
        "model": {
            "name": f"bundled {model_path.stem}" if model_path in bundled() else model_path.name,
            "shape": model.spec.architecture.describe(),
        },
        "prompt_tokens": PROMPT_TOKENS,
        "seed": args.seed,
        "batch_sizes": sizes,
        "cold_prompt": COLD_PROMPT,
        "skipped": skipped,
        "systems": results_systems,
    }


if __name__ == "__main__":
    main()
