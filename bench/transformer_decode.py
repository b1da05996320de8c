"""Version 2 on the GPU: batched decode of the shared executor API (engine/transformer/gpu/base.py) — tokens a
second for 1, 4, 16 … slots decoded together, greedy and sampled (temperature 0.8, top-k 40, top-p 0.9, with
a repetition penalty), the choosing's share measured against greedy. Prints one JSON object.

    python -m bench.transformer_decode --shape gpt2-124m --slots 1 4 16 --tokens 16
"""

import argparse
import json
import time

import numpy as np
from pxgl.gl import GLBackend
from pxgl.transformer import TransformerArchitecture, lay_out, random_values
from pxgl.transformer.gpu import Choice, PassesTransformer

from bench.transformer_passes import SHAPES

CHOICES = {
    "greedy": Choice(),
    "sampled": Choice(temperature=0.8, top_k=40, top_p=0.9, seed=1),
    "penalized": Choice(temperature=0.8, top_k=40, top_p=0.9, seed=1, repetition_penalty=1.3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--quant", choices=("q8", "q4", "u8", "f16"), default="q8")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    architecture = TransformerArchitecture(**SHAPES[args.shape])
    rng = np.random.default_rng(args.seed)
    spec, weight_bytes = lay_out(architecture, random_values(architecture, rng, head_gain=4.0), args.quant)
    gpu = GLBackend()
    runs = []
    for slots in args.slots:
        model = PassesTransformer(gpu, spec, weight_bytes, slots=slots)
        for name, choice in CHOICES.items():
            for _ in range(2):  # the first allocates the activations and compiles the choosing kernels
                for slot in range(slots):
                    model.truncate(slot, 0)
                    model.prefill(slot, rng.integers(0, architecture.vocab_size, args.prompt), choice=choice)
                gpu.wait_for_gpu()
                began = time.perf_counter()
                model.decode(list(range(slots)), [choice] * slots, [1] * slots, args.tokens)
                seconds = time.perf_counter() - began
            runs.append({"slots": slots, "choice": name, "s_per_step": round(seconds / args.tokens, 4),
                         "tokens_per_s": round(slots * args.tokens / seconds, 2)})  # fmt: skip
        cache_bytes = model.cache_bytes
        model.close()
    print(json.dumps({"renderer": gpu.renderer, "shape": args.shape, "quant": args.quant, "runs": runs,
                      "kv_cache_bytes_last": cache_bytes}))  # fmt: skip


if __name__ == "__main__":
    main()
