"""The error q8 adds on its own (issue 28's q8 bound): each shrunk family of tests/test_hf_import.py, built the same
way, run by `transformers` twice — with its float32 weights, and with every matrix quantized to llama.cpp's Q8_0
and back by llama.cpp's own `gguf.quants` (the bytes pxgl's q8 keeps, FORMATS §14.3) — and the logits compared as
the test compares pxgl's. No pxgl code runs: what this measures is the floor any Q8_0 executor sits on for these
random weights, pxgl's GPU executors or llama.cpp alike.

    python -m bench.q8_floor [--seed N] [--windows 4] [--out bench/results/q8-floor-<date>.md]
"""

import argparse
import copy
import datetime
import secrets
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, quants

from tests.hf_models import CONTEXT, FAMILIES, build

Q8_0 = GGMLQuantizationType.Q8_0


def q8_copy(model, family: str):
    """The model with every matrix (embeddings and head too) through Q8_0 blocks along its reduction dimension."""
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in quantized.named_parameters():
            if parameter.ndim != 2:
                continue
            conv1d = family == "gpt2" and not name.endswith(("wte.weight", "wpe.weight", "lm_head.weight"))
            rows = parameter.detach().numpy()
            rows = np.ascontiguousarray(rows.T if conv1d else rows)  # GPT-2's Conv1D is [in, out]
            back = quants.dequantize(quants.quantize(rows, Q8_0), Q8_0)
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(back.T if conv1d else back)))
    return quantized


def measure(family: str, rng: np.random.Generator, windows: int) -> dict:
    model = build(family, rng)
    quantized = q8_copy(model, family)
    squared = reference = 0.0
    equal = positions = 0
    for _ in range(windows):
        window = torch.from_numpy(rng.integers(0, model.config.vocab_size, (1, CONTEXT)))
        with torch.no_grad():
            exact, q8 = model(window).logits[0].double(), quantized(window).logits[0].double()
        squared += float(((exact - q8) ** 2).sum())
        reference += float((exact**2).sum())
        equal += int((exact.argmax(1) == q8.argmax(1)).sum())
        positions += CONTEXT
    return {"family": family, "positions": positions, "rms": (squared / reference) ** 0.5, "top1": equal / positions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    rng = np.random.default_rng(seed)
    today = datetime.date.today().isoformat()
    lines = [
        "# The error Q8_0 adds on its own: transformers with llama.cpp's Q8_0 weights against its float32 weights",
        "",
        "| family | positions | RMS Δ / RMS logits | top-1 equal |",
        "| --- | --- | --- | --- |",
    ]
    for family in ("gpt2", "smollm2", "qwen2", "tinyllama"):
        result = measure(family, rng, args.windows)
        lines.append(f"| {family} | {result['positions']} | {result['rms']:.2%} | {result['top1']:.2%} |")
        print(lines[-1], flush=True)
    lines += ["", f"tests/hf_models.py's shrunk families ({', '.join(FAMILIES)}), seed {seed}, CPU torch, {today}"]
    out = args.out or Path(f"bench/results/q8-floor-{today}.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
