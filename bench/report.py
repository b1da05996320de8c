"""The bench's outputs: results JSON, a markdown table and a PNG plot (throughput vs batch size, log axes,
one line per system), drawn with Pillow."""

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pxgl.pxi import atomic_write

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
PLOT_SIZE = (960, 600)
MARGIN = {"left": 90, "right": 30, "top": 50, "bottom": 60}


def si(value: float) -> str:
    """1234567 → '1.23M'."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def write_json(path: Path, results: dict) -> None:
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def markdown(results: dict) -> str:
    systems = results["systems"]
    sizes = results["batch_sizes"]
    lines = [
        f"# pxgl bench: {results['device']} ({results['date']})",
        "",
        f"{results['gl_version']} · host {results['host']} · model {results['model']['name']} "
        f"({results['model']['shape']}) · prompts of {results['prompt_tokens']} tokens · seed {results['seed']}",
        "",
        "Every time below counts only after its predictions matched the oracle (tests/oracle.py).",
        "",
        "## Single prompt, warm (token ids in host memory → prediction pixel in host memory)",
        "",
        "| system | median µs | p99 µs | calls |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, s in systems.items():
        latency = s.get("latency")
        if latency and "median_us" in latency:
            lines.append(f"| {name} | {latency['median_us']:.1f} | {latency['p99_us']:.1f} | {latency['calls']} |")
        elif latency:
            lines.append(f"| {name} | {latency['skipped']} | | |")
    lines += [
        "",
        "## Batched throughput, prompts/s",
        "",
        "| system | " + " | ".join(f"B = {b:,}" for b in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for name, s in systems.items():
        cells = []
        for b in sizes:
            entry = s.get("throughput", {}).get(str(b))
            cells.append("" if entry is None else si(entry["prompts_per_s"]) if "prompts_per_s" in entry else "—")
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    skipped = [
        f"- {name}, B = {b}: {entry['skipped']}"
        for name, s in systems.items()
        for b, entry in s.get("throughput", {}).items()
        if "skipped" in entry
    ]
    lines += ["", *skipped] if skipped else []
    cold = [(name, s["cold_infer"]) for name, s in systems.items() if s.get("cold_infer")]
    if cold:
        lines += [
            "",
            f'## Cold `pxgl infer "{results["cold_prompt"]}"`, a new process',
            "",
            "Measured before any other system runs. First run: as after an install, pxgl's prepared weights and the",
            "GL driver's shaders not cached yet; then the caches as the run before left them.",
            "",
            "| executor | median s | runs | first run s |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, c in cold:
            if "median_s" in c:
                first = f"{c['first_run_s']:.3f}" if "first_run_s" in c else ""
                lines.append(f"| {name} | {c['median_s']:.3f} | {len(c['runs_s'])} | {first} |")
            else:
                lines.append(f"| {name} | {c['skipped']} | | |")
    notes = [f"- {name}: {s['notes']}" for name, s in systems.items() if s.get("notes")]
    notes += [f"- {reason}" for reason in results.get("skipped", [])]
    lines += ["", "## Systems", "", *notes, ""]
    return "\n".join(lines)


def write_markdown(path: Path, results: dict) -> None:
    text = markdown(results)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def plot(path: Path, results: dict) -> None:
    """Throughput vs batch size on log-log axes, one line per system that has batch figures."""
    series = {
        name: [(int(b), e["prompts_per_s"]) for b, e in s.get("throughput", {}).items() if "prompts_per_s" in e]
        for name, s in results["systems"].items()
    }
    series = {name: sorted(points) for name, points in series.items() if points}
    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    width, height = PLOT_SIZE
    left, right = MARGIN["left"], width - MARGIN["right"]
    top, bottom = MARGIN["top"], height - MARGIN["bottom"]
    sizes = results["batch_sizes"]
    rates = [r for points in series.values() for _, r in points] or [1.0]
    x_lo, x_hi = math.log10(min(sizes)), math.log10(max(sizes))
    y_lo, y_hi = math.floor(math.log10(min(rates))), math.ceil(math.log10(max(rates)))
    y_hi = max(y_hi, y_lo + 1)

    def x_of(b: float) -> float:
        return left + (math.log10(b) - x_lo) / max(x_hi - x_lo, 1e-9) * (right - left)

    def y_of(r: float) -> float:
        return bottom - (math.log10(r) - y_lo) / (y_hi - y_lo) * (bottom - top)

    small, label = font(13), font(16)
    for decade in range(y_lo, y_hi + 1):
        y = y_of(10**decade)
        draw.line([(left, y), (right, y)], fill="#dddddd")
        draw.text((left - 8, y), f"{si(10**decade)}/s", fill="black", font=small, anchor="rm")
    for b in sizes:
        x = x_of(b)
        draw.line([(x, top), (x, bottom)], fill="#eeeeee")
        draw.text((x, bottom + 8), f"{b:,}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((width / 2, 12), f"{results['device']} · {results['date']}", fill="black", font=label, anchor="mt")
    draw.text((width / 2, height - 22), "prompts per batch (log)", fill="black", font=small, anchor="mt")
    draw.text((12, top - 28), "prompts/s (log)", fill="black", font=small)
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        xy = [(x_of(b), y_of(r)) for b, r in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3)
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        legend_y = top + 12 + 20 * i
        draw.line([(left + 14, legend_y), (left + 40, legend_y)], fill=colour, width=3)
        draw.text((left + 48, legend_y), name, fill="black", font=small, anchor="lm")
    atomic_write(path, lambda tmp: image.save(tmp, "PNG"))
