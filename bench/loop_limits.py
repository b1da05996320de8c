"""The loop-limit sweep (docs/FORMATS.md §3.1, issue 26): random family members across every loop limit —
vocabularies around 4,096 and up to 65,536, E·D around 2^16 and up to 2^20, windows past fused's 32 tokens
and up to 16,384, dense sums past 57,344 terms — on every executor (passes, fused, pxvm) and sampling setting
(greedy, temperature, top-k, top-p, both). Each answer must be the oracle's (tests/reference: predictions by
§3, generated tokens replayed by §11) or a one-line refusal before any GPU work where FORMATS allows one
(pxvm's unsplittable instructions, members outside fused's envelope); anything else is a failure. Prints a
table and writes the results as JSON.

    python -m bench.loop_limits [--quick] [--seed N] [--out bench/results/loop-limits-<device>-<date>.json]"""

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors.fused_config import refusal
from pxgl.generation import Sampling
from pxgl.gl import GLBackend
from pxgl.loading import load_model

from bench.run import slug
from tests.reference import oracle
from tests.reference.generation import assert_replays
from tests.reference.models import params_at, write_random_member

ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("passes", "fused", "pxvm")
SAMPLINGS = {
    "greedy": {},
    "temperature": {"temperature": 1.3},
    "top-k": {"temperature": 2.0, "top_k": 7},
    "top-p": {"temperature": 1.0, "top_p": 0.7},
    "top-k+top-p": {"temperature": 2.5, "top_k": 300, "top_p": 0.95},
}
PROMPTS = 4
STEPS = 3


def members(rng: np.random.Generator, quick: bool) -> list[tuple[str, dict]]:
    """(name, architecture) of the sweep's members: each limit from both sides, tiny in other dimensions."""

    def member(vocab: int, embed: int, context: dict, hidden: list[int] | None = None) -> dict:
        hidden = hidden or [int(rng.integers(8, 17))]
        return {"vocab_size": vocab, "embed_dim": embed, "context": context, "hidden": hidden, "residual": False}

    def attention(window: int, head: int, concat: int = 0) -> dict:
        return {"mode": "attention", "window": window, "concat": concat, "head_dim": head}

    mean = {"mode": "mean", "window": 3}
    sweep = [
        ("V 4040", member(4040, 8, mean)),
        ("V 4041", member(4041, 8, mean)),
        ("V 4096", member(4096, 8, mean)),
        ("V 65536", member(65536, 4, {"mode": "concat", "window": 2})),
        ("E·D 2^16 - 1 head", member(300, 256, attention(4, 255))),
        ("E·D 2^16", member(300, 256, attention(4, 256))),
        ("E·D 2^17", member(300, 512, attention(8, 256))),
        ("E·D 2^20", member(257, 1024, attention(3, 1024, 1))),
        ("W 32 attention", member(300, 16, attention(32, 8, 2))),
        ("W 33 attention", member(300, 16, attention(33, 8, 2))),
        ("W 512 attention", member(300, 16, attention(512, 8))),
        ("X 65536 concat", member(300, 128, {"mode": "concat", "window": 512})),
    ]
    if not quick:
        sweep += [
            ("V 16384", member(16384, 8, mean)),
            ("V 32768 attention", member(32768, 8, attention(8, 8))),
            ("E 4096 mean", member(300, 4096, mean)),
            ("hidden 4096 x 2", member(300, 8, mean, [4096, 4096])),
            ("W 4096 mean", member(300, 8, {"mode": "mean", "window": 4096})),
            ("W 16384 mean", member(300, 8, {"mode": "mean", "window": 16384})),
            ("V 65536 hidden 1024", member(65536, 4, mean, [1024])),
            ("W 16384 attention", member(256, 4, attention(16384, 4))),
            ("X 131072 concat", member(256, 256, {"mode": "concat", "window": 512}, [8])),
            ("E·D 2^22", member(256, 2048, attention(2, 2048))),
        ]
    return sweep


def check(executor: str, sampling: dict, engine: Engine, params: dict, rows: list, what: str) -> str:
    """'agrees', or raises: predictions (greedy only) and STEPS generated tokens replayed by the oracle."""
    if not sampling:
        oracle.assert_agrees(engine.predict_ids(rows), oracle.logits(params, rows), what)
    generation = engine.generate(rows, STEPS, Sampling(**sampling))
    logprobs = None if executor == "pxvm" else generation.logprobs
    assert_replays(params, rows, generation.tokens, logprobs, sampling, what)
    return "agrees"


def run_member(gpu: GLBackend, directory: Path, rng: np.random.Generator, name: str, arch: dict) -> dict:
    path = write_random_member(directory, rng, arch, name=f"m{abs(hash(name)) % 10**8}")
    model, params = load_model(path), params_at(path)
    window, vocab = arch["context"]["window"], arch["vocab_size"]
    rows = [list(map(int, rng.integers(0, vocab, int(rng.integers(1, min(window, 600) + 3))))) for _ in range(PROMPTS)]
    rows[0] = rows[0][:1]
    results: dict = {"architecture": model.spec.architecture.describe(), "cells": {}}
    for executor in EXECUTORS:
        allowed = executor == "pxvm" or (executor == "fused" and refusal(model.spec, gpu) is not None)
        for label, sampling in SAMPLINGS.items():
            if executor != "passes" and sampling:
                continue  # fused and pxvm generate greedily (§11): their refusal of sampling is tested elsewhere
            start = time.perf_counter()
            try:
                with Engine(model, gpu=gpu, executor=executor) as engine:
                    outcome = check(executor, sampling, engine, params, rows, f"{executor}, {name}, {label}")
            except PxglError as e:
                message = str(e)
                allowed_refusal = allowed and "\n" not in message
                outcome = ("refused: " if allowed_refusal else "FAILED, refused: ") + message
            except AssertionError as e:
                outcome = "FAILED: " + str(e).splitlines()[0]
            results["cells"][f"{executor} {label}"] = {
                "outcome": outcome,
                "seconds": round(time.perf_counter() - start, 3),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 12 members of tests/test_loop_limits.py's size")
    parser.add_argument("--seed", type=int, help="the members' and prompts' seed (default: a fresh one, printed)")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/loop-limits-<device>-<date>.json)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    gpu = GLBackend()
    date = datetime.date.today().isoformat()
    report: dict = {"device": gpu.renderer, "date": date, "seed": seed, "quick": args.quick, "members": {}}
    print(f"== loop limits on {gpu.renderer}, seed {seed}", flush=True)
    failures = 0
    with tempfile.TemporaryDirectory() as directory:
        for name, arch in members(rng, args.quick):
            result = report["members"][name] = run_member(gpu, Path(directory), rng, name, arch)
            for cell, entry in result["cells"].items():
                failures += entry["outcome"].startswith("FAILED")
                print(f"{name:20} {cell:24} {entry['seconds']:8.2f}s  {entry['outcome'][:90]}", flush=True)
    report["failures"] = failures
    out = args.out or ROOT / "bench" / "results" / f"loop-limits-{slug(gpu.renderer)}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"{failures} failures; wrote {out}", flush=True)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
