"""Data-parallel scaling: prompts/s at B prompts (default 16 Mi) on 1, 2, 4, 8 GPUs, measured twice.

- memory: the ids already in each worker's memory (B/n prompts of `window` random ids each, made there), one
  Engine per GPU in its own process; all start together at a barrier and a run lasts until the last one
  finishes (predict_array, the engine's fastest batch path). Each worker's first 4,096 predictions are
  checked against the oracle before any time counts.
- file: end to end as `pxgl infer --batch FILE -o OUT --device D` does it, phase by phase: read the prompts
  file, tokenize it (one engine: here, serially; several: each worker its share, within predict), start the
  engines (an EnginePool for n > 1), predict (through shared memory), write the prediction pixels, report
  (the answer lines, to /dev/null). The phases say where the host side limits it. Every device set's
  predictions must equal the first set's, pixel for pixel, or the bench stops.

    python -m bench.scaling                                  # every prefix 1, 2, 4, 8 of the GPUs here
    python -m bench.scaling --device 0 --device 0,0 --batch 1048576 --model pixellm_v0   # one GPU, 2 workers

Writes bench/results/<renderer>-scaling-<date>.md and .json. Not a test: the suite runs nothing here."""

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import re
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from pxgl.cli.predict import read_prompt_lines
from pxgl.cli.report import prediction_records, report_predictions
from pxgl.devices import gpu_count, parse_devices
from pxgl.engine import Engine
from pxgl.loading import Runnable, open_model
from pxgl.parallel import EnginePool, open_engines, renderer_of
from pxgl.pxi import encode_tokens, write_rgb

from bench.peers import FP32
from bench.reference import Reference
from tests.models import params_of

MI = 1 << 20
CHECKED = 4096
"""Predictions a worker's first rows are checked with, against the oracle, before its time counts."""
DISTINCT_PROMPTS = 1 << 16
"""The file's lines repeat this many distinct prompts (making 16 Mi distinct ones would cost minutes)."""


def memory_worker(slot: int, device: int, runnable: Runnable, share: int, seed: int, runs: int, barrier, results):
    """One GPU's part of the in-memory measurement: ids made here, one warm-up run, then timed runs."""
    spec = runnable.model.spec
    ids = np.random.default_rng(seed).integers(0, spec.vocab_size, (share, spec.context_window), dtype=np.uint16)
    with Engine(runnable, device=device) as engine:
        pixels = engine.predict_array(ids)  # warm-up: buffers sized, kernels compiled
        results.put(("check", slot, ids[:CHECKED], pixels[:CHECKED], engine.gpu.renderer))
        for run in range(runs):
            barrier.wait()
            start = time.perf_counter()
            engine.predict_array(ids)
            results.put(("run", slot, run, start, time.perf_counter()))


def measure_memory(runnable: Runnable, devices: list[int], batch: int, runs: int, params: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(devices)), context.Queue()
    shares = [batch // len(devices) + (slot < batch % len(devices)) for slot in range(len(devices))]
    workers = [
        context.Process(target=memory_worker, args=(slot, d, runnable, shares[slot], slot, runs, barrier, results))
        for slot, d in enumerate(devices)
    ]
    for worker in workers:
        worker.start()
    spans: dict[int, list[tuple[float, float]]] = {run: [] for run in range(runs)}
    renderers = set()
    for _ in range(len(devices) * (runs + 1)):
        while True:
            try:
                message = results.get(timeout=5)
                break
            except queue.Empty:
                if any(w.exitcode is not None for w in workers):
                    for worker in workers:
                        worker.kill()
                    raise SystemExit(f"a worker of {devices} died: its stderr above says why") from None
        if message[0] == "check":
            _, _, ids, pixels, renderer = message
            Reference(params, runnable.model.spec.context_window, ids).check(pixels, slice(None), FP32)
            renderers.add(renderer)
        else:
            _, _, run, start, end = message
            spans[run].append((start, end))
    for worker in workers:
        worker.join()
    walls = [max(e for _, e in s) - min(b for b, _ in s) for s in spans.values()]
    wall = float(np.median(walls))
    return {"prompts_per_s": batch / wall, "median_s": wall, "runs_s": walls, "renderers": sorted(renderers)}


def prompts_file(runnable: Runnable, batch: int, folder: Path, seed: int = 0) -> Path:
    """B lines of text, DISTINCT_PROMPTS prompts of 1..2·window random tokens decoded, repeated."""
    spec, tokenizer = runnable.model.spec, runnable.model.tokenizer
    rng = np.random.default_rng(seed)
    lines = []
    while len(lines) < min(batch, DISTINCT_PROMPTS):
        text = tokenizer.decode(rng.integers(0, spec.vocab_size, int(rng.integers(1, 2 * spec.context_window + 1))))
        text = re.sub(r"[\r\n]", " ", text)
        if text.strip():
            lines.append(text)
    path = folder / "prompts.txt"
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, batch, len(lines)):
            out.write("\n".join(lines[: batch - start]) + "\n")
    return path


def measure_file(runnable: Runnable, devices: list[int], path: Path, folder: Path) -> tuple[dict, np.ndarray]:
    """`pxgl infer --batch path --device D` phase by phase, as engine/cli/predict.py runs it: one engine
    tokenizes in this process first; several tokenize in their workers, inside the predict phase."""
    clock = [time.perf_counter()]
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        phases[name] = clock[-1] - clock[-2]

    lines = read_prompt_lines(path)
    lap("read_s")
    tokenizer, spec = runnable.model.tokenizer, runnable.model.spec
    if len(devices) == 1:
        window = spec.context_window
        pixels = encode_tokens([tokenizer.encode(line)[-window:] for line in lines], spec.vocab_size)
        lap("tokenize_s")
    with open_engines(runnable, devices) as engines:
        lap("start_s")
        if isinstance(engines, EnginePool):
            predictions = engines.predict_prompts(lines)
        else:
            predictions = engines.predict(pixels, "prompts")
        lap("predict_s")
        renderer = renderer_of(engines)
    out = folder / "predictions.pxi"
    write_rgb(out, predictions)
    lap("write_s")
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        report_predictions(prediction_records(predictions, tokenizer, lines), out, False, renderer)
    lap("report_s")
    total = clock[-1] - clock[0]
    result = {"prompts_per_s": len(lines) / total, "total_s": total, "phases": phases, "renderer": renderer}
    return result, predictions


def device_sets(asked: list[str] | None) -> list[list[int]]:
    if asked:
        return [parse_devices(d) for d in asked]
    count = gpu_count()
    return [list(range(n)) for n in (1, 2, 4, 8) if n <= count]


def efficiency(rows: list[dict], key: str) -> None:
    """Each row's rate against n times the one-engine rate (the first row with one device)."""
    one = next((r[key]["prompts_per_s"] for r in rows if len(r["devices"]) == 1 and key in r), None)
    for row in rows:
        if one and key in row:
            row[key]["efficiency"] = row[key]["prompts_per_s"] / (len(row["devices"]) * one)


def share(measured: dict) -> str:
    """The efficiency in words: none without a one-GPU row to compare with."""
    return f"{measured['efficiency']:.1%}" if "efficiency" in measured else "n/a"


def markdown(result: dict) -> str:
    lines = [
        f"# pxgl scaling: {result['model']}, B = {result['batch']:,} in memory, {result['file_batch']:,} from a file "
        f"({result['date']})",
        "",
        f"Renderers: {', '.join(result['renderers'])}. In memory: median of {result['runs']} runs. From a file: "
        "read, tokenize (one engine: in this process; several: in their workers, within predict), start, "
        "predict, write, report (the answer lines, to /dev/null).",
        "",
        "| devices | in memory (prompts/s) | efficiency | from a file (prompts/s) | efficiency | file phases (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        memory, file = row.get("memory", {}), row.get("file", {})
        phases = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in file.get("phases", {}).items())
        lines.append(
            f"| {','.join(map(str, row['devices']))} | {memory.get('prompts_per_s', 0):,.0f} | "
            f"{share(memory)} | {file.get('prompts_per_s', 0):,.0f} | {share(file)} | {phases} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pixellm_v1")
    parser.add_argument("--batch", type=int, default=16 * MI, help="prompts (B), split across the devices")
    parser.add_argument("--device", action="append", help="a device set (repeat); default: 1, 2, 4, 8 GPUs")
    parser.add_argument("--file-batch", type=int, help="prompts in the file (default: --batch)")
    parser.add_argument("--runs", type=int, default=3, help="timed in-memory runs (after one warm-up)")
    parser.add_argument("--measure", default="memory,file", help="memory, file or both")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    measures = set(args.measure.split(","))
    runnable = open_model(args.model)
    params = params_of(runnable.model)
    rows = [{"devices": devices} for devices in device_sets(args.device)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        first = None
        if "file" in measures:
            path = prompts_file(runnable, args.file_batch or args.batch, folder)
        for row in rows:
            if "memory" in measures:
                row["memory"] = measure_memory(runnable, row["devices"], args.batch, args.runs, params)
                print(f"{row['devices']} in memory: {row['memory']['prompts_per_s']:,.0f} prompts/s", flush=True)
            if "file" in measures:
                row["file"], predictions = measure_file(runnable, row["devices"], path, folder)
                first = predictions if first is None else first
                if not np.array_equal(predictions, first):
                    raise SystemExit(f"{row['devices']}: the predictions differ from {rows[0]['devices']}'s")
                print(f"{row['devices']} from a file: {row['file']['prompts_per_s']:,.0f} prompts/s", flush=True)
    efficiency(rows, "memory")
    efficiency(rows, "file")
    renderers = sorted({r for row in rows for r in row.get("memory", {}).get("renderers", [])}) or sorted(
        {row["file"]["renderer"] for row in rows if "file" in row}
    )
    result = {
        "model": args.model,
        "batch": args.batch,
        "file_batch": args.file_batch or args.batch,
        "runs": args.runs,
        "date": date.today().isoformat(),
        "renderers": renderers,
        "rows": rows,
    }
    name = re.sub(r"[^a-z0-9]+", "-", renderers[0].lower()).strip("-")[:40] if renderers else "unknown"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{name}-scaling-{args.model}-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"→ {stem}.md, .json")


if __name__ == "__main__":
    main()
