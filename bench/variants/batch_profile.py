"""Where a big batch's time goes outside the kernel: cProfile of the fused executor's run_ids on the
bench's largest batch (host work: poisoning, uploads, the wait, copying the predictions out), next to
the kernel alone.

    python -m bench.variants.batch_profile [--batch 1048576]"""

import argparse
import cProfile
import pstats
import time

import numpy as np
from pxgl.executors.fused import FusedExecutor
from pxgl.executors.protocol import ExecutorInputs
from pxgl.gl import GLBackend
from pxgl.loading import load_model

from bench.run import PROMPT_TOKENS, bundled
from bench.sweep import gpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1 << 20)
    args = parser.parse_args()
    gpu = GLBackend()
    model = load_model(bundled())
    executor = FusedExecutor(gpu, ExecutorInputs(model.spec, gpu.uint_texture(model.weights, "weights")))
    ids = np.random.default_rng(0).integers(0, model.spec.vocab_size, (args.batch, PROMPT_TOKENS)).astype(np.uint16)
    executor.run_ids(ids)
    start = time.perf_counter()
    executor.run_ids(ids)
    print(f"{executor.config}\nrun_ids, {args.batch:,} prompts: {(time.perf_counter() - start) * 1e3:.1f} ms")
    print(f"kernel alone: {gpu_seconds(executor, ids) * 1e3:.1f} ms")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(3):
        executor.run_ids(ids)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
