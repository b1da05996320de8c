"""Greedy generation throughput (docs/FORMATS.md §11): pxgl's generating executors against a PyTorch token
loop on the same GPU — eager, `torch.compile` and the whole loop captured as one CUDA graph — for 1 stream x
256 tokens and 1,024 and 65,536 streams x 64 tokens (prompts of 16 random tokens). Every system's tokens are
checked before its time counts: at each step of a sample of rows, the oracle's logits for the row's own
context must put the chosen token within the system's tolerance of the top logit (teacher-forced, so a
near-tie decided differently does not fail the rest of the row).

    python -m bench.generation [--model W.pxi] [--sizes 1x256,1024x64,65536x64] [--out DIR]"""

import argparse
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.gl import GLBackend
from pxgl.loading import load_model

from bench.peers import torch_logits
from bench.report import si
from bench.run import slug
from tests.models import params_of
from tests.reference import oracle

ROOT = Path(__file__).resolve().parent.parent
PROMPT_TOKENS = 16
SIZES = ((1, 256), (1024, 64), (65536, 64))
CHECK_ROWS = 8
BUDGET_S = 2.0
MAX_RUNS = 50

Generate = Callable[[np.ndarray, int], np.ndarray]
"""(B, PROMPT_TOKENS) ids, steps → (B, steps) generated ids, in host memory."""


@dataclass
class Generator:
    name: str
    tolerance: float
    """How far below the oracle's top logit a chosen token's logit may be (relative to max |logit|)."""
    generate: Generate
    notes: str


def pxgl_generators(model_path: Path, gpu: GLBackend) -> list[Generator]:
    model = load_model(model_path)
    found = []
    for executor in ("fused", "passes"):
        try:
            engine = Engine(model, gpu=gpu, executor=executor)
        except PxglError as e:
            print(f"pxgl-{executor}: skipped, {e}")
            continue

        def generate(ids: np.ndarray, steps: int, engine: Engine = engine) -> np.ndarray:
            return engine.generate(ids, steps).tokens

        found.append(Generator(f"pxgl-{executor}", 1e-5, generate, f"Engine(executor={executor!r}).generate"))
    return found


def torch_generators(params: dict) -> list[Generator]:
    try:
        import torch
    except ImportError:
        print("pytorch: skipped, torch is not installed")
        return []
    if not torch.cuda.is_available():
        print("pytorch: skipped, no CUDA device")
        return []
    logits = torch_logits(torch, params, torch.device("cuda"))
    window = oracle.architecture(params["meta"])[0]["window"]
    where = torch.cuda.get_device_name(0)

    def step(sequence: "torch.Tensor", position: int) -> None:
        sequence[:, position] = logits(sequence[:, max(0, position - window) : position]).argmax(dim=1)

    def loop(step_fn: Callable) -> Generate:
        def generate(ids: np.ndarray, steps: int) -> np.ndarray:
            with torch.inference_mode():
                sequence = torch.zeros((len(ids), PROMPT_TOKENS + steps), dtype=torch.int64, device="cuda")
                sequence[:, :PROMPT_TOKENS] = torch.from_numpy(ids.astype(np.int64)).cuda()
                for s in range(steps):
                    step_fn(sequence, PROMPT_TOKENS + s)
                return sequence[:, PROMPT_TOKENS:].cpu().numpy()

        return generate

    compiled_logits = torch.compile(logits, dynamic=False)

    def compiled_step(sequence: "torch.Tensor", position: int) -> None:
        window_ids = sequence[:, position - window : position]  # a fixed shape: one compiled graph a size
        sequence[:, position] = compiled_logits(window_ids).argmax(dim=1)

    graphs: dict[tuple[int, int], tuple] = {}

    def graph_generate(ids: np.ndarray, steps: int) -> np.ndarray:
        """The whole loop (upload, every step, download) captured once per shape and replayed."""
        key = (len(ids), steps)
        if key not in graphs:
            host_ids = torch.zeros((len(ids), PROMPT_TOKENS), dtype=torch.int64).pin_memory()
            host_out = torch.zeros((len(ids), steps), dtype=torch.int64).pin_memory()
            sequence = torch.zeros((len(ids), PROMPT_TOKENS + steps), dtype=torch.int64, device="cuda")
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(side):
                for s in range(steps):  # warm-up outside the capture
                    step(sequence, PROMPT_TOKENS + s)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                sequence[:, :PROMPT_TOKENS].copy_(host_ids, non_blocking=True)
                for s in range(steps):
                    step(sequence, PROMPT_TOKENS + s)
                host_out.copy_(sequence[:, PROMPT_TOKENS:], non_blocking=True)
            graphs[key] = (graph, host_ids.numpy(), host_out.numpy())
        graph, ids_view, out_view = graphs[key]
        ids_view[:] = ids
        graph.replay()
        torch.cuda.current_stream().synchronize()
        return out_view.copy()

    torch.backends.cuda.matmul.allow_tf32 = False
    version = torch.__version__
    return [
        Generator("pytorch-eager", 1e-5, loop(step), f"torch {version} eager token loop on {where}, float32"),
        Generator(
            "pytorch-compile",
            1e-5,
            loop(compiled_step),
            f"torch {version} torch.compile (inductor) step in a Python loop on {where}, float32",
        ),
        Generator(
            "pytorch-cuda-graph",
            1e-5,
            graph_generate,
            f"torch {version}: the whole loop as one CUDA graph on {where}, float32",
        ),
    ]


def check(params: dict, ids: np.ndarray, tokens: np.ndarray, tolerance: float, what: str) -> None:
    """Teacher-forced: at every step of the first CHECK_ROWS rows, the chosen token's oracle logit is within
    tolerance of the top one."""
    rows = min(CHECK_ROWS, len(ids))
    for s in range(tokens.shape[1]):
        contexts = [list(ids[r]) + list(tokens[r, :s]) for r in range(rows)]
        lg = oracle.logits(params, contexts)
        chosen = lg[np.arange(rows), tokens[:rows, s]]
        gap = lg.max(axis=1) - chosen
        bad = np.flatnonzero(gap > tolerance * np.abs(lg).max(axis=1) + 1e-6)
        if bad.size:
            r = int(bad[0])
            raise AssertionError(f"{what}: row {r}, step {s}: token {tokens[r, s]} is {gap[r]:.3g} below the top")


def measure(generator: Generator, params: dict, ids: np.ndarray, steps: int) -> dict:
    tokens = generator.generate(ids, steps)  # warm-up (compiles, captures)
    check(params, ids, tokens, generator.tolerance, f"{generator.name}, {len(ids)}x{steps}")
    times = []
    while len(times) < 3 or (sum(times) < BUDGET_S and len(times) < MAX_RUNS):
        start = time.perf_counter()
        generator.generate(ids, steps)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"tokens_per_s": len(ids) * steps / median, "median_s": median, "runs": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", help="weights .pxi (default: the bundled ones)")
    parser.add_argument("--sizes", help="streams x tokens, comma-separated (default 1x256,1024x64,65536x64)")
    parser.add_argument("--systems", help="comma-separated system names to run (default: every one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")] if args.sizes else list(SIZES)
    models = args.model or [ROOT / "assets" / f"{name}.pxi" for name in ("pixellm_v0", "pixellm_v1")]
    gpu = GLBackend()
    date = datetime.date.today().isoformat()
    for model_path in models:
        model = load_model(model_path)
        params = params_of(model)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, model.spec.vocab_size, (max(b for b, _ in sizes), PROMPT_TOKENS)).astype(np.int64)
        results: dict = {"device": gpu.renderer, "date": date, "model": model_path.stem, "systems": {}}
        print(f"== generation, {model_path.stem} on {gpu.renderer}", flush=True)
        wanted = set(args.systems.split(",")) if args.systems else None
        for generator in pxgl_generators(model_path, gpu) + torch_generators(params):
            if wanted is not None and generator.name not in wanted:
                continue
            entry: dict = {"notes": generator.notes, "sizes": {}}
            for streams, steps in sizes:
                key = f"{streams}x{steps}"
                try:
                    entry["sizes"][key] = measure(generator, params, ids[:streams], steps)
                except (AssertionError, PxglError, RuntimeError) as e:
                    entry["sizes"][key] = {"skipped": str(e).splitlines()[0]}
                    print(f"  {generator.name:20} {key:>9}: skipped, {str(e).splitlines()[0]}", flush=True)
                    continue
                rate = si(entry["sizes"][key]["tokens_per_s"])
                print(f"  {generator.name:20} {key:>9}: {rate:>7} tokens/s", flush=True)
            results["systems"][generator.name] = entry
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"{slug(gpu.renderer)}-generation-{model_path.stem}-{date}"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {stem}.json", flush=True)


if __name__ == "__main__":
    main()
