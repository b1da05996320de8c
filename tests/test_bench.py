"""`make bench`'s harness at tiny sizes: it writes its JSON, markdown and PNG, measures every registered
executor, and its oracle check (bench/reference.py) really refuses wrong predictions."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl.executors import EXECUTORS
from pxgl.loading import load_model
from pxgl.model import save_model
from pxgl.tokenizer import Tokenizer

from bench.peers import FP32, System, numpy_system
from bench.reference import CheckFailed, Reference
from bench.run import measure_throughput
from tests.models import params_of, random_model


@pytest.fixture
def small_model(tmp_path, rng):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    words = ["".join(rng.choice(list("pixelmodgrun"), int(rng.integers(2, 7)))) for _ in range(2000)]
    Tokenizer.train(" ".join(words), 300).save(model.tokenizer_path)
    return model


def test_smoke_run_writes_json_markdown_and_plot(small_model, tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, "-m", "bench.run", "--sizes", "1,8", "--calls", "20", "--cold-runs", "1"]
    done = subprocess.run(
        [*command, "--model", small_model.source, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [result] = out.glob("*.json")
    results = json.loads(result.read_text())
    assert result.with_suffix(".md").read_text().startswith("# pxgl bench")
    with Image.open(result.with_suffix(".png")) as image:
        assert image.format == "PNG" and image.width > 100
    systems = results["systems"]
    for name in [f"pxgl-{executor}" for executor in EXECUTORS] + ["numpy"]:
        assert name in systems or any(name in reason for reason in results["skipped"]), name
    for name in ("pxgl-passes", "pxgl-fused", "numpy"):
        assert systems[name]["latency"]["calls"] == 20 and systems[name]["latency"]["median_us"] > 0
        assert set(systems[name]["throughput"]) == {"1", "8"}
        assert all(entry["prompts_per_s"] > 0 for entry in systems[name]["throughput"].values())
    assert systems["pxgl-fused"]["cold_infer"]["median_s"] > 0
    assert systems["pxgl-fused"]["cold_infer"]["first_run_s"] > 0
    if importlib.util.find_spec("torch") is None:  # a missing peer is skipped with its reason
        assert any(reason.startswith("pytorch: skipped") for reason in results["skipped"])
    else:
        assert "pytorch-eager" in systems


@pytest.fixture
def checked(small_model, rng):
    """A Reference and correct prediction pixels (the numpy peer's) for 500 random prompts."""
    params = params_of(small_model)
    prompts = rng.integers(0, small_model.spec.vocab_size, (500, 6)).astype(np.uint16)
    reference = Reference(params, small_model.spec.context_window, prompts)
    pixels = numpy_system(params).predict_batch(prompts)
    reference.check(pixels, slice(0, 500), FP32)
    return reference, pixels, prompts


def test_check_refuses_a_wrong_id(checked, rng):
    reference, pixels, _ = checked
    wrong = pixels.copy()
    row = int(rng.integers(len(wrong)))
    ids = wrong[:, 0].astype(int) + 256 * wrong[:, 1].astype(int)
    logits = reference._logits(np.array([row]))[0]
    worst = int(logits.argmin())  # the lowest logit is never a near-tie of the top
    assert worst != ids[row]
    wrong[row, :2] = (worst % 256, worst // 256)
    with pytest.raises(CheckFailed, match="differ from the oracle"):
        reference.check(wrong, slice(0, len(wrong)), FP32)


def test_check_refuses_confidence_and_unwritten_pixels(checked, rng):
    reference, pixels, _ = checked
    off = pixels.copy()
    row = int(rng.integers(len(off)))
    off[row, 2] = off[row, 2] + 2 if off[row, 2] < 128 else off[row, 2] - 2
    with pytest.raises(CheckFailed, match="confidence"):
        reference.check(off, slice(0, len(off)), FP32)
    poisoned = pixels.copy()
    poisoned[row] = 0xEE
    with pytest.raises(CheckFailed):
        reference.check(poisoned, slice(0, len(poisoned)), FP32)
    with pytest.raises(CheckFailed, match="predictions for"):
        reference.check(pixels[:-1], slice(0, len(pixels)), FP32)


def test_check_accepts_either_side_of_an_exact_tie(tmp_path, rng):
    """Output columns k and k + vocab/2 equal: answering the higher index of the tie is no error."""
    base = random_model(tmp_path, rng, vocab=200, embed=16, hidden=12, window=4)
    spec = base.spec
    stream = base.weights.reshape(-1).copy()
    for name in ("out.weight", "out.bias"):
        t = spec.tensors[name]
        tensor = stream[t.offset : t.offset + t.size].reshape(t.shape)
        tensor[..., 100:] = tensor[..., :100]
    save_model(tmp_path / "tied.pxi", spec, stream.tobytes())
    model = load_model(tmp_path / "tied.pxi")
    prompts = rng.integers(0, 200, (300, 4)).astype(np.uint16)
    reference = Reference(params_of(model), 4, prompts)
    partner = np.where(reference.ids < 100, reference.ids + 100, reference.ids - 100)
    pixels = np.stack([partner, np.zeros_like(partner), reference.confidence], axis=1).astype(np.uint8)
    reference.check(pixels, slice(0, len(pixels)), FP32)


def test_harness_does_not_count_a_wrong_system(checked):
    reference, pixels, prompts = checked

    def wrong_confidence(ids: np.ndarray) -> np.ndarray:
        wrong = pixels[: len(ids)].copy()
        wrong[:, 2] += 128
        return wrong

    system = System("broken", "peer", "fp32", FP32, None, wrong_confidence)
    results = measure_throughput(system, prompts, [1, 64], reference, skip_after=5.0)
    assert all("failed the oracle check" in entry["skipped"] for entry in results.values())
