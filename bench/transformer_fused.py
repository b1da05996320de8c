"""Version 2 on the GPU: the fused executor's load, prefill and greedy decode times on a random member of a
named shape (bench/transformer_passes.py's shapes), its greedy tokens checked against the engine's numpy
executor unless --no-check. Prints one JSON object.

    python -m bench.transformer_fused --shape gpt2-124m --quant q8 --prompt 16 --tokens 8
"""

import argparse
import json
import time

import numpy as np
from pxgl.gl import GLBackend
from pxgl.transformer import NumpyTransformer, TransformerArchitecture, lay_out, random_values
from pxgl.transformer.fused import FusedTransformer

from bench.transformer_passes import SHAPES
from tests.reference import transformer as oracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--quant", choices=("q8", "q4", "u8", "f16"), default="q8")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="skip the numpy replay (large shapes are slow)")
    args = parser.parse_args()
    architecture = TransformerArchitecture(**SHAPES[args.shape])
    rng = np.random.default_rng(args.seed)
    spec, weight_bytes = lay_out(architecture, random_values(architecture, rng, head_gain=4.0), args.quant)
    prompt = rng.integers(0, architecture.vocab_size, args.prompt)
    gpu = GLBackend()
    began = time.perf_counter()
    model = FusedTransformer(gpu, spec, weight_bytes)
    gpu.wait_for_gpu()
    loaded = time.perf_counter()
    model.run(prompt, all_logits=False)  # warm: the first run allocates the scratch buffers
    model.reset()
    began_prefill = time.perf_counter()
    model.run(prompt, all_logits=False)
    prefill = time.perf_counter() - began_prefill
    model.reset()
    began_generate = time.perf_counter()
    generated = model.generate(prompt, args.tokens)
    generate = time.perf_counter() - began_generate
    model.close()
    result = {
        "renderer": gpu.renderer,
        "shape": args.shape,
        "quant": args.quant,
        "weight_bytes": len(weight_bytes),
        "load_s": round(loaded - began, 3),
        "prefill_s": round(prefill, 4),
        "prefill_tokens_per_s": round(args.prompt / prefill, 2),
        "decode_s_per_token": round((generate - prefill) / max(1, args.tokens - 1), 4),
        "generate_s": round(generate, 3),
        "generated": generated.tolist(),
    }
    if not args.no_check:
        sequence = np.concatenate([prompt, generated])
        logits = NumpyTransformer(spec, weight_bytes).run(sequence[:-1])[len(prompt) - 1 :]
        ties = oracle.near_tie(logits)
        result["near_ties"] = int(ties.sum())
        result["greedy_equal"] = bool(((generated == logits.argmax(axis=1)) | ties).all())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
