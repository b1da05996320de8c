"""Where a cold `pxgl infer PROMPT` spends its wall time: each step of the command, timed inside a fresh
process (run with --step) in the order the command takes them, next to the whole command and a bare
interpreter timed from outside (min and median of --runs, after one run that warms every cache).

    python bench/variants/cold.py [--model M] [--executor fused] [--runs 5]

The processes it starts may write bytecode (PYTHONDONTWRITEBYTECODE is dropped for them) as an installed
pxgl does on a user's machine: without it every pxgl module is compiled again each run (~85 ms on 2 cores)."""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent.parent
PROMPT = "pxOS evolution"


def steps(model: str | None, executor: str | None) -> list[tuple[str, float]]:
    """The steps of `pxgl infer PROMPT` in order, each with its seconds (imports first)."""
    marks = [("interpreter start → this line", time.perf_counter() - START)]

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        marks.append((name, now - since))
        return now

    t = time.perf_counter()
    import pxgl.cli
    import typer
    from pxgl.cli.predict import single_blas_thread

    typer.main.get_command(pxgl.cli.app)
    t = mark("import pxgl.cli (typer, every verb) and build its commands", t)
    single_blas_thread()
    import numpy  # noqa: F401

    t = mark("import numpy (one BLAS thread)", t)
    from pxgl.engine import Engine
    from pxgl.loading import open_model
    from pxgl.pxi import encode_tokens, write_rgb

    t = mark("import pxgl.engine (moderngl, executors, loading)", t)
    runnable = open_model(model, executor)
    t = mark("open_model (meta, weights PNG)", t)
    tokenizer = runnable.model.tokenizer
    pixels = encode_tokens([tokenizer.encode(PROMPT)], runnable.model.spec.vocab_size)
    t = mark("tokenizer load + encode", t)
    from pxgl.gl import GLBackend

    gpu = GLBackend()
    t = mark("GL context (EGL)", t)
    engine = Engine(runnable, gpu=gpu)
    t = mark(f"Engine({engine.executor_name}): upload, compile, prepared weights", t)
    predictions = engine.predict(pixels)
    t = mark("first predict", t)
    write_rgb(Path(os.environ.get("TMPDIR", "/tmp")) / "cold_step_output.pxi", predictions)
    mark("write output PNG", t)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="default: the bundled default model")
    parser.add_argument("--executor", default=None, help="default: the model's own choice (auto)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--step", action="store_true", help="(internal) time the steps in this process")
    args = parser.parse_args()
    if args.step:
        for name, seconds in steps(args.model, args.executor):
            print(f"{seconds * 1e3:9.1f} ms  {name}")
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def wall(command: list[str]) -> str:
        subprocess.run(command, env=env, check=True, capture_output=True)  # warm the caches first
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        return f"{min(times) * 1e3:7.1f} / {statistics.median(times) * 1e3:7.1f} ms"

    model = ["--model", args.model] if args.model else []
    output = Path(os.environ.get("TMPDIR", "/tmp")) / "cold_output.pxi"
    infer = [sys.executable, "-m", "pxgl.cli", "infer", PROMPT, "-o", str(output), *model]
    infer += ["-x", args.executor] if args.executor else []
    print(f"min / median of {args.runs} runs")
    print(f"{wall([sys.executable, '-c', 'pass'])}  bare interpreter (python -c pass)")
    print(f"{wall([sys.executable, '-S', '-c', 'pass'])}  bare interpreter without site (-S)")
    print(f"{wall(infer)}  whole `pxgl infer`")
    step = [sys.executable, __file__, *model, *(["--executor", args.executor] if args.executor else []), "--step"]
    subprocess.run(step, env=env, check=True, capture_output=True)
    print("steps inside one process:")
    print(subprocess.run(step, env=env, check=True, capture_output=True, text=True).stdout, end="")


if __name__ == "__main__":
    main()
