"""Version 2 on the GPU: the passes (or pxvm) executor's load, prefill and greedy decode times on a random
member of a named shape, its greedy tokens checked against the engine's numpy executor (each the argmax of the numpy
logits over the generated sequence, or a near-tie). Each timing is the best of --repeat runs, with their
spread; prefill and decode as tokens/s, and as the GFLOP/s of their projections and the GB/s of weights a
decode step streams (every projected matrix once: on a shared CPU, the process's CPU seconds too). Prints one
JSON object.

    python -m bench.transformer_passes --shape gpt2-124m --quant q8 --prompt 16 --tokens 8 [--executor pxvm]
"""

import argparse
import json
import resource
import time
from collections.abc import Callable

import numpy as np
from pxgl.gl import GLBackend
from pxgl.transformer import NumpyTransformer, TransformerArchitecture, lay_out, random_values
from pxgl.transformer.fused import FusedTransformer
from pxgl.transformer.gpu import PassesTransformer
from pxgl.transformer.meta import Rope
from pxgl.transformer.operations import operations
from pxgl.transformer.pxvm import PxvmTransformer

from tests.reference import transformer as oracle

GPT2 = {"norm_kind": "layernorm", "norm_eps": 1e-5, "rope": None, "tied_head": True, "mlp_kind": "gelu_tanh"}
GPT2 |= {"biases": frozenset({"qkv", "attn_out", "mlp"})}
SHAPES = {
    "tiny": GPT2
    | {"vocab_size": 1000, "context_length": 256, "width": 128, "layers": 2, "heads": 4, "kv_heads": 4}
    | {"head_dim": 32, "attention_scale": 32**-0.5, "mlp_width": 512},
    "gpt2-124m": GPT2
    | {"vocab_size": 50257, "context_length": 1024, "width": 768, "layers": 12, "heads": 12, "kv_heads": 12}
    | {"head_dim": 64, "attention_scale": 0.125, "mlp_width": 3072},
    "llama-small": {"norm_kind": "rmsnorm", "norm_eps": 1e-5, "rope": Rope(10000.0, "halves"), "tied_head": False}
    | {"mlp_kind": "silu_gated", "biases": frozenset(), "vocab_size": 32000, "context_length": 2048, "width": 1024}
    | {"layers": 8, "heads": 16, "kv_heads": 4, "head_dim": 64, "attention_scale": 0.125, "mlp_width": 2816},
}
EXECUTORS = {"passes": PassesTransformer, "pxvm": PxvmTransformer, "fused": FusedTransformer}


def cpu_seconds() -> float:
    """CPU time of every thread of this process (llvmpipe's workers included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(best wall seconds, worst, CPU seconds of the best) over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), cpu_seconds()
        run()
        runs.append((time.perf_counter() - began, cpu_seconds() - began_cpu))
    best = min(runs)
    return best[0], max(runs)[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--quant", choices=("q8", "q4", "u8", "f16"), default="q8")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", choices=EXECUTORS, default="passes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-check", action="store_true", help="skip the numpy replay (large shapes are slow)")
    args = parser.parse_args()
    architecture = TransformerArchitecture(**SHAPES[args.shape])
    rng = np.random.default_rng(args.seed)
    spec, weight_bytes = lay_out(architecture, random_values(architecture, rng, head_gain=4.0), args.quant)
    prompt = rng.integers(0, architecture.vocab_size, args.prompt)
    gpu = GLBackend()
    began = time.perf_counter()
    model = EXECUTORS[args.executor](gpu, spec, weight_bytes)
    gpu.wait_for_gpu()
    loaded = time.perf_counter()

    def prefill() -> None:
        model.reset()
        model.run(prompt, all_logits=False)
        gpu.wait_for_gpu()

    def generate() -> None:
        model.reset()
        model.generate(prompt, args.tokens)

    prefill()  # warm: the first runs compile (llvmpipe: at the first dispatch) and allocate
    generate()
    prefill_s, prefill_worst, prefill_cpu = timed(prefill, args.repeat)
    generate_s, generate_worst, generate_cpu = timed(generate, args.repeat)
    model.reset()
    generated = model.generate(prompt, args.tokens)
    model.close()
    steps = max(1, args.tokens - 1)  # the first token comes with the prefill, the last is chosen, not run
    decode_s, decode_cpu = (generate_s - prefill_s) / steps, (generate_cpu - prefill_cpu) / steps
    projected = [op.tensors[0] for op in operations(architecture) if op.kind in ("project", "logits")]
    matrix_bytes = sum(spec.tensors[name].nbytes for name in projected)
    layer_flops = 2 * sum(spec.tensors[name].shape[0] * spec.tensors[name].shape[1] for name in projected[:-1])
    head_flops = 2 * architecture.vocab_size * architecture.width
    prefill_flops = args.prompt * layer_flops + head_flops
    result = {
        "renderer": gpu.renderer,
        "executor": args.executor,
        "shape": args.shape,
        "quant": args.quant,
        "weight_bytes": len(weight_bytes),
        "projected_bytes": matrix_bytes,
        "kv_cache_bytes": model.cache_bytes,
        "load_s": round(loaded - began, 3),
        "repeat": args.repeat,
        "prefill_s": round(prefill_s, 4),
        "prefill_worst_s": round(prefill_worst, 4),
        "prefill_cpu_s": round(prefill_cpu, 4),
        "prefill_tokens_per_s": round(args.prompt / prefill_s, 2),
        "prefill_gflops": round(prefill_flops / prefill_s / 1e9, 2),
        "generate_s": round(generate_s, 4),
        "generate_worst_s": round(generate_worst, 4),
        "decode_s_per_token": round(decode_s, 5),
        "decode_cpu_s_per_token": round(decode_cpu, 5),
        "decode_tokens_per_s": round(1 / decode_s, 2) if decode_s > 0 else None,
        "decode_gb_per_s": round(matrix_bytes / decode_s / 1e9, 2) if decode_s > 0 else None,
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
