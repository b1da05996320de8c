"""A version-2 trace drawn for people: the labelled overview sheet (overview.png), the HTML section `pxgl viz`'s
index.html and the serve page show (every image inlined), and writing the whole set as one (§0.3)."""

import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import PxglError
from ..outputs import check_output_dir, write_files
from .colour import DIM_INK, colourbar, upscale
from .page import PAGE_STYLE, data_uri
from .sheet import Sheet, clip, figure, top_k_table
from .transformer import LOG_SPAN, TransformerView, attention_key, token_pixel

MARGIN, GAP = 28, 6
HEAD_TARGET_PX = 96
"""A head's picture in the sheet and page is about this many pixels square (whole multiples, at most 8)."""
STRIP_TARGET_PX = 768
LABEL_PX = 70
"""Room left of the attention grid and the strip for the row labels."""


def head_zoom(n: int) -> int:
    return max(1, min(8, HEAD_TARGET_PX // n))


def zoomed(image: Image.Image, zoom_x: int, zoom_y: int) -> Image.Image:
    return Image.fromarray(upscale(np.asarray(image), zoom_x, zoom_y), "RGB")


def strip_zoom(view: TransformerView, key: str) -> tuple[int, int]:
    rows, columns = view.images[key].texels
    return max(1, STRIP_TARGET_PX // columns), max(1, min(8, 256 // rows))


def overview_sheet(view: TransformerView) -> Image.Image:
    """Prompt and answer, the attention grid (a row per layer, a column per head), the residual stream's
    bands, the logits heatmap and the top-k, labelled."""
    n, zoom = view.positions, head_zoom(view.positions)
    cell = n * zoom + GAP
    residual_zoom, logits_zoom = strip_zoom(view, "residual"), strip_zoom(view, "logits")
    residual = zoomed(view.images["residual"].image, *residual_zoom)
    logits = zoomed(view.images["logits"].image, *logits_zoom)
    body_w = max(view.heads * cell, residual.width, logits.width, 480)
    height = 180 + view.layers * cell + 26 * 3 + residual.height + logits.height + 120 + 24 * len(view.top_k) + 90
    sheet = Sheet(2 * MARGIN + LABEL_PX + body_w, height)
    y = MARGIN
    sheet.text((MARGIN, y), "pxgl · watch the transformer think", 28)
    y += 42
    prompt = repr(view.prompt) if view.prompt is not None else "a token texture"
    sheet.text(
        (MARGIN, y),
        f"{clip(prompt, 60)}  ->  {view.prediction.label}  (id {view.prediction.id}, {view.confidence:.0%})",
        18,
    )
    y += 28
    sheet.text((MARGIN, y), "   ·   ".join(view.about.values()), 13, DIM_INK)
    y += 34
    x0 = MARGIN + LABEL_PX
    detail = f"{view.layers} layers x {view.heads} heads, {n} x {n}: row = query, column = key, white = weight 1"
    y = sheet.heading(MARGIN, y, "attention", detail)
    for head in range(view.heads):
        sheet.text((x0 + head * cell, y), f"h{head}", 12, DIM_INK)
    y += 18
    for layer in range(view.layers):
        sheet.text((MARGIN, y + layer * cell), f"layer {layer}", 12, DIM_INK)
        for head in range(view.heads):
            image = zoomed(view.images[attention_key(layer, head)].image, zoom, zoom)
            sheet.image.paste(image, (x0 + head * cell, y + layer * cell))
    y += view.layers * cell + 14
    width = view.images["residual"].texels[1]
    detail = f"{view.layers + 1} bands x {n} positions x {width} elements, each band +/- its largest"
    y = sheet.heading(MARGIN, y, "residual stream", detail)
    band = n * residual_zoom[1]
    for stage in range(view.layers + 1):
        label = "embed" if stage == 0 else f"block {stage - 1}"
        sheet.text((MARGIN, y + stage * band), label, 11, DIM_INK)
    sheet.image.paste(residual, (x0, y))
    y += residual.height + 8
    sheet.image.paste(colourbar("diverging", 180, 10), (x0, y))
    y += 24
    bins = "" if view.logit_bin == 1 else f", {view.logit_bin} ids a column"
    y = sheet.heading(
        MARGIN, y, "logits", f"row = position, column = token id{bins}; 0 to -{LOG_SPAN:g} nats below the top"
    )
    sheet.image.paste(logits, (x0, y))
    y += logits.height + 16
    if view.top_k:
        y = top_k_table(sheet, view.top_k, x0, y)
    return sheet.image.crop((0, 0, sheet.image.width, min(y + MARGIN, sheet.image.height)))


def img(key: str, png: bytes, width: int, height: int, title: str) -> str:
    return (
        f'<img id="img-{key}" alt="{html.escape(title)}" title="{html.escape(title)}" src="{data_uri(png)}" '
        f'width="{width}" height="{height}" style="width: {width}px; height: {height}px; max-width: none">'
    )


def transformer_html(view: TransformerView, pngs: dict[str, bytes]) -> str:
    """The section showing one trace (what index.html holds and the serve page draws)."""
    prompt = repr(view.prompt) if view.prompt is not None else "a token texture"
    answer = html.escape(view.prediction.label)
    out = [
        f'<p class="answer"><code>{html.escape(prompt)}</code> → <code>{answer}</code> '
        f"<span class=dim>id {view.prediction.id} · confidence {view.confidence:.1%}</span></p>",
        f'<p class="dim">{html.escape(" · ".join(view.about.values()))}</p>',
    ]
    rows = "".join(
        f'<tr><td class="num">{i}</td><td><span class="swatch" style="background: rgb{token_pixel(t.id)}">'
        f'</span></td><td class="num">{t.id}</td><td><code>{html.escape(t.label)}</code></td></tr>'
        for i, t in enumerate(view.tokens)
    )
    out.append(
        '<section id="tokens"><h2>tokens</h2><table id="tokens-table"><thead><tr><th>pos</th><th>pixel</th>'
        f"<th>id</th><th>token</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
    n, zoom = view.positions, head_zoom(view.positions)
    heads = ["<span></span>", *(f'<span class="dim">head {head}</span>' for head in range(view.heads))]
    for layer in range(view.layers):
        heads.append(f'<span class="dim">layer {layer}</span>')
        for head in range(view.heads):
            key = attention_key(layer, head)
            heads.append(img(key, pngs[key], n * zoom, n * zoom, f"layer {layer} · head {head}"))
    grid = f"display: grid; grid-template-columns: 70px repeat({view.heads}, max-content); gap: 6px; align-items: start"
    out.append(
        f'<section id="attention"><h2>attention</h2><p class="dim">{view.layers} layers x {view.heads} heads, '
        f"{n} x {n} each: row = query position, column = key position, grey = round(255 · weight)</p>"
        f'<div style="{grid}">{"".join(heads)}</div></section>'
    )
    for key in ("residual", "logits"):
        image = view.images[key]
        zoom_x, zoom_y = strip_zoom(view, key)
        rows_, columns = image.texels
        scales = ""
        if key == "residual":
            scales = ", scales " + ", ".join(f"±{figure(s)}" for s in view.stage_scales)
        out.append(
            f'<section id="{key}"><h2>{html.escape(image.title)}</h2><p class="dim">{html.escape(image.caption)}'
            f'{scales}</p><div style="overflow-x: auto">'
            f"{img(key, pngs[key], columns * zoom_x, rows_ * zoom_y, image.title)}</div>"
            f"{scale_bar(image.colour_map)}</section>"
        )
    out.append('<section id="prediction"><h2>prediction</h2>')
    out.append(img("prediction", pngs["prediction"], 48 * view.prediction_pixels.shape[1], 48, "prediction pixel"))
    out.append(
        f'<p class="answer"><code>{answer}</code> <span class="dim">id {view.prediction.id} · '
        f"confidence {view.confidence:.1%} · pixels {view.prediction_pixels[0].tolist()}</span></p>"
    )
    if view.top_k:
        rows = "".join(
            f'<tr{" class=top" if c.rank == 1 else ""}><td class="num">{c.rank}</td>'
            f"<td><code>{html.escape(c.token.label)}</code></td>"
            f'<td class="num">{c.token.id}</td><td class="num">{c.logit:.4f}</td>'
            f'<td><span class="bar" style="width: {max(1, round(160 * c.probability))}px"></span>'
            f"{c.probability:.2%}</td></tr>"
            for c in view.top_k
        )
        out.append(
            f'<table id="top-k"><thead><tr><th>#</th><th>token</th><th>id</th><th>logit</th><th>probability</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    out.append("</section>")
    return "".join(out)


def scale_bar(colour_map: str | None) -> str:
    if colour_map is None:
        return ""
    bar = io.BytesIO()
    colourbar(colour_map, 256, 1).save(bar, "PNG")
    meaning = "blue &lt; 0 &lt; red" if colour_map == "diverging" else f"-{LOG_SPAN:g} nats (dark) to the top (bright)"
    return f'<div class="scale"><img alt="colour scale" src="{data_uri(bar.getvalue())}"><span>{meaning}</span></div>'


def transformer_index(view: TransformerView, pngs: dict[str, bytes]) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pxgl · watch the transformer think</title><style>{PAGE_STYLE}</style></head>"
        f"<body><main><h1>pxgl · watch the transformer think</h1>{transformer_html(view, pngs)}</main></body></html>\n"
    )


def write_transformer_visuals(out_dir: Path, view: TransformerView) -> dict[str, Any]:
    """Every image, overview.png, trace.npz, index.html and viz.json, rendered in memory, then written as one
    set (index.html and viz.json last); returns the viz.json record."""
    check_output_dir(out_dir, "--out")
    pngs = {key: image.png() for key, image in view.images.items()}
    files: dict[str, bytes] = {f"{key}.png": png for key, png in pngs.items()}
    overview = io.BytesIO()
    overview_sheet(view).save(overview, "PNG")
    files["overview.png"] = overview.getvalue()
    arrays = io.BytesIO()
    np.savez(arrays, **view.arrays)
    files["trace.npz"] = arrays.getvalue()
    files["index.html"] = transformer_index(view, pngs).encode("utf-8")
    record: dict[str, Any] = {"dir": str(out_dir)} | view.record()
    record["files"] = sorted([*files, "viz.json"])
    files["viz.json"] = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PxglError(f"{out_dir}: cannot create the folder ({e.strerror or e})") from None
    last = ("index.html", "viz.json")
    order = [name for name in files if name not in last] + list(last)
    write_files({out_dir / name: lambda tmp, data=files[name]: tmp.write_bytes(data) for name in order})
    return record
