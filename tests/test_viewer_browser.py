"""index.html in a real browser: headless Chromium opens the page from disk (no server), and we check
what it shows: every image decoded at its own size, the heatmap on screen pixel for pixel, the token
and top-k tables with the expected rows, a screenshot that is not blank, and no console error.

The set-up installs Chromium with apt-get where it is missing (root on Debian/Ubuntu, as on a fresh CI
machine); the test is skipped, saying why, only where no browser can be had."""

import io

import numpy as np
from PIL import Image
from pxgl import visuals
from pxgl.engine import Engine
from pxgl.pxi import encode_tokens

from tests.browser import visit
from tests.models import random_model, random_rows

WINDOW = (1280, 2000)
"""The browser window: wide enough for the page's two columns to show the heatmap at its own size."""
PAGE_TIMEOUT_S = 60

PROBE = """(() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
  const rows = sel => [...document.querySelectorAll(sel)].map(r => [...r.cells].map(c => c.textContent.trim()));
  return {
    images: [...document.images].map(i => ({
      id: i.id, loaded: i.complete && i.naturalWidth > 0, natural: [i.naturalWidth, i.naturalHeight], box: box(i),
    })),
    topK: rows('#top-k tbody tr'),
    tokens: rows('#tokens-table tbody tr'),
    text: document.body.innerText,
  };
})()"""


def test_index_html_shows_images_and_top_k_in_chromium(tmp_path, gpu, rng, seed, browser):
    model = random_model(tmp_path, rng)
    vocab = model.spec.vocab_size
    words = [f"w{i}".encode() for i in range(vocab)]
    trace = Engine(model, gpu=gpu, executor="passes").trace(encode_tokens(random_rows(rng, 1, vocab, 12), vocab))
    view = visuals.trace_view(trace, model.spec, prompt="pxOS evolution", token_bytes=words.__getitem__, k=8)
    out = tmp_path / "viz"
    record = visuals.write_visuals(out, view)

    seen = visit(browser, out / "index.html", PROBE, tmp_path / "profile", WINDOW, PAGE_TIMEOUT_S)

    assert seen.errors == [], f"the page logged errors: {seen.errors}"
    probe = seen.probe
    by_id = {image["id"]: image for image in probe["images"] if image["id"]}
    shown = ("tokens", "context", "hidden0", "logits", "probabilities", "prediction")
    assert set(by_id) == {f"img-{key}" for key in shown}
    assert all(image["loaded"] for image in probe["images"]), "an image did not decode"
    for key in shown:
        with Image.open(out / f"{key}.png") as png:
            assert by_id[f"img-{key}"]["natural"] == list(png.size), f"{key}: the page shows another image"

    want_top = [[str(c["rank"]), repr(c["text"]), str(c["id"])] for c in record["top_k"]]
    assert [row[:3] for row in probe["topK"]] == want_top, "top-k table rows"
    assert [row[4] for row in probe["topK"]] == [f"{c['probability']:.2%}" for c in record["top_k"]]
    assert [row[2] for row in probe["tokens"]] == [str(t["id"]) for t in record["tokens"]], "token table rows"
    assert "T_logits" in probe["text"] and "prediction pixel" in probe["text"]

    shot = np.asarray(Image.open(io.BytesIO(seen.screenshot_png)).convert("RGB")).astype(int)
    assert shot.shape[:2] == (WINDOW[1], WINDOW[0])
    assert shot.std() > 20, "the screenshot is blank"
    left, top, width, height = (round(v) for v in by_id["img-logits"]["box"])
    heatmap = np.asarray(Image.open(out / "logits.png").convert("RGB")).astype(int)
    assert (width, height) == (heatmap.shape[1], heatmap.shape[0]), "the heatmap is scaled on the page"
    assert top + height <= WINDOW[1], "the heatmap is below the fold"
    on_screen = shot[top : top + height, left : left + width]
    close = (np.abs(on_screen - heatmap) <= 2).all(axis=-1)
    assert close.mean() > 0.99, f"only {close.mean():.1%} of the heatmap shows on screen as in logits.png"
