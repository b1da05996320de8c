"""index.html: a self-contained page of a run (every image inlined as a data URI, no script, no external
resource), so it opens from disk with no server."""

import base64
import html
import io

from .colour import colourbar
from .sheet import figure, scale_labels
from .trace import DataImage, TraceView


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


PAGE_STYLE = """
body { background: #111318; color: #e6e8ec; font: 15px/1.45 system-ui, sans-serif; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 6px; } h2 { font-size: 18px; margin: 0 0 4px; }
.answer { font-size: 20px; margin: 4px 0; } .dim { color: #969ca6; font-size: 13px; margin: 2px 0 10px; }
section { background: #1b1e25; border-radius: 8px; padding: 16px 18px; margin: 16px 0; min-width: 0; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px; margin: 16px 0; }
.grid > section { margin: 0; }
img { image-rendering: pixelated; display: block; max-width: 100%; height: auto; }
table { border-collapse: collapse; margin-top: 10px; }
th, td { padding: 3px 12px 3px 0; text-align: left; }
th { color: #969ca6; font-weight: normal; font-size: 13px; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
code { font: 14px ui-monospace, monospace; white-space: pre; }
.swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #969ca6; vertical-align: -2px; }
.bar { display: inline-block; height: 10px; background: #d6604d; margin-right: 6px; }
.scale { display: flex; align-items: center; gap: 8px; font-size: 12px; color: #969ca6; margin-top: 8px; }
.scale img { width: 180px; height: 10px; }
.missing { color: #f4a582; }
tr.top td { color: #00ff66; }
#weights { overflow-x: auto; } #weights img { max-width: none; }
"""


def scale_html(image: DataImage) -> str:
    if image.colour_map is None:
        return ""
    bar = io.BytesIO()
    colourbar(image.colour_map, 256, 1).save(bar, "PNG")
    low, _, high = scale_labels(image)
    meaning = "blue &lt; 0 &lt; red" if image.colour_map == "diverging" else "dark 0, bright the largest"
    return (
        f'<div class="scale"><span>{low}</span><img alt="colour scale" src="{data_uri(bar.getvalue())}">'
        f"<span>{high}</span><span>({meaning})</span></div>"
    )


def image_html(image: DataImage, png: bytes, detail: str) -> str:
    """An image's heading, `detail` (HTML) and caption, the image itself inlined, and its colour scale."""
    return (
        f'<h2>{html.escape(image.title)}</h2><p class="dim">{detail} · {html.escape(image.caption)}</p>'
        f'<img id="img-{image.key}" alt="{html.escape(image.title)}" src="{data_uri(png)}" '
        f'width="{image.image.width}" height="{image.image.height}">{scale_html(image)}'
    )


def index_html(view: TraceView | None, weights: DataImage | None, pngs: dict[str, bytes]) -> str:
    """A self-contained page: every image inlined as a data URI, no script, no external resource."""
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>pxgl · see the model think</title><style>{PAGE_STYLE}</style></head>",
        "<body><main><h1>pxgl · see the model think</h1>",
    ]
    if view is not None:
        parts.append(trace_html(view, pngs))
    if weights is not None:
        detail = "each tensor's byte range tinted and outlined"
        parts.append(f'<section id="weights">{image_html(weights, pngs["weights"], detail)}</section>')
    parts.append("</main></body></html>\n")
    return "".join(parts)


def trace_html(view: TraceView, pngs: dict[str, bytes]) -> str:
    prompt = repr(view.prompt) if view.prompt is not None else "a token texture"
    answer = html.escape(view.prediction.label)
    out = [
        f'<p class="answer"><code>{html.escape(prompt)}</code> → <code>{answer}</code> '
        f"<span class=dim>id {view.prediction.id} · confidence {view.confidence:.1%}</span></p>",
        f'<p class="dim">{html.escape(" · ".join(view.about.values()))}</p>',
    ]
    tokens = view.images["tokens"]
    rows = "".join(
        f'<tr><td class="num">{c.position}</td><td><span class="swatch" style="background: rgb{c.pixel}"></span> '
        f'{c.pixel}</td><td class="num">{c.token.id}</td><td><code>{html.escape(c.token.label)}</code></td></tr>'
        for c in view.tokens
        if c.token is not None
    )
    out.append('<section id="tokens">')
    detail = f"{tokens.texels[1]}&times;{tokens.texels[0]} RGB, {html.escape(view.tokens_read())}"
    out.append(image_html(tokens, pngs["tokens"], detail))
    out.append(
        '<table id="tokens-table"><thead><tr><th>pos</th><th>pixel</th><th>id</th><th>token</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )
    strips = view.strips
    if strips:
        out.append('<div class="grid">')
        for key in strips:
            image = view.images[key]
            extra = image.extra
            detail = f"{extra['length']} float32, min {figure(extra['min'])}, max {figure(extra['max'])}"
            out.append(f'<section id="{key}">{image_html(image, pngs[key], detail)}</section>')
        out.append("</div>")
    out.append('<div class="grid">')
    if "logits" in view.images:
        heat = view.images["logits"]
        side = heat.texels[0]
        detail = f"{side}&times;{side} float32, {heat.extra['vocab']} tokens"
        out.append(f'<section id="logits">{image_html(heat, pngs["logits"], detail)}</section>')
    prediction = view.images["prediction"]
    out.append('<section id="prediction">')
    out.append(image_html(prediction, pngs["prediction"], f"RGB {view.prediction_pixel}"))
    out.append(
        f'<p class="answer"><code>{answer}</code> <span class="dim">id {view.prediction.id} · '
        f"confidence {view.confidence:.1%}</span></p>"
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
            f'<h2 style="margin-top: 18px">top {len(view.top_k)}</h2><table id="top-k"><thead><tr><th>#</th>'
            f"<th>token</th><th>id</th><th>logit</th><th>probability</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    if "probabilities" in view.images:
        out.append('<div style="margin-top: 18px">')
        out.append(image_html(view.images["probabilities"], pngs["probabilities"], "all tokens") + "</div>")
    for title in view.missing:
        out.append(f'<p class="missing">{html.escape(title)}: not kept by this executor, so not shown.</p>')
    out.append("</section></div>")
    return "".join(out)
