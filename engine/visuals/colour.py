"""Colour maps and drawing basics shared by every visual: one diverging map for signed values (blue < 0 <
red, symmetric ±scale), one sequential map for probabilities, nearest-neighbour upscaling, the palette,
Pillow's default font and the characters it can draw."""

import math
from functools import cache

import numpy as np
from PIL import Image, ImageFont

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

STRIP_MAX_TEXELS_PER_ROW = 256
"""Longer vectors fold into several rows so that any model size keeps a readable image."""


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
