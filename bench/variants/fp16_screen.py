"""Could half precision screen the logits and leave float32 to the prompts it cannot settle? Issue 13's
"screen in fp16, check the few in fp32" direction, bounded before any kernel is written: no GPU, numpy only.

For random prompts of the bench (16 tokens) and each bundled model: the last hidden layer h in float32 (the
oracle), then for every logit the rigorous error bound of a screen that rounds h to float16, multiplies it
by the output weights (exact in float16: a dequantized weight is scale x an integer of at most 255 in
magnitude, FORMATS §2) and adds the products in float16 over runs of RUN terms, then in float32 across runs:
|error_k| <= (RUN + 1) u sum_j |h_j w_jk| with u = 2^-11 (the rounding of h, then recursive summation).
A prompt is settled by the screen when its prediction pixel is certain inside those bounds: the top logit's
lower bound clears every other logit's upper bound, and round(255 p) is the same at both ends of p's interval.
The others need the float32 pass, so the batch rate is at most 1 / (1 / floor16 + unsettled / floor32)
with both floors at 100% of the measured peaks.

    python -m bench.variants.fp16_screen [--prompts 20000] [--runs 2,8,32]"""

import argparse

import numpy as np
from pxgl.loading import load_model

from bench.run import PROMPT_TOKENS, bundled
from bench.variants.batch import FP32_TFLOPS_H200
from tests.models import params_of
from tests.reference import oracle

FP16_TFLOPS_H200 = 106.0
"""A GLSL f16vec2 FMA loop on the H200 (GL_NV_gpu_shader5, driver 580), TFLOP/s."""
UNIT = 2.0**-11


def last_hidden(params: dict, prompts: np.ndarray, window: int) -> np.ndarray:
    """h_L of each prompt: the oracle's forward pass with the output layer replaced by the identity."""
    width = params["out.weight"].shape[0]
    identity = params | {"out.weight": np.eye(width, dtype=np.float32), "out.bias": np.zeros(width, np.float32)}
    return oracle.logits(identity, list(prompts), window)


def settled(logits: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prompts whose id is certain, and whose id and confidence byte are, when each logit may be off by its
    bound."""
    rows = np.arange(len(logits))
    top = logits.argmax(axis=1)
    low, high = logits - bound, logits + bound
    top_low, top_high = low[rows, top], high[rows, top]
    others_high = high.copy()
    others_high[rows, top] = -np.inf
    id_certain = top_low > others_high.max(axis=1)
    low64, high64 = low.astype(np.float64), high.astype(np.float64)
    p_low = 1.0 / np.exp(high64 - top_low[:, None].astype(np.float64)).sum(axis=1)
    p_high = 1.0 / np.exp(low64 - top_high[:, None].astype(np.float64)).sum(axis=1)
    return id_certain, id_certain & (np.round(255 * p_low) == np.round(255 * p_high))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=20000)
    parser.add_argument("--runs", default="2,8,32", help="float16 products added in float16 before a float32 add")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for path in bundled():
        model = load_model(path)
        spec, params = model.spec, params_of(model)
        prompts = rng.integers(0, spec.vocab_size, (args.prompts, PROMPT_TOKENS))
        h = last_hidden(params, prompts, spec.context_window)
        logits = oracle.logits(params, list(prompts), spec.context_window)
        magnitude = np.abs(h) @ np.abs(params["out.weight"])  # sum_j |h_j w_jk|
        flops = 2.0 * spec.hidden[-1] * spec.vocab_size  # the logits alone: the screen's share of the work
        print(f"## {path.name} ({spec.architecture.describe()}), {args.prompts:,} random prompts")
        for run in (int(r) for r in args.runs.split(",")):
            id_certain, pixel_certain = settled(logits, (run + 1) * UNIT * magnitude)
            share = pixel_certain.mean()
            floor16, floor32 = FP16_TFLOPS_H200 * 1e12 / flops, FP32_TFLOPS_H200 * 1e12 / flops
            best = 1.0 / (1.0 / floor16 + (1.0 - share) / floor32)
            print(
                f"  runs of {run:>2}: id certain {id_certain.mean():6.1%}, the pixel {share:6.1%}; logits at "
                f"best {best / 1e6:5.1f} M prompts/s (float32 alone {floor32 / 1e6:5.1f} M/s, float16 alone "
                f"{floor16 / 1e6:5.1f} M/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
