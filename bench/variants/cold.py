"""Where a cold `pxgl infer PROMPT` spends its wall time: each step of the command, timed inside a fresh
process (run with --step), next to the whole command and a bare interpreter timed from outside.

    python bench/variants/cold.py [--model M] [--executor fused] [--runs 3]"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent.parent
PROMPT = "pxOS evolution"


def steps(model: str, executor: str) -> list[tuple[str, float]]:
    """The steps of `pxgl infer PROMPT` in order, each with its seconds (imports first)."""
    marks = [("interpreter start → this line", time.perf_counter() - START)]

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        marks.append((name, now - since))
        return now

    t = time.perf_counter()
    import numpy  # noqa: F401

    t = mark("import numpy", t)
    import typer  # noqa: F401

    t = mark("import typer", t)

    t = mark("import engine.cli", t)
    from pxgl.engine import Engine
    from pxgl.loading import load_model
    from pxgl.pxi import encode_tokens, write_rgb

    t = mark("import engine.engine (moderngl, ...)", t)
    loaded = load_model(model)
    t = mark("load_model (PNG + meta)", t)
    tokenizer = loaded.tokenizer
    pixels = encode_tokens([tokenizer.encode(PROMPT)], loaded.spec.vocab_size)
    t = mark("tokenizer load + encode", t)
    from pxgl.gl import GLBackend

    gpu = GLBackend()
    t = mark("GL context (EGL)", t)
    engine = Engine(loaded, gpu=gpu, executor=executor)
    t = mark(f"Engine({executor}): upload, compile, prepare", t)
    predictions = engine.predict(pixels)
    t = mark("first predict", t)
    write_rgb(Path(os.environ.get("TMPDIR", "/tmp")) / "cold_step_output.pxi", predictions)
    mark("write output PNG", t)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--executor", default="fused")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step", action="store_true", help="(internal) time the steps in this process")
    args = parser.parse_args()
    if args.step:
        for name, seconds in steps(args.model, args.executor):
            print(f"{seconds * 1e3:9.1f} ms  {name}")
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    def wall(command: list[str]) -> float:
        subprocess.run(command, env=env, check=True, capture_output=True)  # warm the caches first
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    infer = [sys.executable, "-m", "pxgl.cli", "infer", PROMPT, "--model", args.model, "-x", args.executor]
    print(f"{wall([sys.executable, '-c', 'pass']) * 1e3:9.1f} ms  bare interpreter (python -c pass)")
    print(f"{wall([sys.executable, '-S', '-c', 'pass']) * 1e3:9.1f} ms  bare interpreter without site (-S)")
    print(f"{wall(infer) * 1e3:9.1f} ms  whole `pxgl infer` ({args.executor})")
    step = [sys.executable, __file__, "--model", args.model, "--executor", args.executor, "--step"]
    subprocess.run(step, env=env, check=True, capture_output=True)
    print(subprocess.run(step, env=env, check=True, capture_output=True, text=True).stdout, end="")


if __name__ == "__main__":
    main()
