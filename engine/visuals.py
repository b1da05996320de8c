"""Visual AI: the textures of a real GPU run drawn as images, so you can see the model think.

Everything shown comes from `Engine.trace` (the textures read back from the GPU) or from the weight
texture itself; nothing here recomputes an activation. Images are nearest-neighbour upscaled (each texel
a solid block), signed values use one diverging colour map (blue < 0 < red, symmetric scale ±s), and
the data images carry their layout in PNG text chunks (`pxgl:*`) so they can be read back exactly.

Outputs of `write_visuals`: tokens.png, embed.png, hidden.png, logits.png, prediction.png (those the
executor produced), weights.png (with --weights), overview.png (a labelled contact sheet),
index.html (everything, images inlined as data URIs: opens from disk with no server), trace.npz (the
read-back arrays, exact) and viz.json (what was drawn, with scales, layout and the top-k)."""

import base64
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .errors import PxglError
from .executor import Trace
from .model import Model
from .pxi import TOKEN_MARK, atomic_write, token_ids, token_lengths
from .spec import ModelSpec

if TYPE_CHECKING:
    from .engine import Engine
    from .tokenizer import Tokenizer

RGB = tuple[int, int, int]

DIVERGING_ANCHORS: tuple[RGB, ...] = (
    (5, 48, 97),
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
    (103, 0, 31),
)
"""ColorBrewer RdBu reversed: negative blue, zero near-white, positive red. For signed values."""
SEQUENTIAL_ANCHORS: tuple[RGB, ...] = (
    (0, 0, 4),
    (40, 11, 84),
    (101, 21, 110),
    (159, 42, 99),
    (212, 72, 66),
    (245, 125, 21),
    (250, 193, 39),
    (252, 255, 164),
)
"""Inferno-like, dark to bright: for probabilities, 0 to the largest."""
COLOUR_LEVELS = 255
"""An odd number of levels, so that zero falls exactly on the diverging map's middle anchor."""
NO_VALUE: RGB = (58, 58, 66)
"""Cells with no value: T_logits cells past the vocabulary, and non-finite values."""
MARKER: RGB = (0, 255, 102)
MARKER_EDGE: RGB = (0, 0, 0)
BACKGROUND: RGB = (17, 19, 24)
INK: RGB = (230, 232, 236)
DIM_INK: RGB = (150, 156, 166)
TENSOR_COLOURS: tuple[RGB, ...] = ((255, 90, 60), (255, 220, 0), (0, 190, 255), (230, 70, 255), (60, 230, 90))
TINT_ALPHA = 96
"""Weight pixels are tinted with their tensor's colour at 96/256 (they stay recognisable)."""

DEFAULT_TOP_K = 10
HEATMAP_TARGET_PX = 512
PROBABILITY_TARGET_PX = 320
STRIP_TARGET_PX = 512
STRIP_HEIGHT_PX = 40
STRIP_MAX_TEXELS_PER_ROW = 256
"""Longer vectors fold into several rows so that any model size keeps a readable image."""
TOKEN_BLOCK_MAX_PX = 40
PREDICTION_BLOCK_PX = 96
WEIGHTS_TARGET_PX = 960
OUTLINE_PX = 2
DETAIL_ZOOM = 12
DETAIL_MAX_ROWS = 4
DETAIL_MAX_LINES = 16
"""The weights image magnifies the part of the stream that holds the tensors under DETAIL_MAX_ROWS rows
tall (the biases), DETAIL_ZOOM pixels a texel, DETAIL_MAX_LINES lines at most."""


# --- colour and pixels ------------------------------------------------------------------------------


@cache
def colour_lut(anchors: tuple[RGB, ...]) -> np.ndarray:
    """(COLOUR_LEVELS, 3) uint8: the anchors interpolated linearly in sRGB."""
    anchors = np.asarray(anchors, dtype=np.float64)
    at = np.linspace(0, len(anchors) - 1, COLOUR_LEVELS)
    lo = np.floor(at).astype(int).clip(0, len(anchors) - 2)
    t = (at - lo)[:, None]
    return np.round(anchors[lo] * (1 - t) + anchors[lo + 1] * t).astype(np.uint8)


def diverging_lut() -> np.ndarray:
    return colour_lut(DIVERGING_ANCHORS)


def sequential_lut() -> np.ndarray:
    return colour_lut(SEQUENTIAL_ANCHORS)


def colour_scale(values: np.ndarray) -> float:
    """±scale of the colour map: the largest finite |value| (1 when there is none, or all are 0)."""
    finite = np.abs(values[np.isfinite(values)])
    largest = float(finite.max()) if finite.size else 0.0
    return largest if largest > 0 else 1.0


def diverging(values: np.ndarray, scale: float) -> np.ndarray:
    """Map values in [-scale, scale] to colours (clipped outside); non-finite values get NO_VALUE."""
    finite = np.isfinite(values)
    unit = np.where(finite, values, 0).astype(np.float64) / scale
    level = np.round((np.clip(unit, -1, 1) + 1) * (COLOUR_LEVELS - 1) / 2).astype(np.intp)
    colours = diverging_lut()[level]
    colours[~finite] = NO_VALUE
    return colours


def sequential(values: np.ndarray, top: float) -> np.ndarray:
    """Map values in [0, top] to dark..bright colours (clipped outside); non-finite values get NO_VALUE."""
    finite = np.isfinite(values)
    unit = np.where(finite, values, 0).astype(np.float64) / top
    colours = sequential_lut()[np.round(np.clip(unit, 0, 1) * (COLOUR_LEVELS - 1)).astype(np.intp)]
    colours[~finite] = NO_VALUE
    return colours


def softmax(logits: np.ndarray) -> np.ndarray:
    """float64 probabilities of the logits read back (for display: top-k and the probability map)."""
    shifted = np.exp(logits.astype(np.float64) - float(np.max(logits)))
    return shifted / shifted.sum()


def upscale(pixels: np.ndarray, block_w: int, block_h: int) -> np.ndarray:
    """Nearest-neighbour: every texel becomes a block_w x block_h block of its colour."""
    return np.repeat(np.repeat(pixels, block_h, axis=0), block_w, axis=1)


def fold(vector: np.ndarray) -> np.ndarray:
    """A vector as rows of at most STRIP_MAX_TEXELS_PER_ROW texels (padded with NaN: no value)."""
    width = min(len(vector), STRIP_MAX_TEXELS_PER_ROW)
    rows = math.ceil(len(vector) / width)
    grid = np.full(rows * width, np.nan, dtype=np.float32)
    grid[: len(vector)] = vector
    return grid.reshape(rows, width)


# --- what a trace shows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataImage:
    """One texture drawn as an image: `texels` (h, w) of the source, each a block_w x block_h block (the
    weights image gives its zoom instead), the top-left one at `origin` (x, y) of `image`; `scale` is
    the colour map's ± range when values are colour-mapped (None for RGB textures shown as they are)."""

    key: str
    title: str
    caption: str
    image: Image.Image
    texels: tuple[int, int]
    block: tuple[int, int] | None
    origin: tuple[int, int] = (0, 0)
    scale: float | None = None
    colour_map: str | None = None
    """"diverging" (values -scale..scale) or "sequential" (0..scale); None for RGB shown as it is."""
    extra: dict[str, Any] = field(default_factory=dict)

    def layout(self) -> dict[str, Any]:
        return {
            "file": f"{self.key}.png",
            "title": self.title,
            "texels": list(self.texels),
            "block": list(self.block) if self.block else None,
            "origin": list(self.origin),
            "scale": self.scale,
            "colour_map": self.colour_map,
        } | self.extra

    def png(self) -> bytes:
        info = PngImagePlugin.PngInfo()
        for name, value in self.layout().items():
            info.add_text(f"pxgl:{name}", json.dumps(value))
        buffer = io.BytesIO()
        self.image.save(buffer, "PNG", pnginfo=info)
        return buffer.getvalue()


TokenBytes = Callable[[int], bytes]
"""A token id's bytes (the tokenizer's `token_bytes`); without a tokenizer tokens show as ids."""


@dataclass(frozen=True)
class Token:
    """A token id with its text, as data (`text`, U+FFFD for bytes that are not UTF-8) and on screen
    (`label`: quoted with escapes; a bytes literal when the token is a piece of a UTF-8 sequence)."""

    id: int
    text: str | None
    label: str

    @classmethod
    def of(cls, token: int, token_bytes: TokenBytes | None) -> "Token":
        if token_bytes is None:
            return cls(token, None, f"#{token}")
        data = token_bytes(token)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return cls(token, data.decode("utf-8", errors="replace"), repr(data))
        return cls(token, text, repr(text))


@dataclass(frozen=True)
class TokenCell:
    position: int
    pixel: RGB
    token: Token | None
    """None for the padding pixels after the prompt's last token."""


@dataclass(frozen=True)
class Candidate:
    rank: int
    token: Token
    logit: float
    probability: float


@dataclass(frozen=True)
class TraceView:
    """One prompt's run: its token pixels, the intermediates that exist, the prediction and the top-k."""

    prompt: str | None
    prompt_tokens: int | None
    """How many tokens the whole prompt has (the GPU reads the last context_window of them), if known."""
    about: dict[str, str]
    tokens: list[TokenCell]
    prediction_pixel: RGB
    prediction: Token
    images: dict[str, DataImage]
    top_k: list[Candidate]
    missing: list[str]
    arrays: dict[str, np.ndarray]
    """The read-back arrays of this prompt, exactly as the GPU gave them (written to trace.npz)."""

    @property
    def confidence(self) -> float:
        return self.prediction_pixel[2] / 255

    def tokens_read(self) -> str:
        """What the token texture row holds, in words."""
        read = sum(cell.token is not None for cell in self.tokens)
        if self.prompt_tokens is not None and self.prompt_tokens > read:
            return f"the last {read} of the prompt's {self.prompt_tokens} tokens, as the GPU read them"
        return f"the prompt's {read} token(s), as the GPU read them"

    def record(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "prompt_tokens": self.prompt_tokens,
            "about": self.about,
            "tokens": [
                {"position": t.position, "pixel": list(t.pixel), "id": t.token.id, "text": t.token.text}
                for t in self.tokens
                if t.token is not None
            ],
            "prediction": {
                "id": self.prediction.id,
                "text": self.prediction.text,
                "confidence": round(self.confidence, 4),
                "pixel": list(self.prediction_pixel),
            },
            "top_k": [
                {"rank": c.rank, "id": c.token.id, "text": c.token.text, "logit": c.logit, "probability": c.probability}
                for c in self.top_k
            ],
            "textures": {key: image.layout() for key, image in self.images.items()},
            "missing": self.missing,
        }


def top_k(logits: np.ndarray, k: int, token_bytes: TokenBytes | None = None) -> list[Candidate]:
    """The k largest logits (lowest id first on ties) with their softmax probabilities, in float64."""
    order = np.argsort(-logits.astype(np.float64), kind="stable")[: max(0, min(k, len(logits)))]
    probabilities = softmax(logits)
    return [
        Candidate(rank + 1, Token.of(int(i), token_bytes), float(logits[i]), float(probabilities[i]))
        for rank, i in enumerate(order)
    ]


def token_cells(row: np.ndarray, token_bytes: TokenBytes | None) -> list[TokenCell]:
    """The token texture row read back, pixel by pixel (the ids are the pixels' own R + 256·G)."""
    ids = token_ids(row[None])[0]
    return [
        TokenCell(
            position,
            (int(pixel[0]), int(pixel[1]), int(pixel[2])),
            Token.of(int(ids[position]), token_bytes) if pixel[2] == TOKEN_MARK else None,
        )
        for position, pixel in enumerate(row)
    ]


def rgb_image(key: str, title: str, caption: str, pixels: np.ndarray, block: int) -> DataImage:
    height, width, _ = pixels.shape
    image = Image.fromarray(upscale(pixels, block, block), "RGB")
    return DataImage(key, title, caption, image, (height, width), (block, block))


def strip_image(key: str, title: str, caption: str, vector: np.ndarray) -> DataImage:
    """A float vector (one row of T_embed or T_hidden) as a colour-mapped strip."""
    grid = fold(vector)
    rows, width = grid.shape
    scale = colour_scale(vector)
    block_w = max(1, STRIP_TARGET_PX // width)
    block_h = max(block_w, STRIP_HEIGHT_PX // rows)
    image = Image.fromarray(upscale(diverging(grid, scale), block_w, block_h), "RGB")
    extra = {"min": float(np.nanmin(vector)), "max": float(np.nanmax(vector)), "length": len(vector)}
    block = (block_w, block_h)
    return DataImage(key, title, caption, image, (rows, width), block, scale=scale, colour_map="diverging", extra=extra)


def cell_grid(colours: np.ndarray, side: int, marked: int, target_px: int) -> tuple[Image.Image, int, int, int]:
    """One colour per token id k at texel (k % side, k // side), upscaled to about target_px, in a frame,
    with a ring around the `marked` cell; returns (image, block, frame, ring)."""
    block = max(1, target_px // side)
    ring = max(2, block // 5)
    frame = 2 * ring + 1
    canvas = np.empty((side * block + 2 * frame, side * block + 2 * frame, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    canvas[frame:-frame, frame:-frame] = upscale(colours.reshape(side, side, 3), block, block)
    image = Image.fromarray(canvas, "RGB")
    if 0 <= marked < len(colours):
        x0, y0 = frame + (marked % side) * block, frame + (marked // side) * block
        draw = ImageDraw.Draw(image)
        # The ring sits outside the cell so the cell's own colour stays in view; a black edge keeps it
        # visible on any colour.
        draw.rectangle((x0 - ring - 1, y0 - ring - 1, x0 + block + ring, y0 + block + ring), outline=MARKER_EDGE)
        draw.rectangle((x0 - ring, y0 - ring, x0 + block + ring - 1, y0 + block + ring - 1), outline=MARKER, width=ring)
    return image, block, frame, ring


def heatmap_image(cells: np.ndarray, vocab: int, marked: int) -> DataImage:
    """T_logits' cell of one prompt: logit k at texel (k % side, k // side) in the diverging map, cells
    past the vocabulary in NO_VALUE, a ring around `marked` (the GPU's own argmax: the prediction id)."""
    side = cells.shape[0]
    values = cells.reshape(-1)[:vocab]
    scale = colour_scale(values)
    colours = np.empty((side * side, 3), dtype=np.uint8)
    colours[:] = NO_VALUE
    colours[:vocab] = diverging(values, scale)
    image, block, frame, ring = cell_grid(colours, side, marked if marked < vocab else -1, HEATMAP_TARGET_PX)
    caption = f"one cell per token id k at (k mod {side}, k div {side}); ring: the GPU's argmax"
    extra = {"min": float(values.min()), "max": float(values.max()), "vocab": vocab, "marked": marked, "ring": ring}
    geometry = {"texels": (side, side), "block": (block, block), "origin": (frame, frame)}
    return DataImage("logits", "T_logits", caption, image, **geometry, scale=scale, colour_map="diverging", extra=extra)


def probability_image(cells: np.ndarray, vocab: int, marked: int) -> DataImage:
    """The softmax of the same T_logits cell (computed here for display), dark 0 to bright at the largest
    probability, laid out like the heatmap: where the model puts its bets."""
    side = cells.shape[0]
    probabilities = softmax(cells.reshape(-1)[:vocab])
    top = float(probabilities.max())
    colours = np.empty((side * side, 3), dtype=np.uint8)
    colours[:] = NO_VALUE
    colours[:vocab] = sequential(probabilities, top)
    image, block, frame, ring = cell_grid(colours, side, marked if marked < vocab else -1, PROBABILITY_TARGET_PX)
    caption = "softmax of the T_logits read back, 0 (dark) to the largest probability (bright)"
    extra = {"vocab": vocab, "marked": marked, "ring": ring}
    geometry = {"texels": (side, side), "block": (block, block), "origin": (frame, frame)}
    return DataImage(
        "probabilities", "probabilities", caption, image, **geometry, scale=top, colour_map="sequential", extra=extra
    )


def trace_view(
    trace: Trace,
    spec: ModelSpec,
    *,
    row: int = 0,
    prompt: str | None = None,
    prompt_tokens: int | None = None,
    token_bytes: TokenBytes | None = None,
    k: int = DEFAULT_TOP_K,
    about: dict[str, str] | None = None,
) -> TraceView:
    """What one prompt's trace (row `row` of it) shows, the top `k` candidates included."""
    if not 0 <= row < len(trace.tokens):
        raise PxglError(f"trace has {len(trace.tokens)} prompt(s); there is no row {row}")
    tokens = trace.tokens[row]
    pixel = tuple(int(c) for c in trace.prediction[row, 0, :3])
    predicted = pixel[0] + 256 * pixel[1]
    window = tokens.shape[0]
    images = {
        "tokens": rgb_image(
            "tokens",
            "token texture",
            f"one pixel per token, (id mod 256, id div 256, 255); {window} wide: the context window",
            tokens[None],
            max(1, min(TOKEN_BLOCK_MAX_PX, STRIP_TARGET_PX // window)),
        )
    }
    arrays = {"tokens": tokens, "prediction": trace.prediction[row]}
    missing = []
    intermediates = (
        ("embed", trace.embed, "T_embed", "mean of the token embeddings"),
        ("hidden", trace.hidden, "T_hidden", "relu(T_embed · hidden + b_hidden)"),
    )
    for key, texture, title, caption in intermediates:
        if texture is None:
            missing.append(title)
            continue
        arrays[key] = texture[row]
        images[key] = strip_image(key, title, caption, texture[row])
    candidates: list[Candidate] = []
    if trace.logits is None:
        missing.append("T_logits")
    else:
        arrays["logits"] = trace.logits[row]
        images["logits"] = heatmap_image(trace.logits[row], spec.vocab_size, predicted)
        images["probabilities"] = probability_image(trace.logits[row], spec.vocab_size, predicted)
        candidates = top_k(trace.logits[row].reshape(-1)[: spec.vocab_size], k, token_bytes)
    images["prediction"] = rgb_image(
        "prediction",
        "prediction pixel",
        "(id mod 256, id div 256, round(255 · probability))",
        trace.prediction[row, :, :3].reshape(1, 1, 3),
        PREDICTION_BLOCK_PX,
    )
    return TraceView(
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        about=about or {},
        tokens=token_cells(tokens, token_bytes),
        prediction_pixel=pixel,
        prediction=Token.of(predicted, token_bytes if predicted < spec.vocab_size else None),
        images=images,
        top_k=candidates,
        missing=missing,
        arrays=arrays,
    )


def run_view(
    engine: "Engine",
    token_pixels: np.ndarray,
    *,
    source: str,
    executor: str,
    prompt: str | None,
    tokenizer: "Tokenizer | None",
    k: int = DEFAULT_TOP_K,
) -> TraceView:
    """Run the first prompt of a token texture on the GPU, read its textures back and describe them."""
    first = token_pixels[:1]
    trace = engine.trace(first, source)
    length = int(token_lengths(first, engine.spec.vocab_size, source)[0])
    about = {"model": Path(engine.model.source).name, "executor": executor, "device": engine.gpu.renderer}
    token_bytes = tokenizer.token_bytes if tokenizer is not None else None
    return trace_view(
        trace, engine.spec, prompt=prompt, prompt_tokens=length, token_bytes=token_bytes, k=k, about=about
    )


# --- the weight texture -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    name: str
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
        Region(t.name, t.shape, t.offset, t.offset + t.size, TENSOR_COLOURS[i % len(TENSOR_COLOURS)])
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
    canvas = Image.new("RGB", (legend_x + 330, max(bottom, header + 92 * len(regions)) + margin), BACKGROUND)
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


def draw_weights_legend(
    draw: ImageDraw.ImageDraw, regions: list[Region], spec: ModelSpec, at: tuple[int, int], zoom: float
) -> None:
    """Each tensor's name, shape, byte range and quantization beside the rows it spans, joined to them by
    a bracket; labels are pushed down where small tensors share rows, so they never overlap."""
    x, top = at
    row_bytes = 3 * spec.image_width
    line_h, next_free = 72, 0.0
    for region in regions:
        y0 = top + region.start // row_bytes * zoom
        y1 = top + ((region.end - 1) // row_bytes + 1) * zoom
        draw.line([(x, y0), (x, max(y1 - 1, y0))], fill=region.colour, width=3)
        label_y = max(next_free, (y0 + y1) / 2 - line_h / 2)
        draw.line([(x + 2, (y0 + y1) / 2), (x + 14, label_y + 10)], fill=region.colour, width=1)
        tensor = spec.tensors[region.name]
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
        next_free = label_y + line_h + 8


# --- contact sheet ----------------------------------------------------------------------------------


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own default font (FreeType at `size` where Pillow has FreeType, else its bitmap font)."""
    return ImageFont.load_default(size=size)


DRAWABLE = frozenset(chr(c) for c in range(0x20, 0x7F)) | {"·", "…"}
"""What Pillow's default font has glyphs for; anything else is drawn as a Python escape."""


def drawable(text: str) -> str:
    return "".join(c if c in DRAWABLE else c.encode("unicode_escape").decode("ascii") for c in text)


def colourbar(colour_map: str, width: int, height: int) -> Image.Image:
    lut = diverging_lut() if colour_map == "diverging" else sequential_lut()
    columns = lut[np.linspace(0, len(lut) - 1, width).round().astype(int)]
    return Image.fromarray(np.repeat(columns[None], height, axis=0), "RGB")


def figure(value: float) -> str:
    return f"{value:.3g}"


def scale_labels(image: DataImage) -> tuple[str, str, str]:
    """The values at the left end, middle and right end of an image's colour bar."""
    if image.colour_map == "diverging":
        return f"-{figure(image.scale)}", "0", f"+{figure(image.scale)}"
    return "0", f"{image.scale / 2:.1%}", f"{image.scale:.1%}"  # the sequential map shows probabilities


def clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


class Sheet:
    """A canvas for the contact sheet: text in Pillow's default font, images pasted pixel for pixel."""

    def __init__(self, width: int, height: int) -> None:
        self.image = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    def width_of(self, text: str, size: int) -> float:
        return self.draw.textlength(drawable(text), font=font(size))

    def text(self, xy: tuple[float, float], text: str, size: int = 14, fill: RGB = INK) -> float:
        """Draw text; returns its width."""
        self.draw.text(xy, drawable(text), font=font(size), fill=fill)
        return self.width_of(text, size)

    def heading(self, x: int, y: int, title: str, detail: str) -> int:
        used = self.text((x, y), title, 17)
        self.text((x + used + 10, y + 3), detail, 13, DIM_INK)
        return y + 26

    def scale_bar(self, x: float, y: int, image: DataImage, width: int = 180) -> int:
        """An image's colour map with its end and middle values; returns the y below."""
        self.image.paste(colourbar(image.colour_map, width, 10), (round(x), y))
        self.draw.rectangle((x - 1, y - 1, x + width, y + 10), outline=DIM_INK)
        for fraction, label in zip((0, 0.5, 1), scale_labels(image), strict=True):
            self.text((x + fraction * (width - self.width_of(label, 12)), y + 13), label, 12, DIM_INK)
        return y + 30

    def paste(self, image: Image.Image, x: int, y: int, max_width: int) -> int:
        """Paste pixel for pixel, shrunk by a whole factor (nearest) only where it would not fit."""
        factor = math.ceil(image.width / max_width)
        if factor > 1:
            image = image.resize((image.width // factor, image.height // factor), Image.Resampling.NEAREST)
        self.image.paste(image, (x, y))
        return y + image.height


OVERVIEW_MARGIN, OVERVIEW_GAP, OVERVIEW_LEFT, OVERVIEW_RIGHT = 28, 32, 600, 480


def contact_sheet(view: TraceView) -> Image.Image:
    """One labelled overview image: the pipeline top to bottom on the left, the answer on the right."""
    margin, left_w = OVERVIEW_MARGIN, OVERVIEW_LEFT
    sheet = Sheet(2 * margin + left_w + OVERVIEW_GAP + OVERVIEW_RIGHT, overview_height(view))
    y = margin
    sheet.text((margin, y), "pxgl · see the model think", 28)
    y += 42
    prompt = repr(view.prompt) if view.prompt is not None else "a token texture"
    answer = view.prediction.label
    sheet.text((margin, y), f"{prompt}  ->  {answer}    (id {view.prediction.id}, {view.confidence:.0%})", 18)
    y += 28
    sheet.text((margin, y), "   ·   ".join(view.about.values()), 13, DIM_INK)
    top = y = y + 38

    tokens = view.images["tokens"]
    rows, window = tokens.texels
    y = sheet.heading(margin, y, "1  token texture", f"{window}x{rows} RGB: {view.tokens_read()}")
    y = sheet.paste(tokens.image, margin, y, left_w)
    y = token_labels(sheet, view.tokens, margin, y + 6, tokens.block[0]) + 16

    for number, key in ((2, "embed"), (3, "hidden")):
        image = view.images.get(key)
        if image is None:
            y = sheet.heading(margin, y, f"{number}  T_{key}", "not kept by this executor") + 16
            continue
        y = sheet.heading(margin, y, f"{number}  {image.title}", f"{image.extra['length']} float32 · {image.caption}")
        y = sheet.paste(image.image, margin, y, left_w) + 6
        y = sheet.scale_bar(margin, y, image) + 10

    heat = view.images.get("logits")
    if heat is None:
        y = sheet.heading(margin, y, "4  T_logits", "not kept by this executor")
    else:
        side = heat.texels[0]
        y = sheet.heading(margin, y, "4  T_logits", f"{side}x{side} float32 · {heat.extra['vocab']} tokens")
        y = sheet.paste(heat.image, margin, y, left_w) + 6
        sheet.text((margin + 200, y - 2), f"token k at (k mod {side}, k div {side})", 12, DIM_INK)
        sheet.text((margin + 200, y + 14), "ring: the cell the argmax pass chose", 12, DIM_INK)
        y = sheet.scale_bar(margin, y, heat)
    left_bottom = y

    x, y = margin + left_w + OVERVIEW_GAP, top
    y = sheet.heading(x, y, "5  prediction pixel", "(id mod 256, id div 256, confidence)")
    pixel = view.images["prediction"].image
    sheet.image.paste(pixel, (x, y))
    sheet.draw.rectangle((x - 1, y - 1, x + pixel.width, y + pixel.height), outline=DIM_INK)
    sheet.text((x + pixel.width + 20, y + 4), clip(answer, 22), 26)
    sheet.text((x + pixel.width + 20, y + 44), f"id {view.prediction.id} · confidence {view.confidence:.1%}", 14)
    sheet.text((x + pixel.width + 20, y + 66), f"RGB {view.prediction_pixel}", 13, DIM_INK)
    y += pixel.height + 34
    if view.top_k:
        y = top_k_table(sheet, view.top_k, x, y) + 8
    odds = view.images.get("probabilities")
    if odds is not None:
        y = sheet.heading(x, y, "softmax(T_logits)", "where the probability goes; ring: the argmax")
        y = sheet.paste(odds.image, x, y, OVERVIEW_RIGHT) + 6
        y = sheet.scale_bar(x, y, odds)
    bottom = max(left_bottom, y) + OVERVIEW_MARGIN
    return sheet.image.crop((0, 0, sheet.image.width, min(bottom, sheet.image.height)))


def overview_height(view: TraceView) -> int:
    """Header, token strip with its labels, two strips with scales, the heatmap, margins."""
    label_h = max((len(drawable(c.token.label)) * 8 for c in view.tokens if c.token), default=0)
    total = 4 * OVERVIEW_MARGIN + 110 + view.images["tokens"].image.height + min(label_h, 140) + 40
    for key in ("embed", "hidden", "logits"):
        image = view.images.get(key)
        total += 26 + (image.image.height + 50 if image else 16)
    odds = view.images.get("probabilities")
    right = 110 + 26 + PREDICTION_BLOCK_PX + 34 + 70 + 24 * len(view.top_k) + (odds.image.height + 70 if odds else 0)
    return max(total, right + 2 * OVERVIEW_MARGIN)


def token_labels(sheet: Sheet, tokens: list[TokenCell], x: int, y: int, block: int) -> int:
    """Each token's label under its pixel, written downwards, where the pixels are wide enough for a line
    of text (else the page's token table has them); returns the y below the longest."""
    size, longest = 13, 0
    if block < size + 2:
        return y
    for cell in tokens:
        if cell.token is None:
            continue
        label = clip(drawable(cell.token.label), 20)
        stamp = Image.new("RGB", (round(sheet.width_of(label, size)) + 4, size + 6), BACKGROUND)
        ImageDraw.Draw(stamp).text((2, 1), label, font=font(size), fill=INK)
        turned = stamp.rotate(-90, expand=True)
        sheet.image.paste(turned, (x + cell.position * block + (block - turned.width) // 2, y))
        longest = max(longest, turned.height)
    return y + longest


def top_k_table(sheet: Sheet, candidates: list[Candidate], x: int, y: int) -> int:
    y = sheet.heading(x, y, f"top {len(candidates)}", "softmax of the T_logits read back")
    columns = (x, x + 30, x + 190, x + 250, x + 330)
    for column, label in zip(columns, ("#", "token", "id", "logit", "probability"), strict=True):
        sheet.text((column, y), label, 12, DIM_INK)
    y += 22
    bar_w = OVERVIEW_RIGHT - (columns[4] - x) - 56
    for c in candidates:
        sheet.text((columns[0], y), str(c.rank), 14, DIM_INK)
        sheet.text((columns[1], y), clip(c.token.label, 18), 14, MARKER if c.rank == 1 else INK)
        sheet.text((columns[2], y), str(c.token.id), 14)
        sheet.text((columns[3], y), f"{c.logit:.3f}", 14)
        bar = max(1, round(bar_w * c.probability))
        sheet.draw.rectangle((columns[4], y + 5, columns[4] + bar, y + 14), fill=DIVERGING_ANCHORS[-3])
        sheet.text((columns[4] + bar + 6, y), f"{c.probability:.1%}", 13)
        y += 24
    return y + 10


# --- the page ---------------------------------------------------------------------------------------


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
    strips = [key for key in ("embed", "hidden") if key in view.images]
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


# --- writing ----------------------------------------------------------------------------------------


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PxglError(f"{out_dir}: exists and is not a folder; give a folder for the visuals")


def write_visuals(out_dir: Path, view: TraceView | None, weights: DataImage | None = None) -> dict[str, Any]:
    """Render everything in memory, then write each file atomically; returns the viz.json record."""
    check_out_dir(out_dir)
    images = dict(view.images) if view is not None else {}
    if weights is not None:
        images["weights"] = weights
    pngs = {key: image.png() for key, image in images.items()}
    files: dict[str, bytes] = {f"{key}.png": png for key, png in pngs.items()}
    record: dict[str, Any] = {"dir": str(out_dir)}
    if view is not None:
        overview = io.BytesIO()
        contact_sheet(view).save(overview, "PNG")
        files["overview.png"] = overview.getvalue()
        arrays = io.BytesIO()
        np.savez(arrays, **view.arrays)
        files["trace.npz"] = arrays.getvalue()
        record |= view.record()
    if weights is not None:
        record["weights"] = weights.layout()
    files["index.html"] = index_html(view, weights, pngs).encode("utf-8")
    record["files"] = sorted([*files, "viz.json"])
    files["viz.json"] = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PxglError(f"{out_dir}: cannot create the folder ({e.strerror or e})") from None
    for name, data in files.items():
        atomic_write(out_dir / name, lambda tmp, data=data: tmp.write_bytes(data))
    return record
