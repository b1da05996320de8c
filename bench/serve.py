"""`python -m bench.serve`: `pxgl serve` under load. Not a test: it measures.

For each concurrency C (clients, each sending its next request as soon as its last is answered) it measures
requests/s and the p50/p99 latency of OpenAI-style completions (greedy, `max_tokens` 16 by default) against
three servers on this machine, and how long /health takes meanwhile (probed every 50 ms from this process):

- batched: `pxgl serve` as it ships (`--max-batch 256`): concurrent requests share GPU batches;
- unbatched: the same server with `--max-batch 1`: every request runs alone;
- ceiling: the same app (parsing, tokenizing, answer shaping, HTTP) whose engine answers at once with a
  fixed continuation, no GPU: what the HTTP stack alone allows on this machine with this load generator.

Every answer of the GPU servers is checked against the engine's own greedy generation of the same prompt
(Engine.generate in this process, itself tested against the numpy oracle) before its time counts; a wrong
or failed answer stops the bench. Load comes from `--client-processes` processes of asyncio httpx clients,
so one Python client loop is not the ceiling. Writes bench/results/serve-<device>-<date>.{json,md}.

    python -m bench.serve                                   # this machine, the bundled model
    python -m bench.serve --concurrency 1,16,64,256 --requests 2048   # the H200 run of issue 15"""

import argparse
import asyncio
import datetime
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 600
PROMPTS = 64
MODES = ("batched", "unbatched", "ceiling")
MAX_BATCH = {"batched": 256, "unbatched": 1}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model to serve (default: the bundled one)")
    parser.add_argument("--executor", default=None, help="the servers' -x (default: theirs, auto)")
    parser.add_argument("--concurrency", default="1,16,64,256", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=512, help="requests per measurement (at least C)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every completion")
    parser.add_argument("--client-processes", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)))
    parser.add_argument("--modes", default=",".join(MODES), help=f"which servers, of {','.join(MODES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the results")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH["batched"], help="the batched server's --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="the GPU servers' --batch-wait-ms")
    parser.add_argument("--ceiling-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


# --- the ceiling server: the same app, an engine that answers at once ------------------------------------


def run_ceiling_server(model: str | None, max_tokens: int) -> None:
    """Serve the app with a worker that answers every completion at once with a fixed continuation."""
    from pxgl.generation import Generation
    from pxgl.loading import open_model
    from pxgl.serve import Limits, Mounted
    from pxgl.serve.server import bind, model_name, uvicorn_config
    from pxgl.serve.worker import FINISHED, EngineWorker, GenerateJob, Job

    class AnswerAtOnce(EngineWorker):
        def start(self) -> None:
            self.executor_name = "none (fixed answer)"

        def stop(self) -> None:
            pass

        def submit(self, job: Job) -> None:
            assert isinstance(job, GenerateJob)
            shape = (len(job.rows), job.max_tokens)
            no_top = np.empty((*shape, 0), np.int64), np.empty((*shape, 0), np.float32)
            tokens = np.full(shape, ord("x"), np.int64)
            job.sink.put(Generation(tokens, np.zeros(shape, np.uint8), np.zeros(shape, np.float32), *no_top))
            job.sink.put(FINISHED)

    import uvicorn
    from pxgl.serve import create_app

    runnable = open_model(model, "passes")
    limits = Limits(max_tokens=max(max_tokens, 16), queue=4096)
    worker = AnswerAtOnce(model_name(runnable), runnable, limits)
    worker.start()
    listener = bind("127.0.0.1", 0)
    print(f"pxgl serve: listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    app = create_app([Mounted(worker.name, runnable, worker)], limits)
    uvicorn.Server(uvicorn_config(app, limits)).run(sockets=[listener])


# --- servers and load ------------------------------------------------------------------------------------


def start_server(mode: str, args: argparse.Namespace) -> tuple[str, subprocess.Popen]:
    model = ["--model", args.model] if args.model else []
    if mode == "ceiling":
        command = [sys.executable, "-m", "bench.serve", "--ceiling-server", "--max-tokens", str(args.max_tokens)]
        command += model
    else:
        command = [
            sys.executable,
            "-m",
            "pxgl.cli",
            "serve",
            "--port",
            "0",
            *(["-x", args.executor] if args.executor else []),
        ]
        max_batch = args.max_batch if mode == "batched" else MAX_BATCH[mode]
        command += ["--max-batch", str(max_batch), "--queue", "4096", *(["-m", args.model] if args.model else [])]
        if args.batch_wait_ms is not None:
            command += ["--batch-wait-ms", str(args.batch_wait_ms)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"listening on (http://\S+)", line)
    if found is None:
        process.kill()
        raise SystemExit(f"{mode} server did not start: {line!r}")
    return found[1], process


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def client_process(
    url: str, bodies: list[dict], expected: list[str] | None, clients: int, requests: int, start_at: float
) -> tuple[list[float], list[str]]:
    """`clients` asyncio clients sending `requests` in all; each answer's latency (s), and the problems."""
    import httpx

    async def run() -> tuple[list[float], list[str]]:
        latencies: list[float] = []
        problems: list[str] = []
        left = iter(range(requests))
        connections = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=connections) as http:

            async def one_client() -> None:
                for i in left:
                    body = bodies[i % len(bodies)]
                    began = time.perf_counter()
                    response = await http.post("/v1/completions", json=body)
                    latencies.append(time.perf_counter() - began)
                    if response.status_code != 200:
                        problems.append(f"status {response.status_code}: {response.text[:200]}")
                    elif expected is not None and response.json()["choices"][0]["text"] != expected[i % len(bodies)]:
                        problems.append(f"prompt {body['prompt']!r}: {response.json()['choices'][0]['text']!r}")

            # every client's connection is open before the clock starts: a burst of connects is not the load
            await asyncio.gather(*(http.get("/health") for _ in range(clients)))
            await asyncio.sleep(max(0.0, start_at - time.time()))
            await asyncio.gather(*(one_client() for _ in range(clients)))
        return latencies, problems

    return asyncio.run(run())


def measure(
    url: str, bodies: list[dict], expected: list[str] | None, concurrency: int, requests: int, processes: int
) -> dict:
    processes = min(processes, concurrency)
    shares = [concurrency // processes + (p < concurrency % processes) for p in range(processes)]
    counts = [requests * share // concurrency for share in shares]
    counts[0] += requests - sum(counts)
    start_at = time.time() + 3.0  # every client process is up and connected before the clock starts
    health: list[float] = []
    done = threading.Event()
    prober = threading.Thread(target=probe_health, args=(url, start_at, done, health))
    prober.start()
    with ProcessPoolExecutor(processes) as pool:
        futures = [
            pool.submit(client_process, url, bodies, expected, share, count, start_at)
            for share, count in zip(shares, counts, strict=True)
        ]
        results = [f.result() for f in futures]
    elapsed = time.time() - start_at
    done.set()
    prober.join()
    latencies = np.array([v for lat, _ in results for v in lat])
    problems = [p for _, found in results for p in found]
    if problems:
        raise SystemExit(f"{len(problems)} wrong or failed answers at concurrency {concurrency}; first: {problems[0]}")
    return {
        "concurrency": concurrency,
        "requests": int(latencies.size),
        "requests_per_s": latencies.size / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "health_p50_ms": float(np.percentile(health, 50) * 1000) if health else None,
        "health_max_ms": float(max(health) * 1000) if health else None,
    }


def probe_health(url: str, start_at: float, done: threading.Event, waits: list[float]) -> None:
    """GET /health every 50 ms while the load runs: each answer's wait (s), in `waits`."""
    time.sleep(max(0.0, start_at - time.time()))
    while not done.wait(0.05):
        began = time.perf_counter()
        urllib.request.urlopen(url + "/health", timeout=REQUEST_TIMEOUT_S).read()
        waits.append(time.perf_counter() - began)


def prompts_and_answers(args: argparse.Namespace) -> tuple[str, str, list[str], list[str]]:
    """(device, model name, prompts, the engine's own greedy continuation of each)."""
    from pxgl.engine import Engine
    from pxgl.loading import open_model
    from pxgl.serve.server import model_name

    runnable = open_model(args.model, args.executor)
    tokenizer = runnable.model.tokenizer
    rng = np.random.default_rng(args.seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    prompts = ["".join(rng.choice(letters, int(rng.integers(8, 60)))).strip() or "pixels" for _ in range(PROMPTS)]
    with Engine(runnable) as engine:
        generation = engine.generate([tokenizer.encode(p) for p in prompts], args.max_tokens)
        device = engine.gpu.renderer
    return device, model_name(runnable), prompts, [tokenizer.decode(row) for row in generation.tokens]


def markdown(results: dict) -> str:
    lines = [
        f"# pxgl serve under load: {results['device']}, {results['date']}",
        "",
        f"Model `{results['model']}`, executor `{results['executor']}`, greedy completions of `max_tokens` "
        f"{results['max_tokens']}, {PROMPTS} distinct prompts, {results['client_processes']} client process(es) "
        f"on {results['host']}; the batched server's `--max-batch` {results.get('batched_max_batch', 256)}, "
        f"`--batch-wait-ms` {'its default' if results.get('batch_wait_ms') is None else results['batch_wait_ms']}. "
        "Every GPU answer checked against "
        "the engine's own generation.",
        "",
        "| server | clients | requests | requests/s | p50 ms | p99 ms | /health p50 ms | /health max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, rows in results["modes"].items():
        for row in rows:
            health = [row.get(k) for k in ("health_p50_ms", "health_max_ms")]
            shown = " | ".join("-" if v is None else f"{v:.1f}" for v in health)
            lines.append(
                f"| {mode} | {row['concurrency']} | {row['requests']} | {row['requests_per_s']:.1f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {shown} |"
            )
    lines += ["", "| clients | batched / unbatched | batched / ceiling |", "| ---: | ---: | ---: |"]
    modes = results["modes"]
    for i, row in enumerate(modes.get("batched", [])):
        unbatched = modes.get("unbatched", [None] * (i + 1))[i]
        ceiling = modes.get("ceiling", [None] * (i + 1))[i]
        speedup = f"{row['requests_per_s'] / unbatched['requests_per_s']:.2f}x" if unbatched else "-"
        share = f"{row['requests_per_s'] / ceiling['requests_per_s']:.0%}" if ceiling else "-"
        lines.append(f"| {row['concurrency']} | {speedup} | {share} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = arguments()
    if args.ceiling_server:
        run_ceiling_server(args.model, args.max_tokens)
        return
    from pxgl.outputs import atomic_write

    from bench.report import write_json
    from bench.run import host_name, slug

    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    device, name, prompts, expected = prompts_and_answers(args)
    date = datetime.date.today().isoformat()
    print(f"pxgl serve bench on {device}, {date}: {name}, clients {levels}, {args.requests} requests each", flush=True)
    bodies = [{"model": name, "prompt": p, "max_tokens": args.max_tokens, "temperature": 0} for p in prompts]
    results: dict = {
        "device": device,
        "date": date,
        "host": host_name(),
        "model": name,
        "executor": args.executor or "auto",
        "max_tokens": args.max_tokens,
        "client_processes": args.client_processes,
        "batched_max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "modes": {},
    }
    for mode in modes:
        url, process = start_server(mode, args)
        try:
            rows = []
            for clients in levels:
                checked = None if mode == "ceiling" else expected
                row = measure(url, bodies, checked, clients, max(args.requests, clients), args.client_processes)
                print(
                    f"{mode:>9} C={clients:<4} {row['requests_per_s']:9.1f} req/s  p50 {row['p50_ms']:8.1f} ms"
                    f"  p99 {row['p99_ms']:8.1f} ms  /health max {row['health_max_ms'] or 0:8.1f} ms",
                    flush=True,
                )
                rows.append(row)
            results["modes"][mode] = rows
        finally:
            stop_server(process)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"serve-{slug(device)}-{date}"
    write_json(stem.with_suffix(".json"), results)
    text = markdown(results)
    atomic_write(stem.with_suffix(".md"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(text)
    print(f"→ {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
