"""The weight texture drawn with each tensor's bytes tinted in its colour and outlined, a legend naming
them beside the rows they span, and a magnified detail of the tensors too thin to see."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..model import Model
from ..spec import ModelSpec
from .colour import BACKGROUND, DIM_INK, INK, RGB, TENSOR_COLOURS, TINT_ALPHA, font
from .trace import DataImage

WEIGHTS_TARGET_PX = 960
OUTLINE_PX = 2
DETAIL_ZOOM = 12
DETAIL_MAX_ROWS = 4
DETAIL_MAX_LINES = 16
"""The weights image magnifies the part of the stream that holds the tensors under DETAIL_MAX_ROWS rows
tall (the biases), DETAIL_ZOOM pixels a texel, DETAIL_MAX_LINES lines at most."""


@dataclass(frozen=True)
class Region:
    name: str
    """As the meta spells it."""
    tensor: str
    """The spec's (version-1) name."""
    shape: tuple[int, ...]
    start: int
    end: int
    """Bytes start..end-1 of the row-major stream."""
    colour: RGB


def weights_zoom(width: int) -> float:
    """Output pixels per texel: a multiple of 3 when that fits (each byte then gets its own third of a
    pixel, so region edges fall exactly on byte boundaries), else whole pixels, else a downsampling."""
    n = WEIGHTS_TARGET_PX // width
    if n >= 3:
        return float(n - n % 3)
    return float(n) if n >= 1 else 1 / math.ceil(width / WEIGHTS_TARGET_PX)


def byte_owner(bytes_index: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
    """Index into `regions` (sorted by start) of the tensor holding each byte, -1 where none does."""
    starts = np.array([r.start for r in regions])
    ends = np.array([r.end for r in regions])
    at = np.searchsorted(starts, bytes_index, side="right") - 1
    inside = (at >= 0) & (bytes_index < ends[at.clip(0)])
    return np.where(inside, at, -1)


@dataclass(frozen=True)
class StreamSpan:
    """Pixels first_pixel .. first_pixel + pixels - 1 of the weight stream, drawn `width` texels per line
    at `zoom` output pixels per texel, top-left at `origin` of the weights image."""

    first_pixel: int
    pixels: int
    width: int
    zoom: float
    origin: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        lines = math.ceil(self.pixels / self.width)
        return max(1, round(self.width * self.zoom)), max(1, round(lines * self.zoom))

    def layout(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def render_span(stream: np.ndarray, regions: Sequence[Region], span: StreamSpan) -> np.ndarray:
    """The span's texels upscaled, each output pixel tinted with the colour of the tensor that owns the
    byte under it (with a zoom of 3k, the three bytes of a texel are its left, middle and right third)."""
    out_w, out_h = span.size
    line = ((np.arange(out_h) + 0.5) / span.zoom).astype(np.int64)
    column_f = (np.arange(out_w) + 0.5) / span.zoom
    column = column_f.astype(np.int64).clip(0, span.width - 1)
    channel = ((column_f - column) * 3).astype(np.int64).clip(0, 2)
    pixel = line[:, None] * span.width + column[None, :]
    inside = pixel < span.pixels
    pixel = span.first_pixel + np.where(inside, pixel, 0)
    owner = np.where(inside, byte_owner(pixel * 3 + channel[None, :], regions), -1)
    texels = stream[pixel].astype(np.uint16)
    palette = np.array([r.colour for r in regions] + [(0, 0, 0)], dtype=np.uint16)
    tinted = (texels * (256 - TINT_ALPHA) + palette[owner] * TINT_ALPHA + 128) >> 8
    out = np.where((owner >= 0)[..., None], tinted, texels).astype(np.uint8)
    out[~inside] = BACKGROUND
    return out


def region_outline(start: int, end: int, width: int) -> list[tuple[float, float]]:
    """The polygon, in texels, around bytes start..end-1 of a row-major RGB stream `width` texels wide:
    a first partial row, full rows, a last partial row, with edges at byte (third-of-a-texel) precision."""
    row_bytes = 3 * width
    first_row, first_x = divmod(start, row_bytes)
    last_row, last_x = divmod(end - 1, row_bytes)
    x0, x1 = first_x / 3, (last_x + 1) / 3
    if first_row == last_row:
        return [(x0, first_row), (x1, first_row), (x1, last_row + 1), (x0, last_row + 1)]
    return [
        (x0, first_row),
        (width, first_row),
        (width, last_row),
        (x1, last_row),
        (x1, last_row + 1),
        (0, last_row + 1),
        (0, first_row + 1),
        (x0, first_row + 1),
    ]


def draw_span(canvas: Image.Image, stream: np.ndarray, regions: Sequence[Region], span: StreamSpan) -> int:
    """Paste the tinted span and outline each tensor's part of it; returns the outline width."""
    canvas.paste(Image.fromarray(render_span(stream, regions, span), "RGB"), span.origin)
    outline = max(1, min(OUTLINE_PX, int(span.zoom) // 3))
    draw = ImageDraw.Draw(canvas)
    first_byte, end_byte = 3 * span.first_pixel, 3 * (span.first_pixel + span.pixels)
    for region in regions:
        start, end = max(region.start, first_byte), min(region.end, end_byte)
        if start < end:
            points = region_outline(start - first_byte, end - first_byte, span.width)
            scaled = [(span.origin[0] + x * span.zoom, span.origin[1] + y * span.zoom) for x, y in points]
            draw.line([*scaled, scaled[0]], fill=region.colour, width=outline)
    return outline


def weights_view(model: Model) -> DataImage:
    """The weight texture with each tensor's bytes tinted in its colour and outlined, a legend naming
    them beside the rows they span, and, where some tensor spans only a few rows, a magnified detail of
    that part of the stream."""
    spec = model.spec
    regions = [
        Region(
            spec.meta_name(t.name),
            t.name,
            t.shape,
            t.offset,
            t.offset + t.size,
            TENSOR_COLOURS[i % len(TENSOR_COLOURS)],
        )
        for i, t in enumerate(sorted(spec.tensors.values(), key=lambda t: t.offset))
    ]
    stream = model.weights.reshape(-1, 3)
    height, width = spec.image_height, spec.image_width
    margin, header = 16, 64
    main = StreamSpan(0, height * width, width, weights_zoom(width), (margin, header))
    main_w, main_h = main.size
    detail = detail_span(regions, width, main.zoom, main_w, (margin, header + main_h + 44))
    legend_x = margin + main_w + 24
    bottom = detail.origin[1] + detail.size[1] if detail else header + main_h
    legend_bottom = legend_places(regions, spec, header, main.zoom)[-1][2] + LEGEND_LINE_PX
    canvas = Image.new("RGB", (legend_x + 330, math.ceil(max(bottom, legend_bottom)) + margin), BACKGROUND)
    outline = draw_span(canvas, stream, regions, main)
    draw = ImageDraw.Draw(canvas)
    used = sum(r.end - r.start for r in regions)
    draw.text((margin, 12), f"weight texture · {width}x{height} RGB", font=font(22), fill=INK)
    if main.zoom < 1:
        scale_note = f"every {round(1 / main.zoom)}th texel shown"
    else:
        scale_note = f"each texel {main.zoom:g}x{main.zoom:g} pixels"
        scale_note += ", each byte a third of it" if main.zoom % 3 == 0 else ""
    note = f"{used:,} of {spec.image_bytes:,} bytes hold the {len(regions)} tensors · {scale_note}"
    draw.text((margin, 40), note, font=font(13), fill=DIM_INK)
    if detail is not None:
        draw_span(canvas, stream, regions, detail)
        first, last = 3 * detail.first_pixel, 3 * (detail.first_pixel + detail.pixels) - 1
        draw.text(
            (margin, detail.origin[1] - 24),
            f"detail: bytes {first:,} .. {last:,}, {detail.width} texels a line, each {detail.zoom:g}x{detail.zoom:g}",
            font=font(13),
            fill=DIM_INK,
        )
    draw_weights_legend(draw, regions, spec, (legend_x, header), main.zoom)
    extra = {
        "zoom": main.zoom,
        "outline": outline,
        "regions": {r.name: [r.start, r.end] for r in regions},
        "detail": detail.layout() if detail else None,
    }
    caption = f"{width}x{height} RGB; {note}"
    return DataImage("weights", "weight texture", caption, canvas, (height, width), None, main.origin, extra=extra)


def detail_span(
    regions: Sequence[Region], width: int, zoom: float, span_w: int, origin: tuple[int, int]
) -> StreamSpan | None:
    """A magnified view of the stream around the tensors that span fewer than DETAIL_MAX_ROWS rows (the
    biases, in a pixellm model), or None when every tensor is large enough to see."""
    if zoom >= DETAIL_ZOOM:
        return None
    thin = [r for r in regions if (r.end - 1) // (3 * width) - r.start // (3 * width) + 1 < DETAIL_MAX_ROWS]
    if not thin:
        return None
    per_line = max(1, span_w // DETAIL_ZOOM)
    first = min(r.start for r in thin) // 3
    last = math.ceil(max(r.end for r in thin) / 3)
    pixels = min(last - first + per_line, DETAIL_MAX_LINES * per_line)
    return StreamSpan(first, pixels, per_line, float(DETAIL_ZOOM), origin)


LEGEND_LINE_PX = 72
"""A tensor's four legend lines."""


def legend_places(regions: list[Region], spec: ModelSpec, top: int, zoom: float) -> list[tuple[float, float, float]]:
    """(first row's y, last row's y, label's y) of each tensor: its label beside the rows it spans, pushed down
    where small tensors share rows, so labels never overlap."""
    row_bytes = 3 * spec.image_width
    places, next_free = [], 0.0
    for region in regions:
        y0 = top + region.start // row_bytes * zoom
        y1 = top + ((region.end - 1) // row_bytes + 1) * zoom
        label_y = max(next_free, (y0 + y1) / 2 - LEGEND_LINE_PX / 2)
        places.append((y0, y1, label_y))
        next_free = label_y + LEGEND_LINE_PX + 8
    return places


def draw_weights_legend(
    draw: ImageDraw.ImageDraw, regions: list[Region], spec: ModelSpec, at: tuple[int, int], zoom: float
) -> None:
    """Each tensor's name, shape, byte range and quantization beside the rows it spans, joined to them by
    a bracket."""
    x, top = at
    for region, (y0, y1, label_y) in zip(regions, legend_places(regions, spec, top, zoom), strict=True):
        draw.line([(x, y0), (x, max(y1 - 1, y0))], fill=region.colour, width=3)
        draw.line([(x + 2, (y0 + y1) / 2), (x + 14, label_y + 10)], fill=region.colour, width=1)
        tensor = spec.tensors[region.tensor]
        shape = "x".join(str(d) for d in region.shape)
        lines = (
            (region.name, 17, region.colour),
            (f"[{shape}]  {region.end - region.start:,} bytes", 13, INK),
            (f"bytes {region.start:,} .. {region.end - 1:,}", 13, DIM_INK),
            (f"w = (q - {tensor.zero_point}) * {tensor.scale:.4g}", 13, DIM_INK),
        )
        y = label_y
        for text, size, fill in lines:
            draw.text((x + 18, y), text, font=font(size), fill=fill)
            y += size + 4
