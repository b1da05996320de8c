"""A run seen (docs/FORMATS.md §13.1): report.png (best selection score against training steps spent, for
this run and any baselines given; the lineage tree; the champion's architecture and weight image) and
index.html, self-contained (images inlined, no script), drawn with engine/visuals' colours and page."""

import html
import io
import itertools
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..visuals.colour import BACKGROUND, RGB, drawable, font
from ..visuals.page import PAGE_STYLE, data_uri
from .proposers import scored, selection_loss
from .rundir import LINEAGE, RunDir

PANEL = (600, 360)
MARGIN = (64, 28, 16, 40)
"""left, top, right, bottom of a plot inside its panel."""
INK, DIM, GRID = (230, 232, 236), (150, 156, 166), (52, 56, 66)
SERIES = (
    (214, 96, 77), (67, 147, 195), (120, 198, 121), (253, 174, 97), (178, 171, 210), (237, 110, 180), (141, 211, 199),
    (255, 237, 111),
)  # fmt: skip
CHAMPION = (0, 255, 102)


def best_so_far(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(training steps spent, best selection bits/byte yet) after each screening candidate, by id."""
    spent, best, points = 0, float("inf"), []
    screened = [r for r in records if r.get("kind") == "candidate" and r["stage"] == "screen"]
    for record in sorted(screened, key=lambda r: r["id"]):
        spent += record["cost"]["steps"]
        if "scores" in record:
            best = min(best, selection_loss(record))
        if best < float("inf"):
            points.append((spent, best))
    return points


def integer_ticks(low: float, high: float, most: int = 6) -> list[int]:
    """Distinct integers in [low, high] a round step apart (1, 2 or 5 times a power of ten), at most `most`."""
    span = max(high - low, 1)
    step = next(s for s in (m * 10**e for e in range(20) for m in (1, 2, 5)) if span / s <= most - 1)
    return list(range(math.ceil(low / step) * step, math.floor(high) + 1, step))


def write(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: RGB, size: int) -> None:
    """Text at xy, moved left or up just enough to lie inside the image (never cut at its edge)."""
    shown = drawable(text)
    left, top, right, bottom = draw.textbbox(xy, shown, font=font(size))
    width, height = draw.im.size
    x = xy[0] - max(0.0, right - width) - min(0.0, left)
    y = xy[1] - max(0.0, bottom - height) - min(0.0, top)
    draw.text((x, y), shown, fill=fill, font=font(size))


def wrapped(draw: ImageDraw.ImageDraw, text: str, width: float, size: int) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken at spaces (a word wider than that stands alone)."""
    lines: list[str] = []
    for word in text.split(" "):
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(drawable(joined), font=font(size)) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


class Plot:
    """A panel with axes mapping data (x, y) onto its pixels; x is a count (steps, ids): integer ticks."""

    def __init__(self, title: str, xs: list[float], ys: list[float], x_label: str, y_label: str) -> None:
        self.image = Image.new("RGB", PANEL, BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.x0, self.x1 = min(xs, default=0), max(xs, default=1)
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        self.y0, self.y1 = min(ys, default=0), max(ys, default=1)
        pad = (self.y1 - self.y0) * 0.05 or 0.05
        self.y0, self.y1 = self.y0 - pad, self.y1 + pad
        left, top, right, bottom = MARGIN
        self.box = (left, top, PANEL[0] - right, PANEL[1] - bottom)
        write(self.draw, (left, 6), title, INK, 14)
        for i in range(5):
            y = self.y0 + (self.y1 - self.y0) * i / 4
            _, py = self.at(self.x0, y)
            self.draw.line([(left, py), (self.box[2], py)], fill=GRID)
            digits = max(3, 1 - math.floor(math.log10(max(self.y1 - self.y0, 1e-9) / 4)))  # ticks that differ
            write(self.draw, (4, py - 7), f"{y:.{digits}f}", DIM, 11)
        for x in integer_ticks(self.x0, self.x1):
            px, _ = self.at(x, self.y0)
            label = f"{x:,}"
            write(self.draw, (px - self.draw.textlength(label, font=font(11)) / 2, self.box[3] + 6), label, DIM, 11)
        write(self.draw, (left, PANEL[1] - 16), x_label, DIM, 11)
        write(self.draw, (PANEL[0] - 8 - self.draw.textlength(y_label, font=font(11)), 6), y_label, DIM, 11)

    def at(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (
            left + (x - self.x0) / (self.x1 - self.x0) * (right - left),
            bottom - (y - self.y0) / (self.y1 - self.y0) * (bottom - top),
        )


def draw_curves(runs: list[tuple[str, list[dict[str, Any]]]]) -> Image.Image:
    curves = [(label, best_so_far(records)) for label, records in runs]
    xs = [x for _, points in curves for x, _ in points]
    ys = [y for _, points in curves for _, y in points]
    plot = Plot("best selection score vs training steps spent", xs, ys, "training steps", "bits/byte (lower wins)")
    for index, (label, points) in enumerate(curves):
        colour = SERIES[index % len(SERIES)]
        steps = [plot.at(points[0][0], points[0][1])] if points else []
        for (_, y_before), (x, y) in itertools.pairwise(points):
            steps += [plot.at(x, y_before), plot.at(x, y)]
        if len(steps) > 1:
            plot.draw.line(steps, fill=colour, width=2)
        write(plot.draw, (plot.box[2] - 160, plot.box[1] + 16 * index + 24), label[:24], colour, 12)
    return plot.image


def draw_tree(records: list[dict[str, Any]], champion: int | None) -> Image.Image:
    """Every scored candidate at (id, selection bits/byte), a line from its parent."""
    points = {r["id"]: (r["id"], selection_loss(r)) for r in records if r.get("scores", {}).get("select")}
    finals = {r["id"] for r in records if r.get("stage") == "final"}
    plot = Plot(
        "lineage: candidates by id, lines from parents",
        [x for x, _ in points.values()],
        [y for _, y in points.values()],
        "candidate id",
        "selection bits/byte",
    )
    for record in records:
        parent = record.get("parent")
        if record["id"] in points and parent in points:
            plot.draw.line([plot.at(*points[parent]), plot.at(*points[record["id"]])], fill=DIM, width=1)
    for candidate, (x, y) in points.items():
        px, py = plot.at(x, y)
        colour = CHAMPION if candidate == champion else SERIES[1] if candidate in finals else SERIES[0]
        radius = 5 if candidate == champion else 3
        plot.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)
    return plot.image


def weights_image(cartridge: Path) -> Image.Image | None:
    from ..loading import load_model
    from ..visuals import weights_view

    if not cartridge.is_file():
        return None
    image = weights_view(load_model(cartridge)).image
    scale = min(1.0, 2 * PANEL[0] / image.width)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)


def compose(panels: list[Image.Image], text: list[str]) -> Image.Image:
    """Curves and tree side by side, the champion's words (wrapped to the width) and weight image below."""
    plots, weights = panels[:2], panels[2:]
    width = PANEL[0] * 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [line for paragraph in text for line in wrapped(measure, paragraph, width - 24, 13)]
    text_height = 18 * len(lines) + 12
    height = PANEL[1] + text_height + sum(w.height + 8 for w in weights)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    for index, plot in enumerate(plots):
        sheet.paste(plot, (PANEL[0] * index, 0))
    draw = ImageDraw.Draw(sheet)
    for index, line in enumerate(lines):
        write(draw, (12, PANEL[1] + 6 + 18 * index), line, INK, 13)
    y = PANEL[1] + text_height
    for image in weights:
        sheet.paste(image, (0, y))
        y += image.height + 8
    return sheet


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_report(run: RunDir, baselines: list[tuple[str, list[dict[str, Any]]]]) -> list[Path]:
    """report.png and index.html of the run (with the baselines' curves); returns their paths."""
    from ..outputs import atomic_write

    settings = run.settings()
    records = run.read(LINEAGE)
    candidates = [r for r in records if r.get("kind") == "candidate"]
    promotion = next((r for r in reversed(records) if r.get("kind") == "promotion"), None)
    champion = promotion["champion"] if promotion else None
    curves = draw_curves([(settings["proposer"][:24], candidates), *baselines])
    tree = draw_tree(candidates, champion)
    words = summary_lines(settings, candidates, promotion)
    champion_cartridge = next((r["cartridge"] for r in candidates if r["id"] == champion and "cartridge" in r), "")
    weights = weights_image(run.path / champion_cartridge) if champion_cartridge else None
    sheet = compose([curves, tree, *([weights] if weights else [])], words)
    pages = {"report.png": png(sheet), "index.html": page(words, candidates, [curves, tree], weights).encode()}
    written = []
    for name, data in pages.items():
        atomic_write(run.path / name, lambda tmp, data=data: tmp.write_bytes(data))
        written.append(run.path / name)
    return written


def summary_lines(settings: dict[str, Any], candidates: list[dict[str, Any]], promotion: dict | None) -> list[str]:
    scored_count = len(scored(candidates))
    lines = [
        f"proposer {settings['proposer'][:60]}, seed {settings['seed']}, budget {settings['budget']:,} steps, "
        f"{len(candidates)} candidates ({scored_count} screened and scored)"
    ]
    if promotion is None:
        return [*lines, "running: no champion yet"]
    gain, start = promotion["gain_bits_per_byte"], promotion["start"]
    verdict = "promoted to champion.pxa" if promotion["promoted"] else "not promoted (the start model is better)"
    return [
        *lines,
        f"champion c{promotion['champion']:04d}: {promotion['architecture']}",
        f"held-out {promotion['heldout']['bits_per_byte']:.4f} bits/byte vs the start model's "
        f"{start['heldout']['bits_per_byte']:.4f} ({start['model'][-40:]}), {abs(gain):.4f} in the "
        f"{'champion' if gain > 0 else 'start model'}'s favour; {verdict}",
    ]


def page(
    words: list[str], candidates: list[dict[str, Any]], plots: list[Image.Image], weights: Image.Image | None
) -> str:
    rows = []
    for r in sorted(candidates, key=lambda r: r["id"]):
        score = f"{selection_loss(r):.4f}" if r.get("scores", {}).get("select") else ""
        about = r.get("architecture") or r.get("error", "")
        rows.append(
            f"<tr><td>c{r['id']:04d}</td><td>{r['stage']}</td><td>{'' if r['parent'] is None else r['parent']}</td>"
            f"<td>{html.escape(str(r['mutation']))}</td><td class=num>{score}</td>"
            f"<td class=num>{r['cost']['steps']:,}</td><td>{html.escape(str(about)[:160])}</td></tr>"
        )
    images = "".join(f'<section><img alt="plot" src="{data_uri(png(p))}"></section>' for p in plots)
    weight_html = (
        f'<section id="weights"><h2>champion weights</h2><img alt="weights" src="{data_uri(png(weights))}"></section>'
        if weights
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>pxgl evolve</title><style>{PAGE_STYLE}</style>"
        f"</head><body><main><h1>pxgl evolve</h1>{''.join(f'<p>{html.escape(w)}</p>' for w in words)}"
        f'<div class="grid">{images}</div>{weight_html}<section><h2>lineage</h2><table><tr><th>id</th><th>stage</th>'
        f"<th>parent</th><th>mutation</th><th>selection bits/byte</th><th>steps</th><th>architecture</th></tr>"
        f"{''.join(rows)}</table></section></main></body></html>\n"
    )
