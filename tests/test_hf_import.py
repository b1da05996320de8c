"""`pxgl import` of Hugging Face folders and `pxgl export --format hf` (docs/FORMATS.md §10.2), checked against
`transformers` itself: shrunk GPT-2, SmolLM2, Qwen2 and TinyLlama configs at their real vocabulary sizes, random
weights saved with `save_pretrained` (float32, float16, bfloat16, sharded), imported, and teacher-forced through
the default GPU executor (passes, on llvmpipe here) against transformers' own logits of the same windows.

What runs where (CI budget): every family at f16 (of a float16 or bfloat16 folder) and q8 (of a float32 one)
over 7 windows of 288 positions (2,016 positions); q4 over one window of GPT-2 and TinyLlama. Bounds are
§10.2's: f16 max |Δ logit| ≤ 1e-2 and top-1 equal wherever transformers' top-two margin > 1e-2; q8 and q4 an
RMS Δ relative to the logits' RMS and a top-1 agreement, by family shape (measured there)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pxgl.hf.importer import import_folder, open_folder
from pxgl.transformer.gpu import PassesTransformer

from tests.hf_models import CONTEXT, VARIANTS, build, reference, save, torch

WINDOWS = 7
LOGIT_BYTES = 64 << 20
"""Logits one prefill holds at most (Qwen2's 151,936 ids: 64 rows), within llvmpipe's 128 MiB storage buffers."""
BOUNDS = {
    ("q8", "gpt2"): (0.012, 0.97),
    ("q8", "llama"): (0.035, 0.94),
    ("q4", "gpt2"): (0.2, 0.4),
    ("q4", "llama"): (0.5, 0.4),
}
"""(quant, family shape) → (RMS Δ / RMS logits at most, top-1 agreement at least), FORMATS §10.2's; f16's Δ is
bounded elementwise instead."""


@dataclass
class Agreement:
    """Running comparison of pxgl's logits with transformers' over many positions (torch's threads do the
    arithmetic: 151,936 logits a position)."""

    largest: float = 0.0
    largest_logit: float = 0.0
    squared: float = 0.0
    reference_squared: float = 0.0
    positions: int = 0
    equal: int = 0
    clear: int = 0
    clear_equal: int = 0

    def add(self, ours: np.ndarray, theirs) -> None:
        """`theirs`: transformers' logits of the same positions, a torch tensor."""
        ours = torch.from_numpy(ours)
        delta = ours - theirs
        self.squared += float(torch.linalg.vector_norm(delta, dtype=torch.float64)) ** 2
        self.reference_squared += float(torch.linalg.vector_norm(theirs, dtype=torch.float64)) ** 2
        self.largest = max(self.largest, float(delta.abs_().max()))
        self.largest_logit = max(self.largest_logit, float(theirs.max()), -float(theirs.min()))
        top2, top = theirs.topk(2, dim=1)
        clear = top2[:, 0] - top2[:, 1] > 1e-2
        same = ours.argmax(dim=1) == top[:, 0]
        self.positions += len(ours)
        self.equal += int(same.sum())
        self.clear += int(clear.sum())
        self.clear_equal += int((same & clear).sum())

    @property
    def relative_rms(self) -> float:
        return float(np.sqrt(self.squared / self.reference_squared))

    def check(self, quant: str, shape: str) -> None:
        summary = (
            f"{quant}: {self.positions} positions, logits up to {self.largest_logit:.3g}, max |Δ| {self.largest:.3g}, "
            f"RMS Δ {self.relative_rms:.3%} of the logits', top-1 equal {self.equal / self.positions:.2%} "
            f"({self.clear_equal}/{self.clear} where the margin > 1e-2)"
        )
        print(summary)
        if quant == "f16":
            assert self.largest <= 1e-2 and self.clear_equal == self.clear, summary
        else:
            rms_bound, agreement = BOUNDS[quant, shape]
            assert self.relative_rms <= rms_bound and self.equal >= agreement * self.positions, summary


def pxgl_logits(executor: PassesTransformer, window: np.ndarray) -> np.ndarray:
    """Every position's logits, prefilled in pieces whose logits stay within LOGIT_BYTES."""
    executor.truncate(0, 0)
    piece = 1 << (LOGIT_BYTES // (4 * executor.architecture.vocab_size)).bit_length() - 1
    pieces = [executor.prefill(0, window[s : s + piece], all_logits=True).logits for s in range(0, len(window), piece)]
    return np.concatenate(pieces)


def compare(gpu, folders: dict[str, Path], windows: int, rng: np.random.Generator, family: str) -> None:
    """Import each folder at its quantization (quant → folder) and run `windows` random windows of CONTEXT
    tokens through each and through transformers' model of that folder, within §10.2's bounds."""
    runs = {}

    def logits(model, window: np.ndarray):
        with torch.no_grad():
            return model(torch.from_numpy(window[None])).logits[0]

    try:
        for quant, folder in folders.items():
            imported = import_folder(open_folder(folder, quant), None)
            runs[quant] = (reference(folder), PassesTransformer(gpu, imported.spec, imported.stream), Agreement())
        for _ in range(windows):
            window = rng.integers(0, imported.spec.architecture.vocab_size, CONTEXT)
            for model, executor, agreement in runs.values():
                agreement.add(pxgl_logits(executor, window), logits(model, window))
    finally:
        for _, executor, _ in runs.values():
            executor.close()
    for quant, (_, _, agreement) in runs.items():
        agreement.check(quant, "gpt2" if family == "gpt2" else "llama")


CASES = {
    # family: (the f16 import's folder: dtype, max shard size), (the q8 import's folder: the same)
    "gpt2": (("float16", None), ("float32", None)),
    "smollm2": (("bfloat16", None), ("float32", "1MB")),
    "qwen2": (("float16", "4MB"), ("float32", "8MB")),
    "tinyllama": (("bfloat16", "1MB"), ("float32", None)),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_folder_imports_to_transformers_logits_at_f16_and_q8(family, gpu, rng, tmp_path):
    model = build(family, rng)
    folders = {}
    for quant, (dtype, shard) in zip(("q8", "f16"), CASES[family][::-1], strict=True):  # float32 first
        folders[quant] = save(model, tmp_path / quant, dtype, shard)
        assert shard is None or (folders[quant] / "model.safetensors.index.json").exists()
    compare(gpu, folders, WINDOWS, rng, family)


@pytest.mark.parametrize("family", ["gpt2", "tinyllama"])
def test_q4_keeps_its_stated_bounds(family, gpu, rng, tmp_path):
    compare(gpu, {"q4": save(build(family, rng), tmp_path / family)}, 1, rng, family)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_what_the_four_families_leave_out_imports_at_f16(variant, gpu, rng, tmp_path):
    """Exact GELU, an untied GPT-2 head, attention unscaled; Llama's attention and MLP biases and linear RoPE
    scaling; Mistral with a head_dim past width / heads — one window of a float16 folder at f16."""
    family, overrides = VARIANTS[variant]
    folder = save(build(family, rng, **overrides), tmp_path / variant, "float16")
    compare(gpu, {"f16": folder}, 1, rng, family)
