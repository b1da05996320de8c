"""Visual AI: the textures of a real GPU run drawn as images, so you can see the model think.

Everything shown comes from `Engine.trace` (the textures read back from the GPU) or from the weight
texture itself; nothing here recomputes an activation. Images are nearest-neighbour upscaled (each texel
a solid block), signed values use one diverging colour map (blue < 0 < red, symmetric scale ±s), and
the data images carry their layout in PNG text chunks (`pxgl:*`) so they can be read back exactly.

Outputs of `write_visuals`: tokens.png, embed.png, hidden.png, logits.png, prediction.png (those the
executor produced), weights.png (with --weights), overview.png (a labelled contact sheet),
index.html (everything, images inlined as data URIs: opens from disk with no server), trace.npz (the
read-back arrays, exact) and viz.json (what was drawn, with scales, layout and the top-k)."""

from .colour import (
    BACKGROUND,
    COLOUR_LEVELS,
    DIVERGING_ANCHORS,
    MARKER,
    MARKER_EDGE,
    NO_VALUE,
    TENSOR_COLOURS,
    TINT_ALPHA,
    colour_scale,
    diverging,
    diverging_lut,
    drawable,
    sequential_lut,
)
from .trace import DEFAULT_TOP_K, Token, TraceView, run_view, top_k, trace_view
from .weights import WEIGHTS_TARGET_PX, weights_view
from .write import WRITES, write_visuals

__all__ = [
    "BACKGROUND",
    "COLOUR_LEVELS",
    "DEFAULT_TOP_K",
    "DIVERGING_ANCHORS",
    "MARKER",
    "MARKER_EDGE",
    "NO_VALUE",
    "TENSOR_COLOURS",
    "TINT_ALPHA",
    "WEIGHTS_TARGET_PX",
    "WRITES",
    "Token",
    "TraceView",
    "colour_scale",
    "diverging",
    "diverging_lut",
    "drawable",
    "run_view",
    "sequential_lut",
    "top_k",
    "trace_view",
    "weights_view",
    "write_visuals",
]
