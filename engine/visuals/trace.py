"""What a trace shows: the textures of one GPU run (Engine.trace) described as images, tokens and the
top-k candidates. Nothing here recomputes an activation: every value comes from the read-back textures."""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from ..constants import TOKEN_MARK
from ..errors import PxglError
from ..executors.protocol import Trace
from ..pxi import token_ids, token_lengths
from ..spec import ModelSpec
from .colour import (
    BACKGROUND,
    MARKER,
    MARKER_EDGE,
    NO_VALUE,
    RGB,
    colour_scale,
    diverging,
    fold,
    sequential,
    softmax,
    upscale,
)

if TYPE_CHECKING:
    from ..engine import Engine
    from ..tokenizer import Tokenizer

DEFAULT_TOP_K = 10
HEATMAP_TARGET_PX = 512
PROBABILITY_TARGET_PX = 320
STRIP_TARGET_PX = 512
STRIP_HEIGHT_PX = 40

TOKEN_BLOCK_MAX_PX = 40
PREDICTION_BLOCK_PX = 96


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
    strips: list[str] = field(default_factory=list)
    """Keys of the vector images, in the order the pass computed them (scores, context, hidden0, ...)."""

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
    """A float vector (one row of T_context, T_hidden[l] or T_scores) as a colour-mapped strip."""
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
    missing, strips = [], []
    for key, vector, title, caption in intermediates(trace, spec, row):
        if vector is None:
            missing.append(title)
            continue
        arrays[key] = vector
        images[key] = strip_image(key, title, caption, vector)
        strips.append(key)
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
        strips=strips,
    )


def intermediates(trace: Trace, spec: ModelSpec, row: int) -> list[tuple[str, np.ndarray | None, str, str]]:
    """(key, vector of this row or None, title, caption) of each vector texture, in the order of the pass."""
    c, a = spec.context, spec.architecture
    found: list[tuple[str, np.ndarray | None, str, str]] = []
    if c.mode == "attention" and trace.scores is not None:
        n = int(np.count_nonzero(trace.tokens[row, :, 2] == TOKEN_MARK))
        scores = trace.scores[row, :n]
        found.append(
            ("scores", scores, "T_scores", "attention scores q·k_j/sqrt(D), j counting back from the last token")
        )
    about_context = {
        "mean": f"mean of the last {c.window} token embeddings",
        "concat": f"the last {c.window} token embeddings side by side, oldest first",
        "attention": f"the last {c.concat} embeddings, then the attention head's {c.head_dim} outputs",
    }[c.mode]
    context = trace.context[row] if trace.context is not None else None
    found.append(("context", context, "T_context", about_context))
    if trace.hidden is None:
        return [*found, ("hidden0", None, "T_hidden", "")]
    for layer, texture in enumerate(trace.hidden):
        source = "T_context" if layer == 0 else f"T_hidden[{layer - 1}]"
        caption = f"relu({source} · layer{layer}.weight + layer{layer}.bias)"
        caption += f" + {source}" if a.is_residual(layer) else ""
        found.append((f"hidden{layer}", texture[row], f"T_hidden[{layer}]", caption))
    return found


def run_view(
    engine: "Engine",
    token_pixels: np.ndarray,
    *,
    source: str,
    prompt: str | None,
    tokenizer: "Tokenizer | None",
    k: int = DEFAULT_TOP_K,
) -> TraceView:
    """Run the first prompt of a token texture on the GPU, read its textures back and describe them."""
    first = token_pixels[:1]
    trace = engine.trace(first, source)
    length = int(token_lengths(first, engine.spec.vocab_size, source)[0])
    about = {"model": Path(engine.model.source).name, "executor": engine.executor_name, "device": engine.gpu.renderer}
    token_bytes = tokenizer.token_bytes if tokenizer is not None else None
    return trace_view(
        trace, engine.spec, prompt=prompt, prompt_tokens=length, token_bytes=token_bytes, k=k, about=about
    )
