"""One prompt at a time: the resident kernel (engine/executors/fused_resident.py) against a dispatch per
prompt, for each bundled model and each resident split that fits; every variant checked against the
oracle before it is timed. Also how long an idle resident kernel stays before it leaves by itself.

    python -m bench.variants.resident [--calls 5000] [--splits 1,2,4,8,16,32]"""

import argparse
import time

import numpy as np
from pxgl.engine import Engine
from pxgl.executors.fused_config import FusedConfig
from pxgl.executors.fused_resident import MAILBOX, resident_shape
from pxgl.gl import GLBackend
from pxgl.loading import load_model

from bench.peers import FP32
from bench.reference import Reference
from bench.run import PROMPT_TOKENS, bundled
from bench.timing import time_calls
from tests.models import params_of


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000, help="timed prompts per variant")
    parser.add_argument("--splits", default="0,1,2,4,8,16,32", help="resident work groups to try (0: automatic)")
    args = parser.parse_args()
    gpu = GLBackend()
    print(f"resident variants on {gpu.renderer} ({gpu.version}); subgroup size {gpu.limits.subgroup_size}")
    rng = np.random.default_rng(1)
    for path in bundled():
        model = load_model(path)
        spec = model.spec
        prompts = rng.integers(0, spec.vocab_size, (args.calls, PROMPT_TOKENS))
        reference = Reference(params_of(model), spec.context_window, prompts)
        rows = [p[-spec.context_window :].tolist() for p in prompts]
        print(f"\n## {path.name} ({spec.architecture.describe()}): one prompt, median / p99 of {args.calls:,}")
        variants = [("dispatch per prompt", FusedConfig(resident=False))]
        variants += [
            (f"resident, split {s or 'auto'}", FusedConfig(resident_split=int(s))) for s in args.splits.split(",")
        ]
        for name, config in variants:
            with Engine(model, gpu=gpu, executor="fused", tuning=config) as engine:
                executor = engine.executor
                if config.resident and resident_shape(executor) is None:
                    print(f"{name:28} does not fit (output weights past the registers, or shared memory)")
                    continue
                result, outputs = time_calls(engine.predict_one, rows, warmup=500)
                reference.check(np.stack(outputs)[:, None, :], slice(0, len(rows)), FP32)
                line = f"{name:28} {result.median_us:7.1f} µs  p99 {result.p99_us:7.1f} µs"
                resident = executor.resident
                if resident is not None:
                    shape = resident_shape(executor)
                    line += f"  ({shape[3]} group(s) of {shape[2]}, subgroups {shape[1].int('SUBGROUP_SIZE')}, "
                    line += f"{resident.launches} launch(es))"
                    start = time.perf_counter()
                    while resident.words[MAILBOX.exited] != resident.epoch and time.perf_counter() - start < 30:
                        pass
                    line += f"; left by itself {time.perf_counter() - start:.3f} s after the last prompt"
                print(line, flush=True)


if __name__ == "__main__":
    main()
