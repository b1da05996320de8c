"""`pxgl viz` on version 2 (engine/transformer/gpu/trace.py, engine/visuals/transformer*.py, docs/FORMATS.md
§14.8): every per-head attention image equals the independent oracle's attention weights (x 255, rounded), the
residual bands and logits images are the arrays the GPU read back, pixel for pixel in the published colour
maps, and those arrays are the oracle's residual stream and logits within §14.4's τ. Random members written by
the engine and read by the oracle through Pillow and json alone; bad input is one line, exit 2, nothing
written; an existing file of another kind in the folder is not overwritten without --force."""

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl.cli import app, main
from pxgl.kernel import DISPATCH_LOOPS
from pxgl.pxi import write_rgb
from pxgl.serve.page import transformer_trace_fragment
from pxgl.tokenizer import Tokenizer
from pxgl.transformer import (
    TransformerArchitecture,
    lay_out,
    random_values,
    read_transformer,
    save_transformer,
    write_random_transformer,
)
from pxgl.transformer.gpu import Choice, PassesTransformer
from pxgl.transformer.gpu.loops import GROUP
from pxgl.transformer.gpu.trace import MAX_TRACE_POSITIONS, trace_attention_loops, trace_capacity, trace_tokens
from pxgl.transformer.meta import MAX_HEAD_DIM
from pxgl.visuals import diverging, sequential_lut
from typer.testing import CliRunner

from tests.reference import transformer as oracle
from tests.test_transformer_engine import assert_logits_agree, oracle_reads, random_architecture
from tests.test_visuals import data_uris

HEAD_GAIN = 4.0
MIDPOINT_WINDOW = 255 * oracle.AGREEMENT
"""A head pixel may differ from round(255 · p) by one only where the oracle's 255 · p lies within this many
levels (255 · τ's relative part, 10⁻³) of a rounding midpoint: the GPU's weights differ from the oracle's by
float32 summation order and a key landing on the other side of a float16 midpoint (at most ~1e-4 measured
over 40 members), so a weight that close to a midpoint may round either way."""


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB", f"{path.name}: {image.mode}, not an 8-bit RGB PNG"
        return np.asarray(image)


def assert_head_equals_the_oracles(pixels: np.ndarray, weights: np.ndarray, what: str) -> None:
    """Grey pixels round(255 · p) of the oracle's weights p (0 above the diagonal), exactly but for
    off-by-one at near-midpoints, which are at most 1% of the pixels."""
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all(), f"{what}: not grey"
    exact = 255 * weights.astype(np.float64)
    expected = np.round(exact)
    ours = pixels[..., 0].astype(np.float64)
    differ = ours != expected
    near_midpoint = np.abs(exact - np.floor(exact) - 0.5) <= MIDPOINT_WINDOW
    assert (np.abs(ours - expected) <= 1).all(), f"{what}: a pixel differs by more than one level"
    assert (near_midpoint | ~differ).all(), f"{what}: pixels {np.argwhere(differ & ~near_midpoint)[:4]} differ"
    assert differ.sum() <= max(1, 0.01 * differ.size), f"{what}: {differ.sum()} near-midpoint pixels excused"
    assert not ours[np.triu_indices(len(ours), 1)].any(), f"{what}: a weight above the diagonal (a future key)"


def viz(*args: str) -> dict:
    result = CliRunner().invoke(app, ["viz", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("vocab", [None, 70000], ids=["any", "three-byte-ids"])
def test_head_images_equal_the_oracles_attention_weights(tmp_path, rng, vocab):
    choices = {}
    if vocab is not None:  # narrow, so the 70,000-row tables stay small
        choices = {"vocab_size": vocab, "width": 32, "heads": 4, "kv_heads": int(rng.choice([1, 2, 4]))}
        choices |= {"head_dim": 8, "attention_scale": 8**-0.5}
    architecture = random_architecture(rng, **choices)
    quant = str(rng.choice(["q8", "q4", "u8", "f16"]))
    model = tmp_path / "member.pxi"
    write_random_transformer(model, architecture, quant, seed=int(rng.integers(1 << 32)), head_gain=HEAD_GAIN)
    meta, params = oracle_reads(model)
    # every position's logits over 70,000 ids cost llvmpipe ~0.6 s a position: a short prompt there
    n = int(rng.integers(1, architecture.context_length + 1 if vocab is None else 8))
    tokens = rng.integers(0, architecture.vocab_size, n)
    write_rgb(tmp_path / "prompt.pxi", oracle.token_pixels(tokens)[None])
    out = tmp_path / "viz"
    record = viz("-m", str(model), "--input", str(tmp_path / "prompt.pxi"), "-o", str(out))
    what = f"{architecture} {quant}, {n} tokens"

    recorded: dict = {}
    logits = oracle.forward(meta, params, tokens, record=recorded)
    for layer, heads in enumerate(recorded["attention"]):
        for head, weights in enumerate(heads):
            pixels = read_png(out / f"attention_l{layer}_h{head}.png")
            assert pixels.shape == (n, n, 3), f"{what}: layer {layer} head {head} is {pixels.shape}"
            assert_head_equals_the_oracles(pixels, weights, f"{what}: layer {layer} head {head}")
    heads_written = {p.name for p in out.glob("attention_*.png")}
    assert len(heads_written) == architecture.layers * architecture.heads, f"{what}: {sorted(heads_written)}"
    assert set(record["files"]) == {p.name for p in out.iterdir()}

    saved = np.load(out / "trace.npz")
    residual = np.stack(recorded["residual"])
    gap = float(np.abs(saved["residual"] - residual).max())
    assert gap <= oracle.AGREEMENT * (1 + float(np.abs(residual).max())), f"{what}: residual differs by {gap:.3g}"
    assert_logits_agree(saved["logits"], logits, what)
    assert np.array_equal(saved["tokens"], tokens)

    bands = read_png(out / "residual.png").reshape(architecture.layers + 1, n, architecture.width, 3)
    scales = record["residual"]["scales"]
    for stage, (band, scale) in enumerate(zip(bands, scales, strict=True)):
        assert scale == float(np.abs(saved["residual"][stage]).max()), f"{what}: band {stage}'s scale"
        assert np.array_equal(band, diverging(saved["residual"][stage], scale)), f"{what}: band {stage}'s colours"

    heatmap = read_png(out / "logits.png")
    bin_ids = math.ceil(architecture.vocab_size / 1024)
    assert record["logits"]["bin"] == bin_ids and heatmap.shape == (n, math.ceil(architecture.vocab_size / bin_ids), 3)
    below_top = saved["logits"].astype(np.float64) - saved["logits"].max(axis=1, keepdims=True)
    for column in rng.choice(heatmap.shape[1], min(8, heatmap.shape[1]), replace=False):
        top = below_top[:, column * bin_ids : (column + 1) * bin_ids].max(axis=1)
        level = np.round(np.clip((top + 10) / 10, 0, 1) * 254).astype(int)
        assert np.array_equal(heatmap[:, column], sequential_lut()[level]), f"{what}: logits column {column}"

    assert np.array_equal(read_png(out / "tokens.png")[0], oracle.token_pixels(tokens))
    ids, confidence = oracle.read_predictions(read_png(out / "prediction.png")[None, 0])
    expected_ids, expected_confidence = oracle.read_predictions(oracle.prediction_pixels(logits[-1:]))
    if not oracle.near_tie(logits[-1:])[0]:
        assert ids[0] == expected_ids[0] and abs(int(confidence[0]) - int(expected_confidence[0])) <= 1, what
    assert record["prediction"]["id"] == record["top_k"][0]["id"] == int(ids[0])


def test_the_trace_is_bounded_at_every_shape_and_its_kernel_within_the_loop_limit():
    rest = {"norm_eps": 1e-5, "rope": None, "biases": frozenset(), "tied_head": True}
    gpt2 = TransformerArchitecture(50257, 1024, 768, 12, 12, 12, 64, 0.125, "gelu_tanh", 3072, "layernorm", **rest)
    tinyllama = TransformerArchitecture(32000, 2048, 2048, 22, 32, 4, 64, 0.125, "silu_gated", 5632, "rmsnorm", **rest)
    widest = TransformerArchitecture(
        255 * 65536, 32768, 8192, 128, 256, 256, 512, 0.1, "gelu", 65536, "rmsnorm", **rest
    )
    for architecture, most in ((gpt2, MAX_TRACE_POSITIONS), (tinyllama, 154), (widest, 2)):
        assert trace_capacity(architecture) == most, architecture
    for keys in (1, MAX_TRACE_POSITIONS):
        assert trace_attention_loops(keys, MAX_HEAD_DIM, GROUP) <= DISPATCH_LOOPS


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["pxgl", "viz", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


def test_bad_input_is_one_line_and_status_2_and_another_kind_of_file_is_kept(tmp_path, rng, monkeypatch, capsys):
    architecture = random_architecture(rng, context_length=MAX_TRACE_POSITIONS + 8, layers=1)
    model = tmp_path / "member.pxi"
    write_random_transformer(model, architecture, "q8", seed=int(rng.integers(1 << 32)))
    long, wrong = tmp_path / "long.pxi", tmp_path / "wrong.pxi"
    write_rgb(long, oracle.token_pixels(rng.integers(0, architecture.vocab_size, MAX_TRACE_POSITIONS + 1))[None])
    write_rgb(wrong, oracle.token_pixels([1, architecture.vocab_size])[None])
    out = tmp_path / "out"
    m = ("-m", str(model), "-o", str(out))
    cases = [
        (("hello", *m), "has no tokenizer"),
        (("--input", str(long), *m), f"a picture of this model holds 1 to {MAX_TRACE_POSITIONS}"),
        (("--input", str(wrong), *m), f"position 1: token id {architecture.vocab_size}"),
        (("--weights", *m), "--weights draws version-1 weight textures only"),
        (("hello", "--input", str(long), *m), "not both"),
    ]
    for args, message in cases:
        code, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not out.exists(), "nothing is written when the input is bad"

    out.mkdir()
    kept = out / "attention_l0_h0.png"
    kept.write_text("not an image: someone's notes")
    short = tmp_path / "short.pxi"
    write_rgb(short, oracle.token_pixels(rng.integers(0, architecture.vocab_size, 3))[None])
    code, err = run_main(monkeypatch, capsys, "--input", str(short), *m)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1, err
    assert kept.read_text() == "not an image: someone's notes" and sorted(out.iterdir()) == [kept]
    record = viz("--input", str(short), *m, "--force")
    assert "attention_l0_h0.png" in record["files"] and read_png(kept).shape == (3, 3, 3)


def test_a_prompt_begins_with_bos_and_the_serve_page_shows_the_images_viz_writes(tmp_path, rng, gpu):
    """`viz -m MODEL "prompt"` encodes with the model's tokenizer, bos first (§14.4); the serve page's trace
    (POST /v1/trace's {"html", "view"} of a version-2 model) inlines the very images viz writes."""
    tokenizer = Tokenizer(())  # the 256 byte tokens
    architecture = random_architecture(rng, vocab_size=tokenizer.vocab_size)
    bos = int(rng.integers(tokenizer.vocab_size))
    values = random_values(architecture, np.random.default_rng(int(rng.integers(1 << 32))), head_gain=HEAD_GAIN)
    spec, weight_bytes = lay_out(architecture, values, "q8", bos, "member.tokenizer.json")
    model = tmp_path / "member.pxi"
    save_transformer(model, spec, weight_bytes, tokenizer)
    prompt = "pixels, é"
    out = tmp_path / "viz"
    record = viz("-m", str(model), prompt, "-o", str(out))
    ids = [bos, *tokenizer.encode(prompt)]
    assert [t["id"] for t in record["tokens"]] == ids
    assert [t["text"] for t in record["tokens"][1:]] == [tokenizer.decode([i]) for i in ids[1:]]

    spec, pixels = read_transformer(model)
    executor = PassesTransformer(gpu, spec, pixels)
    try:
        trace = trace_tokens(executor, ids)
    finally:
        executor.close()
    about = {"model": "member", "executor": "passes"}
    html, view = transformer_trace_fragment(trace, architecture.vocab_size, prompt, tokenizer.token_bytes, about)
    assert not re.search(r"<script|<link|https?://|src=\"(?!data:)", html), "the fragment needs nothing but itself"
    inlined = data_uris(html)
    keys = {f"attention_l{layer}_h{head}" for layer in range(architecture.layers) for head in range(architecture.heads)}
    assert keys | {"residual", "logits", "prediction"} == set(inlined)
    for key, png in inlined.items():
        assert png == (out / f"{key}.png").read_bytes(), f"{key}: the page's image is not the one viz writes"
    ignored = {"dir", "files", "about"}
    assert {k: v for k, v in view.items() if k not in ignored} == {k: v for k, v in record.items() if k not in ignored}


def test_a_trace_in_a_free_slot_leaves_the_other_slots_sequences_alone(tmp_path, rng, gpu):
    """A trace reads its own slot's cache rows: traced in slot 1 while slot 0 generates, its weights are the
    oracle's for its own tokens, and slot 0's next tokens are those it gives untraced."""
    architecture = random_architecture(rng)
    path = tmp_path / "member.pxi"
    write_random_transformer(path, architecture, "f16", seed=int(rng.integers(1 << 32)), head_gain=HEAD_GAIN)
    meta, params = oracle_reads(path)
    spec, pixels = read_transformer(path)
    running = rng.integers(0, architecture.vocab_size, int(rng.integers(1, 16)))
    traced = rng.integers(0, architecture.vocab_size, int(rng.integers(1, 16)))
    generated = []
    for trace_between in (False, True):
        executor = PassesTransformer(gpu, spec, pixels, slots=2)
        try:
            executor.prefill(0, running, choice=Choice())
            if trace_between:
                trace = trace_tokens(executor, traced, slot=1)
            generated.append(executor.decode([0], [Choice()], count=4).ids[:, 0])
        finally:
            executor.close()
    assert np.array_equal(*generated), "tracing slot 1 changed slot 0's sequence"
    recorded: dict = {}
    oracle.forward(meta, params, traced, record=recorded)
    for layer, heads in enumerate(recorded["attention"]):
        gap = float(np.abs(trace.attention[layer] - np.stack(heads)).max())
        assert gap <= oracle.AGREEMENT, f"layer {layer}: slot 1's weights differ from the oracle's by {gap:.3g}"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_oracles_attention_weights_and_residuals_are_transformers(rng, family):
    """What the head images are compared with is itself checked: the oracle's recorded weights and residual
    stream (its cache in float32, as transformers keeps it) equal transformers' output_attentions and
    hidden_states (all but the last, which transformers gives after the final norm) on the same weights."""
    pytest.importorskip("transformers", reason="the reference extra: pip install -e '.[reference]'")
    import torch

    from tests import test_transformer_reference as hf

    choices = {"kv_heads": 2, "positions": {"kind": "rope", "base": 10000.0, "rotation": "halves"}}
    architecture = hf.random_architecture(rng, family, **(choices if family == "llama" else {}))
    meta, params, tokens = hf.member(rng, architecture)
    model = (
        hf.gpt2_model(architecture, params, "gelu_new") if family == "gpt2" else hf.llama_model(architecture, params)
    )
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        theirs = model(torch.from_numpy(tokens[None, :]), output_attentions=True, output_hidden_states=True)
    recorded: dict = {}
    oracle.forward(meta, params, tokens, cache_dtype=np.float32, record=recorded)
    for layer, heads in enumerate(recorded["attention"]):
        gap = float(np.abs(np.stack(heads) - theirs.attentions[layer][0].numpy()).max())
        assert gap <= 1e-5, f"{family} layer {layer}: attention weights differ by {gap:.3g}"
    for stage, x in enumerate(recorded["residual"][:-1]):
        expected = theirs.hidden_states[stage][0].numpy()
        gap = float(np.abs(x - expected).max())
        assert gap <= hf.HF_TOLERANCE * (1 + float(np.abs(expected).max())), f"{family} stage {stage}: {gap:.3g}"
