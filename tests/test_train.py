"""`pxgl train` and engine.train: tiny runs are deterministic, write a model pxgl loads, and learn something
the independent numpy oracle confirms; bad input is one clear error; the bundled model is what its meta says."""

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pxgl.corpus import file_documents, split_documents
from pxgl.errors import PxglError
from pxgl.loading import load_model
from pxgl.pxi import read_rgb
from pxgl.spec import meta_path_for
from pxgl.tokenizer import Tokenizer
from pxgl.train import TrainConfig, quantize, train

from tests.cli_process import pxgl
from tests.reference import oracle

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "pixellm_v0.pxi"


def grammar_text(seed: int, documents: int = 60) -> str:
    """Sentences of a tiny grammar: the next word is predictable from the last two, unlike from frequency."""
    r = random.Random(seed)
    det, noun = ["the", "a", "one"], ["cat", "dog", "pixel", "model", "shader", "texture"]
    verb, adverb = ["reads", "writes", "sees", "draws"], ["quickly", "slowly", "twice"]
    paragraphs = [
        " ".join(
            f"{r.choice(det)} {r.choice(noun)} {r.choice(verb)} {r.choice(det)} {r.choice(noun)} {r.choice(adverb)}."
            for _ in range(8)
        )
        for _ in range(documents)
    ]
    return "\n\n".join(paragraphs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "grammar.txt"
    path.write_text(grammar_text(0))
    return path


def tiny(corpus: Path, out: Path) -> TrainConfig:
    return TrainConfig(out=out, files=(corpus,), vocab_size=300, embed_dim=16, hidden_dim=16, steps=300)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[TrainConfig, dict]:
    config = tiny(corpus, tmp_path_factory.mktemp("model") / "tiny.pxi")
    return config, train(config)


def test_a_seed_gives_byte_identical_weights(trained, corpus, tmp_path):
    config, _ = trained
    again = replace(config, out=tmp_path / "again.pxi")
    train(again)
    assert again.out.read_bytes() == config.out.read_bytes()
    assert (
        again.out.with_name("again.tokenizer.json").read_bytes()
        == config.out.with_name("tiny.tokenizer.json").read_bytes()
    )
    other = replace(config, out=tmp_path / "other.pxi", seed=1)
    train(other)
    assert other.out.read_bytes() != config.out.read_bytes()


def test_writes_a_model_pxgl_loads(trained):
    config, evaluation = trained
    model = load_model(config.out)
    spec = model.spec
    assert (spec.vocab_size, spec.embed_dim, spec.hidden_dim, spec.context_window) == (300, 16, 16, 2)
    assert spec.tokenizer == "tiny.tokenizer.json"
    assert model.tokenizer.vocab_size == 300
    assert spec.eval == evaluation
    assert json.loads(meta_path_for(config.out).read_text())["eval"] == evaluation
    assert set(evaluation) >= {"heldout_tokens", "float", "quantized", "unigram", "seed", "steps", "context_window"}
    assert evaluation["corpus"]["source"] == "grammar.txt"


def heldout_prompts(config: TrainConfig, tokenizer: Tokenizer) -> tuple[list[np.ndarray], np.ndarray]:
    """Every held-out position with its context, rebuilt from the corpus and the seed alone."""
    documents, _ = file_documents(list(config.files))
    _, heldout = split_documents(documents, config.seed, config.heldout_fraction)
    prompts, targets = [], []
    for document in heldout:
        ids = np.asarray(tokenizer.encode(document))
        for j in range(1, ids.size):
            prompts.append(ids[max(0, j - config.context_window) : j])
            targets.append(ids[j])
    return prompts, np.asarray(targets)


def test_the_oracle_confirms_the_quantized_eval_and_it_beats_unigram(trained):
    config, evaluation = trained
    model = load_model(config.out)
    params = oracle.dequantize(json.loads(meta_path_for(config.out).read_text()), model.weights)
    prompts, targets = heldout_prompts(config, model.tokenizer)
    lg = oracle.logits(params, prompts, config.context_window)
    correct = (lg.argmax(axis=1) == targets) | oracle.near_tie(lg)
    assert targets.size == evaluation["heldout_tokens"]
    assert abs(correct.mean() - evaluation["quantized"]["top1_accuracy"]) <= 0.002
    assert evaluation["quantized"]["top1_accuracy"] > 3 * evaluation["unigram"]["top1_accuracy"]
    assert evaluation["quantized"]["perplexity"] < evaluation["unigram"]["perplexity"] / 3
    assert abs(evaluation["quantized"]["top1_accuracy"] - evaluation["float"]["top1_accuracy"]) < 0.03


def test_quantization_is_affine_uint8_holding_zero(rng):
    w = rng.normal(0, 1, (64, 32)).astype(np.float32)
    q, scale, zero_point = quantize(w)
    assert q.dtype == np.uint8 and 0 <= zero_point <= 255 and scale > 0
    restored = (q.astype(np.float32) - zero_point) * np.float32(scale)
    inside = (w >= (0 - zero_point) * scale) & (w <= (255 - zero_point) * scale)
    assert np.abs(restored - w)[inside].max() <= scale / 2 + 1e-6
    assert quantize(np.full(5, 3.0, np.float32))[2] == 0  # all positive: the range starts at 0
    assert quantize(np.zeros(5, np.float32))[1:] == (1.0, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"embed_dim": 0}, "embed dim must be in 1..4096"),
        ({"hidden_dim": 5000}, "hidden dim must be in 1..4096"),
        ({"vocab_size": 100}, "vocab size must be in 256..65536"),
        ({"context_window": 0}, "context window must be in 1..16384"),
        ({"context_window": 16385}, "context window must be in 1..16384"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"lr": float("nan")}, "learning rate"),
        ({"out": Path("model.png")}, "must end in .pxi"),
        ({"vocab_size": 4000}, "the corpus only supports"),
        ({"files": (Path("/nonexistent/text.txt"),)}, "no such training text file"),
    ],
)
def test_bad_input_is_one_clear_error(corpus, tmp_path, changes, message):
    with pytest.raises(PxglError, match=message):
        train(replace(tiny(corpus, tmp_path / "m.pxi"), **changes))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "0 document"), (b"one paragraph only", "1 document"), (b"\xff\xfe", "not UTF-8")]
)
def test_unusable_corpora_are_refused(tmp_path, content, message):
    text = tmp_path / "text.txt"
    text.write_bytes(content)
    with pytest.raises(PxglError, match=message):
        train(tiny(text, tmp_path / "m.pxi"))


def test_cli_trains_prints_eval_json_and_exits_2_on_errors(corpus, tmp_path):
    args = ["train", str(corpus), "--out", "m.pxi", "--vocab", "300", "--embed", "16", "--hidden", "16"]
    run = pxgl(*args, "--steps", "50", "--seed", "3", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    evaluation = json.loads(run.stdout)
    assert evaluation["seed"] == 3 and evaluation["steps"] == 50
    assert load_model(tmp_path / "m.pxi").spec.eval == evaluation

    text = pxgl(*args, "--steps", "50", "--context", "3", "--out", "n.pxi", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "held-out tokens" in text.stdout and "unigram" in text.stdout
    assert load_model(tmp_path / "n.pxi").spec.context_window == 3

    bad = pxgl("train", "missing.txt", "--out", "x.pxi", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "missing.txt: no such training text file" in bad.stderr
    assert not (tmp_path / "x.pxi").exists()


@pytest.mark.skipif(not BUNDLED.exists(), reason="assets/pixellm_v0.pxi is not trained yet")
def test_the_bundled_model_is_what_its_meta_says():
    with BUNDLED.open("rb") as f:
        header = f.read(26)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[24:26] == bytes([8, 2])  # 8-bit RGB
    assert read_rgb(BUNDLED).shape == (305, 306, 3)
    model = load_model(BUNDLED)
    spec = model.spec
    assert (spec.vocab_size, spec.embed_dim, spec.hidden_dim) == (1024, 128, 128)
    assert (spec.image_width, spec.image_height) == (306, 305)
    offsets = {name: t.offset for name, t in spec.tensors.items()}
    assert offsets == {"b_hidden": 0, "b_out": 128, "embed": 1152, "hidden": 132224, "out": 148608}
    tokenizer = model.tokenizer
    text = "Return the value of the named attribute of object."
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) < len(text) / 2

    evaluation = spec.eval
    quantized, unigram = evaluation["quantized"], evaluation["unigram"]
    assert evaluation["heldout_tokens"] > 10_000
    assert quantized["top1_accuracy"] > 3 * unigram["top1_accuracy"]
    assert quantized["perplexity"] < unigram["perplexity"] / 3
    assert evaluation["context_window"] == spec.context_window

    params = oracle.dequantize(json.loads(meta_path_for(BUNDLED).read_text()), model.weights)
    ids = tokenizer.encode(" Return the value of the named")
    assert tokenizer.decode([int(oracle.logits(params, [ids], spec.context_window).argmax())]).strip()
