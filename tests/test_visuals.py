"""Visual AI (engine/visuals.py, `pxgl viz`, `pxgl infer --viz`): the images are the GPU's textures.

Every data image is checked texel by texel against the arrays `Engine.trace` read back from the GPU
(each block one solid colour: the texel's own RGB, or its value's level in the published colour map at
the scale written in the PNG), and those arrays against the numpy oracle (tests/oracle.py) within the
float32 tolerance of tests/test_passes.py. The weights image is checked byte by byte against the
layout in the meta file."""

import base64
import itertools
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl import visuals
from pxgl.cli import app
from pxgl.engine import Engine
from pxgl.executors import EXECUTORS
from pxgl.pxi import encode_tokens
from pxgl.tokenizer import Tokenizer
from typer.testing import CliRunner

from tests.models import params_of, random_model, random_rows
from tests.reference import oracle

SIZES = [(1024, 128, 128, 16), (300, 17, 33, 5), (2, 1, 1, 1), (5000, 8, 300, 4)]
"""(vocab, embed, hidden, window): the bundled shape, odd sizes, the smallest, and a hidden layer long
enough to fold into two rows with a vocabulary whose heatmap is not a full square."""


def read_png(path: Path) -> tuple[np.ndarray, dict]:
    """Pixels and the pxgl:* layout a data image carries in its PNG text chunks."""
    with Image.open(path) as image:
        layout = {k.removeprefix("pxgl:"): json.loads(v) for k, v in image.text.items() if k.startswith("pxgl:")}
        return np.asarray(image.convert("RGB")), layout


def blocks(pixels: np.ndarray, layout: dict) -> np.ndarray:
    """The texel grid of a data image, after checking that every block is one solid colour."""
    rows, cols = layout["texels"]
    bw, bh = layout["block"]
    x0, y0 = layout["origin"]
    area = pixels[y0 : y0 + rows * bh, x0 : x0 + cols * bw]
    assert area.shape[:2] == (rows * bh, cols * bw), "the image is smaller than its layout says"
    grid = area.reshape(rows, bh, cols, bw, 3)
    corner = grid[:, :1, :, :1]
    solid = (grid == corner).all(axis=(1, 3, 4))
    return corner[:, 0, :, 0], solid


def colour_levels(colours: np.ndarray) -> np.ndarray:
    """Each colour's level in the diverging colour map (-1 for a colour not in it)."""
    lut = visuals.diverging_lut()
    match = (colours[..., None, :] == lut).all(axis=-1)
    return np.where(match.any(axis=-1), match.argmax(axis=-1), -1)


def expected_levels(values: np.ndarray, scale: float) -> np.ndarray:
    """The level a value in [-scale, scale] must get: the map is linear, zero exactly in the middle."""
    top = visuals.COLOUR_LEVELS - 1
    return np.round((np.clip(values.astype(np.float64) / scale, -1, 1) + 1) * top / 2).astype(int)


def random_token_bytes(rng: np.random.Generator, vocab: int):
    """Token texts for a random model: 1..4 random bytes each, so some are not UTF-8 on their own."""
    table = [rng.integers(0, 256, int(rng.integers(1, 5)), dtype=np.uint8).tobytes() for _ in range(vocab)]
    return table.__getitem__


def assert_strip_is(path: Path, vector: np.ndarray, what: str, seed: int) -> None:
    pixels, layout = read_png(path)
    scale = float(np.abs(vector).max()) or 1.0
    assert layout["scale"] == scale, f"{what}: scale {layout['scale']} is not max |value| {scale}"
    grid, solid = blocks(pixels, layout)
    assert solid.all(), f"{what}: a texel's block is not one colour (seed {seed})"
    rows, width = layout["texels"]
    assert rows * width >= len(vector) > (rows - 1) * width, f"{what}: {rows}x{width} texels for {len(vector)}"
    flat = grid.reshape(-1, 3)
    levels = colour_levels(flat[: len(vector)])
    want = expected_levels(vector, scale)
    bad = np.flatnonzero(levels != want)
    assert not bad.size, f"{what}: texel {bad[0]} has level {levels[bad[0]]}, value means {want[bad[0]]} (seed {seed})"
    assert (flat[len(vector) :] == visuals.NO_VALUE).all(), f"{what}: padding texels must show no value"


def assert_cell_grid_is(path: Path, colours: np.ndarray, marked: int, seed: int) -> dict:
    """Every pixel of a token-cell image (logits.png, probabilities.png) is its cell's colour (token k at
    texel (k mod side, k div side); cells past the vocabulary: no value), except the ring around the
    marked cell: a black edge around a MARKER band, outside the cell. Returns the image's layout."""
    pixels, layout = read_png(path)
    vocab, side = len(colours), layout["texels"][0]
    assert side * side >= vocab > (side - 1) ** 2, f"{path.name}: side {side} for a vocabulary of {vocab}"
    assert layout["marked"] == marked, "the ring must mark the cell the GPU's argmax chose"
    cells = np.empty((side * side, 3), np.uint8)
    cells[:] = visuals.NO_VALUE
    cells[:vocab] = colours
    (bw, bh), (x0, y0), ring = layout["block"], layout["origin"], layout["ring"]
    want = np.empty_like(pixels)
    want[:] = visuals.BACKGROUND
    want[y0 : y0 + side * bh, x0 : x0 + side * bw] = np.repeat(np.repeat(cells.reshape(side, side, 3), bh, 0), bw, 1)
    mx, my = x0 + (marked % side) * bw, y0 + (marked // side) * bh
    ring_box = np.zeros(pixels.shape[:2], bool)
    ring_box[my - ring - 1 : my + bh + ring + 1, mx - ring - 1 : mx + bw + ring + 1] = True
    ring_box[my : my + bh, mx : mx + bw] = False
    differ = (pixels != want).any(axis=-1) & ~ring_box
    assert not differ.any(), f"{path.name}: pixel {np.argwhere(differ)[0]} is not its cell's colour (seed {seed})"
    ring_colours = pixels[ring_box]
    is_marker = (ring_colours == visuals.MARKER).all(-1) | (ring_colours == visuals.MARKER_EDGE).all(-1)
    assert is_marker.all() and (ring_colours == visuals.MARKER).all(-1).mean() > 0.5, "no ring around the argmax"
    return layout


def assert_heatmap_is(out: Path, gpu_logits: np.ndarray, marked: int, seed: int) -> None:
    """logits.png: each logit read back in the diverging map at ±max |logit|; probabilities.png: its
    softmax (float64) in the sequential map from 0 to the largest probability."""
    scale = float(np.abs(gpu_logits).max())
    colours = visuals.diverging_lut()[expected_levels(gpu_logits, scale)]
    layout = assert_cell_grid_is(out / "logits.png", colours, marked, seed)
    assert (layout["scale"], layout["colour_map"]) == (scale, "diverging")
    exp = np.exp(gpu_logits.astype(np.float64) - gpu_logits.max())
    probabilities = exp / exp.sum()
    top = float(probabilities.max())
    levels = np.round(probabilities / top * (visuals.COLOUR_LEVELS - 1)).astype(int)
    layout = assert_cell_grid_is(out / "probabilities.png", visuals.sequential_lut()[levels], marked, seed)
    assert (layout["scale"], layout["colour_map"]) == (top, "sequential")


CASES = [("passes", dims) for dims in SIZES] + [(name, SIZES[0]) for name in EXECUTORS if name != "passes"]
"""Every model size on Model A's passes; every other registered executor on the bundled shape."""


@pytest.mark.parametrize(("executor", "dims"), CASES, ids=lambda v: v if isinstance(v, str) else "x".join(map(str, v)))
def test_images_are_the_gpu_textures(tmp_path, gpu, seed, executor, dims):
    rng = np.random.default_rng(seed)
    vocab, embed, hidden, window = dims
    model = random_model(tmp_path, rng, vocab, embed, hidden, window)
    rows = random_rows(rng, 3, vocab, max_len=3 * window)
    trace = Engine(model, gpu=gpu, executor=executor).trace(encode_tokens(rows, vocab))
    row = int(rng.integers(len(rows)))
    k = int(rng.integers(1, 12))
    view = visuals.trace_view(trace, model.spec, row=row, token_bytes=random_token_bytes(rng, vocab), k=k)
    out = tmp_path / "viz"
    record = visuals.write_visuals(out, view)
    titles = {"context": "T_context", "hidden0": "T_hidden", "logits": "T_logits"}
    kept = [name for name in titles if trace_array(trace, name) is not None]
    assert record["missing"] == [titles[name] for name in titles if name not in kept]

    for key, texture in (("tokens", trace.tokens[row][None]), ("prediction", trace.prediction[row][None])):
        pixels, layout = read_png(out / f"{key}.png")
        grid, solid = blocks(pixels, layout)
        assert solid.all() and (grid == texture).all(), f"{key}.png is not the texture read back (seed {seed})"
    saved = np.load(out / "trace.npz")
    assert set(saved.files) == {"tokens", "prediction", *kept}
    for name in saved.files:
        assert np.array_equal(saved[name], trace_array(trace, name)[row], equal_nan=True), f"trace.npz {name}"

    p = params_of(model)
    lg = oracle.logits(p, [rows[row]], window)[0]
    marked = int(trace.prediction[row, 0, 0]) + 256 * int(trace.prediction[row, 0, 1])
    if not oracle.near_tie(lg[None])[0]:
        assert marked == int(lg.argmax()), f"{executor} predicted {marked}, oracle argmax {lg.argmax()} (seed {seed})"
    if trace.context is not None:
        assert_strip_is(out / "context.png", trace.context[row], "T_context", seed)
        pooled = p["embed"][rows[row][-window:]].mean(axis=0)
        assert np.abs(trace.context[row] - pooled).max() <= 1e-5 * np.abs(p["embed"]).max(), "T_context vs oracle"
    if trace.hidden is not None:
        assert_strip_is(out / "hidden0.png", trace.hidden[0][row], "T_hidden[0]", seed)
    if trace.logits is None:
        assert record["top_k"] == []
        return
    gpu_logits = trace.logits[row].reshape(-1)[:vocab]
    assert_heatmap_is(out, gpu_logits, marked, seed)
    bound = np.abs(np.maximum(trace.hidden[0][row], 0)) @ np.abs(p["out.weight"]) + np.abs(p["out.bias"])
    err = np.abs(gpu_logits - lg) / np.maximum(bound, 1e-6)
    assert err.max() <= 1e-5, f"heatmap logits vs oracle: worst relative error {err.max():.2e} (seed {seed})"

    top = record["top_k"]
    assert [c["rank"] for c in top] == list(range(1, min(k, vocab) + 1))
    assert [c["id"] for c in top] == np.argsort(-gpu_logits.astype(np.float64), kind="stable")[:k].tolist()
    shifted = np.exp(lg.astype(np.float64) - lg.max())
    oracle_p = shifted / shifted.sum()
    for c in top:
        assert abs(c["probability"] - oracle_p[c["id"]]) <= 1e-3 * oracle_p[c["id"]] + 1e-9, f"probability of {c}"
    _, confidence = oracle.predict(lg[None])
    assert abs(round(255 * top[0]["probability"]) - int(confidence[0])) <= 1, "top-1 vs the prediction's confidence"


def test_colour_map_is_diverging_and_symmetric(rng):
    scale = float(rng.uniform(0.01, 100))
    lut = visuals.diverging_lut()
    anchors = visuals.DIVERGING_ANCHORS
    ends = visuals.diverging(np.array([-scale, 0.0, scale, -3 * scale, 3 * scale]), scale)
    assert [tuple(c) for c in ends] == [anchors[0], anchors[len(anchors) // 2], anchors[-1], anchors[0], anchors[-1]]
    values = rng.uniform(-scale, scale, 1000)
    got = colour_levels(visuals.diverging(values, scale))
    assert (got == expected_levels(values, scale)).all()
    assert (colour_levels(visuals.diverging(-values, scale)) == len(lut) - 1 - got).all(), "not symmetric about 0"
    blue_minus_red = lut[:, 2].astype(int) - lut[:, 0].astype(int)
    assert (blue_minus_red[: len(lut) // 2] > 0).all() and (blue_minus_red[len(lut) // 2 + 1 :] < 0).all()
    assert (visuals.diverging(np.array([np.nan, np.inf]), scale) == visuals.NO_VALUE).all()
    assert visuals.colour_scale(np.zeros(5)) == 1.0, "an all-zero texture still needs a usable scale"


def test_top_k_orders_by_logit_lowest_id_first_on_ties(rng):
    vocab = int(rng.integers(2, 3000))
    logits = rng.normal(0, rng.uniform(0.1, 10), vocab).astype(np.float32)
    tied = rng.choice(vocab, size=min(vocab, 3), replace=False)
    logits[tied] = logits.max() + 1
    k = int(rng.integers(1, vocab + 5))
    top = visuals.top_k(logits, k)
    assert len(top) == min(k, vocab)
    assert [c.token.id for c in top[: len(tied)]] == sorted(tied.tolist()), "ties must go to the lowest id"
    assert all(a.logit >= b.logit for a, b in itertools.pairwise(top))
    ids, confidence = oracle.predict(logits[None])
    assert top[0].token.id == ids[0] and round(255 * top[0].probability) == confidence[0]
    if k >= vocab:
        assert abs(sum(c.probability for c in top) - 1) < 1e-9


def test_token_labels_show_text_or_bytes():
    table = {0: b" evolution", 1: b"\xe2\x80", 2: "é".encode(), 3: b"\n"}
    labels = {i: visuals.Token.of(i, table.__getitem__) for i in table}
    assert labels[0].label == "' evolution'" and labels[0].text == " evolution"
    assert labels[1].label == "b'\\xe2\\x80'" and labels[1].text == "\ufffd", "a piece of UTF-8 shows as bytes"
    assert labels[2].label == "'é'" and labels[3].label == "'\\n'"
    assert visuals.Token.of(7, None).label == "#7", "without a tokenizer a token shows as its id"
    assert visuals.drawable("'é→'") == "'\\xe9\\u2192'", "glyphs the default font lacks are escaped"


def test_the_overview_and_weights_draw_their_text_inside_them_in_glyphs_the_font_has(
    tmp_path, gpu, rng, seed, monkeypatch
):
    """Of an attention member (its T_scores caption is q·k_j/√D) with many small tensors, a long file name and
    a long prompt, with nothing from the user that needs an escape: every text the overview and the weight
    image draw lies inside the image (a long line ends in …), in characters the font has, none escaped."""
    from PIL import ImageDraw
    from pxgl.loading import load_model
    from pxgl.visuals.colour import DRAWABLE

    from tests.reference.models import random_architecture, write_random_member

    architecture = random_architecture(rng, "attention", depth=int(rng.integers(2, 5)))
    architecture["context"] |= {"window": 5, "concat": 1}
    name = "a_model_whose_file_name_goes_on_" * 4
    model = load_model(write_random_member(tmp_path, rng, architecture, name=name))
    drawn: list[tuple[tuple[int, int], tuple[float, float, float, float], str]] = []
    real = ImageDraw.ImageDraw.text

    def text(self, xy, text, *args, **kwargs):
        drawn.append((self.im.size, self.textbbox(xy, text, font=kwargs.get("font")), text))
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    pixels = encode_tokens(random_rows(rng, 1, model.spec.vocab_size, max_len=5), model.spec.vocab_size)
    with Engine(model, gpu=gpu, executor="passes") as engine:
        view = visuals.run_view(engine, pixels, source="tokens", prompt="a long prompt " * 40, tokenizer=None)
    visuals.write_visuals(tmp_path / "viz", view, visuals.weights_view(model))
    texts = [text for *_, text in drawn]
    assert any("q·k_j" in text for text in texts), (seed, "the T_scores caption was not drawn")
    outside = [(size, box, t) for size, box, t in drawn if min(box[:2]) < 0 or box[2] > size[0] or box[3] > size[1]]
    assert not outside, (seed, "text past the image's edge", outside)
    escaped = [text for text in texts if re.search(r"\\[ux][0-9a-f]", text)]
    assert not escaped, (seed, "drawn as escapes", escaped)
    tofu = [text for text in texts if not set(text) <= DRAWABLE]
    assert not tofu, (seed, "drawn with characters the font has no glyph for", tofu)


def trace_array(trace, key: str):
    """A trace's texture by its image key: hidden<l> is layer l's T_hidden."""
    if key.startswith("hidden") and key != "hidden":
        return None if trace.hidden is None else trace.hidden[int(key.removeprefix("hidden"))]
    return getattr(trace, key)


def test_missing_intermediates_are_named_not_drawn(tmp_path, gpu, rng, seed):
    """A pxVM-style trace keeps only some textures: what exists is drawn, the page says what is missing."""
    model = random_model(tmp_path, rng, 300, 16, 24, 6)
    trace = Engine(model, gpu=gpu, executor="passes").trace(encode_tokens(random_rows(rng, 2, 300, 20), 300))
    kept = {"context", "hidden", "logits"} - {str(rng.choice(["context", "hidden", "logits"]))}
    partial = replace(trace, **{name: None for name in ("context", "hidden", "logits") if name not in kept})
    record = visuals.write_visuals(tmp_path / "viz", visuals.trace_view(partial, model.spec))
    titles = {"context": "T_context", "hidden": "T_hidden", "logits": "T_logits"}
    assert record["missing"] == [titles[n] for n in ("context", "hidden", "logits") if n not in kept]
    files = {"context": "context", "hidden": "hidden0", "logits": "logits"}
    for name in ("context", "hidden", "logits"):
        assert (tmp_path / "viz" / f"{files[name]}.png").exists() == (name in kept), name
    assert (tmp_path / "viz" / "probabilities.png").exists() == ("logits" in kept)
    assert (record["top_k"] != []) == ("logits" in kept), "top-k needs T_logits"
    page = (tmp_path / "viz" / "index.html").read_text(encoding="utf-8")
    for title in record["missing"]:
        assert f"{title}: not kept by this executor" in page
    bare = replace(trace, context=None, hidden=None, logits=None)
    record = visuals.write_visuals(tmp_path / "bare", visuals.trace_view(bare, model.spec))
    assert {"tokens.png", "prediction.png", "overview.png", "index.html"} <= set(record["files"])


def byte_owners(meta: dict, byte_index: np.ndarray) -> np.ndarray:
    """Which tensor (index in meta order) holds each byte, from the meta's offsets; -1 for none."""
    owner = np.full(byte_index.shape, -1)
    for i, t in enumerate(meta["tensors"].values()):
        size = int(np.prod(t["shape"]))
        owner[(byte_index >= t["offset"]) & (byte_index < t["offset"] + size)] = i
    return owner


def expected_span(weights: np.ndarray, meta: dict, span: dict, colours: list) -> np.ndarray:
    """What a span of the weights image must show: each output pixel the texel under it, blended with
    the colour of the tensor owning the byte under it (TINT_ALPHA/256, rounded)."""
    first, pixels, width, zoom = span["first_pixel"], span["pixels"], span["width"], span["zoom"]
    lines = -(-pixels // width)
    ys = ((np.arange(round(lines * zoom)) + 0.5) / zoom).astype(int)
    xf = (np.arange(round(width * zoom)) + 0.5) / zoom
    xs = np.minimum(xf.astype(int), width - 1)
    channel = np.minimum(((xf - xs) * 3).astype(int), 2)
    texel = ys[:, None] * width + xs[None, :]
    inside = texel < pixels
    stream = weights.reshape(-1, 3)
    texel = np.where(inside, first + texel, 0)
    owner = np.where(inside, byte_owners(meta, texel * 3 + channel[None, :]), -1)
    base = stream[texel].astype(int)
    palette = np.array([*colours, (0, 0, 0)])
    a = visuals.TINT_ALPHA
    tinted = (base * (256 - a) + palette[owner] * a + 128) >> 8
    out = np.where((owner >= 0)[..., None], tinted, base)
    out[~inside] = visuals.BACKGROUND
    return out.astype(np.uint8)


@pytest.mark.parametrize("dims", [(1024, 128, 128, 16), (257, 19, 7, 3), (40, 2, 3, 2)], ids=str)
def test_weights_image_tints_and_outlines_each_tensor_by_byte(tmp_path, seed, dims):
    rng = np.random.default_rng(seed)
    model = random_model(tmp_path, rng, *dims)
    meta = json.loads((tmp_path / "random.meta.json").read_text())
    record = visuals.write_visuals(tmp_path / "viz", None, visuals.weights_view(model))
    pixels, layout = read_png(tmp_path / "viz" / "weights.png")
    assert record["weights"]["regions"] == {
        name: [t["offset"], t["offset"] + int(np.prod(t["shape"]))] for name, t in meta["tensors"].items()
    }
    colours = [visuals.TENSOR_COLOURS[i] for i in range(len(meta["tensors"]))]
    height, width = model.weights.shape[:2]
    main = {"first_pixel": 0, "pixels": height * width, "width": width, "zoom": layout["zoom"]}
    spans = [(main, layout["origin"])]
    if layout["detail"]:
        spans.append((layout["detail"], layout["detail"]["origin"]))
    for span, (x0, y0) in spans:
        want = expected_span(model.weights, meta, span, colours)
        got = pixels[y0 : y0 + want.shape[0], x0 : x0 + want.shape[1]]
        differ = (got != want).any(axis=-1)
        # Outlines are the only thing drawn over the data: in a tensor's own colour, on its byte edges.
        is_outline = (got[..., None, :] == np.array(colours)).all(-1).any(-1)
        assert not (differ & ~is_outline).any(), f"weights pixel {np.argwhere(differ & ~is_outline)[0]} (seed {seed})"
        assert differ.mean() < 0.2, "outlines cover the data"
        zoom = span["zoom"]
        for i, t in enumerate(meta["tensors"].values()):
            start = t["offset"] - 3 * span["first_pixel"]
            if not 0 <= start < 3 * span["pixels"]:
                continue
            line, column = divmod(start, 3 * span["width"])
            x, y = round(column / 3 * zoom), int((line + 0.5) * zoom)
            near = got[max(0, y - 1) : y + 2, max(0, x - 2) : x + 3]
            assert (near == colours[i]).all(-1).any(), f"no outline where {list(meta['tensors'])[i]} starts"
    if model.weights.shape[1] * 3 < visuals.WEIGHTS_TARGET_PX:
        assert layout["zoom"] % 3 == 0, "a zoom of 3k puts every byte edge on a pixel edge"


def trained_model(tmp_path: Path, rng: np.random.Generator):
    """A random model with a real tokenizer beside it (trained on random words), as the CLI needs."""
    vocab = 300
    model = random_model(tmp_path, rng, vocab, 24, 32, 8)
    letters = np.array(list("pxoselvutinargm "))
    text = "pxOS evolution " + "".join(rng.choice(letters, 20_000))
    Tokenizer.train(text, vocab).save(tmp_path / "random.tokenizer.json")
    return model, Tokenizer.load(tmp_path / "random.tokenizer.json")


def data_uris(page: str) -> dict[str, bytes]:
    """id → decoded bytes of every <img id=...> in the page."""
    found = re.findall(r'<img id="img-(\w+)"[^>]* src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return {key: base64.b64decode(data) for key, data in found}


def test_cli_viz_and_infer_viz_write_the_gpu_run(tmp_path, gpu, rng, seed):
    model, tokenizer = trained_model(tmp_path, rng)
    path, prompt = tmp_path / "random.pxi", "pxOS evolution"
    runner = CliRunner()
    result = runner.invoke(app, ["viz", prompt, "-o", str(tmp_path / "v"), "-m", str(path), "--weights", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    out = tmp_path / "v"
    assert set(record["files"]) == {p.name for p in out.iterdir()}
    assert {"overview.png", "index.html", "weights.png", "logits.png", "trace.npz"} <= set(record["files"])
    ids = tokenizer.encode(prompt)
    trace = Engine(model, gpu=gpu, executor="passes").trace(encode_tokens([ids], model.spec.vocab_size))
    saved = np.load(out / "trace.npz")
    for name in ("tokens", "context", "hidden0", "logits"):
        assert np.array_equal(saved[name], trace_array(trace, name)[0], equal_nan=True), f"{name}: not the GPU's run"
    assert [t["id"] for t in record["tokens"]] == ids[-model.spec.context_window :]
    assert [t["text"] for t in record["tokens"]] == [tokenizer.decode([i]) for i in ids[-8:]]
    assert record["prediction"]["id"] == record["top_k"][0]["id"]

    page = (out / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script|<link|https?://|src=\"(?!data:)", page), "the page must need nothing but itself"
    inlined = data_uris(page)
    assert set(inlined) == {"tokens", "context", "hidden0", "logits", "probabilities", "prediction", "weights"}
    for key, data in inlined.items():
        assert data == (out / f"{key}.png").read_bytes(), f"{key}: page image differs from {key}.png"
    rows = re.findall(
        r'<tr(?: class=top)?><td class="num">(\d+)</td><td><code>([^<]*)</code></td>'
        r'<td class="num">(\d+)</td>',
        page,
    )
    assert [(int(r), int(i)) for r, _, i in rows] == [(c["rank"], c["id"]) for c in record["top_k"]]

    infer_out = tmp_path / "iv"
    result = runner.invoke(
        app, ["infer", prompt, "-m", str(path), "-o", str(tmp_path / "p.pxi"), "--viz", str(infer_out)]
    )
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(infer_out / "trace.npz")["logits"], saved["logits"], equal_nan=True)
    assert json.loads((infer_out / "viz.json").read_text())["top_k"] == record["top_k"]


def test_cli_viz_bad_input_is_one_line_and_status_2(tmp_path, rng):
    trained_model(tmp_path, rng)
    (tmp_path / "taken").write_text("a file")
    cases = [
        (["-o", str(tmp_path / "x")], "give a PROMPT"),
        (["hi", "-o", str(tmp_path / "taken")], "is not a folder"),
        (["hi", "-o", str(tmp_path / "x"), "--top-k", "0"], "--top-k must be at least 1"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "engine", "viz", *args, "-m", str(tmp_path / "random.pxi")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, f"more than one line: {done.stderr}"
    assert not (tmp_path / "x").exists(), "nothing is written when the input is bad"
