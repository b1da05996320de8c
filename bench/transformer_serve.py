"""Version 2 under `pxgl serve`'s continuous batching (engine/serve/batching.py), without HTTP: N requests of a
random member's greedy tokens run one after another through one KV-cache slot, then all at once through N
slots (one batched decode step for all), and the time to the first token of a request arriving while another
generates. Prints one JSON object.

    python -m bench.transformer_serve --shape tiny --executor passes --requests 8 --prompt 16 --tokens 32
"""

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from pxgl.generation import Sampling
from pxgl.loading import Runnable
from pxgl.serve.batching import Scheduler, build_resident
from pxgl.serve.worker import GenerateJob
from pxgl.transformer import TransformerArchitecture, lay_out, random_values
from pxgl.transformer.model import TransformerModel

from bench.transformer_passes import SHAPES


class Arrivals:
    """A request's sink: when each step arrived."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, item: object) -> None:
        self.times.append(time.perf_counter())


def job(prompt: list[int], tokens: int) -> GenerateJob:
    return GenerateJob(Arrivals(), rows=[prompt], max_tokens=tokens, sampling=Sampling(), top_logprobs=0)  # type: ignore[arg-type]


def run(scheduler: Scheduler, jobs: list[GenerateJob], on_step: Callable[[], None] = lambda: None) -> float:
    """Seconds until every job is done, admitting each as a slot frees (arrival order)."""
    waiting = list(jobs)
    began = time.perf_counter()
    while waiting or scheduler.running:
        while waiting and scheduler.fits(waiting[0]):
            scheduler.admit(waiting.pop(0))
        scheduler.step()
        on_step()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--quant", choices=("q8", "q4", "u8", "f16"), default="q8")
    parser.add_argument("--executor", choices=("passes", "fused"), default="passes")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    architecture = TransformerArchitecture(**SHAPES[args.shape])
    rng = np.random.default_rng(args.seed)
    spec, weight_bytes = lay_out(architecture, random_values(architecture, rng, head_gain=4.0), args.quant)
    model = TransformerModel(spec, np.frombuffer(weight_bytes, np.uint8), "bench member")
    resident = build_resident(Runnable(model, args.executor), None, args.requests)
    prompts = [rng.integers(0, architecture.vocab_size, args.prompt).tolist() for _ in range(args.requests)]
    result: dict[str, object] = {
        "shape": args.shape,
        "quant": args.quant,
        "executor": args.executor,
        "renderer": resident.engines.main.gpu.renderer,
    }
    try:
        done: list[GenerateJob] = []
        for slots in (1, args.requests):
            scheduler = Scheduler(resident.executor, slots, architecture.context_length, done.append)
            run(scheduler, [job(prompts[0], 2)])  # warm: every program compiled, buffers allocated
            seconds = run(scheduler, [job(p, args.tokens) for p in prompts])
            result[f"slots_{slots}"] = {
                "seconds": round(seconds, 3),
                "tokens_per_s": round(args.requests * args.tokens / seconds, 1),
            }
        scheduler = Scheduler(resident.executor, 2, architecture.context_length, done.append)
        late = job(prompts[1], 1)
        running = job(prompts[0], args.tokens)

        def arrive_at_step_4() -> None:
            if len(running.sink.times) == 4 and not late.sink.times:  # type: ignore[attr-defined]
                sent = time.perf_counter()
                scheduler.admit(late)
                result["first_token_while_another_runs_s"] = round(late.sink.times[0] - sent, 4)  # type: ignore[attr-defined]

        run(scheduler, [running], arrive_at_step_4)
    finally:
        resident.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
