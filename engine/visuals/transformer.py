"""What `pxgl viz` shows of a version-2 model (docs/FORMATS.md §14.8): a trace of one forward on the GPU
(engine/transformer/gpu/trace.py) drawn as data images, one pixel a value — every layer's and head's attention
pattern, the residual stream stage by stage, the logits of every position — with the token and prediction
pixels, the top-k of the last position and the record viz.json holds. Nothing here recomputes an activation."""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import PxglError
from ..transformer.gpu.executor import prediction_pixels
from ..transformer.gpu.trace import TransformerTrace
from .colour import RGB, colour_scale, diverging, sequential
from .trace import DEFAULT_TOP_K, Candidate, DataImage, Token, TokenBytes, top_k

LOGIT_COLUMNS = 1024
"""The logits image is at most this many columns wide: past it, each column covers a bin of ids."""
LOG_SPAN = 10.0
"""The logits image's colour runs from LOG_SPAN nats below a position's top logit (dark) to the top (bright)."""


def attention_key(layer: int, head: int) -> str:
    return f"attention_l{layer}_h{head}"


def token_pixel(token: int) -> RGB:
    """§14.5's token pixel."""
    return (token % 256, token // 256 % 256, 255 - token // 65536)


@dataclass(frozen=True)
class TransformerView:
    """One traced prompt: its tokens, the images, the prediction of its last position and the top-k."""

    prompt: str | None
    about: dict[str, str]
    tokens: list[Token]
    prediction: Token
    prediction_pixels: np.ndarray
    """(1, 1, 3) or (1, 2, 3): §14.5's prediction pixel(s) of the last position, from the GPU's argmax."""
    confidence: float
    images: dict[str, DataImage]
    top_k: list[Candidate]
    arrays: dict[str, np.ndarray]
    """The trace as read back (trace.npz)."""
    layers: int
    heads: int
    stage_scales: list[float]
    logit_bin: int

    @property
    def positions(self) -> int:
        return len(self.tokens)

    def record(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "about": self.about,
            "version": 2,
            "tokens": [
                {"position": i, "pixel": list(token_pixel(t.id)), "id": t.id, "text": t.text}
                for i, t in enumerate(self.tokens)
            ],
            "prediction": {
                "id": self.prediction.id,
                "text": self.prediction.text,
                "confidence": round(self.confidence, 4),
                "pixels": self.prediction_pixels[0].tolist(),
            },
            "top_k": [
                {"rank": c.rank, "id": c.token.id, "text": c.token.text, "logit": c.logit, "probability": c.probability}
                for c in self.top_k
            ],
            "attention": {"layers": self.layers, "heads": self.heads, "positions": self.positions},
            "residual": {"stages": self.layers + 1, "scales": self.stage_scales},
            "logits": {"bin": self.logit_bin, "columns": self.images["logits"].texels[1], "log_span": LOG_SPAN},
            "textures": {key: image.layout() for key, image in self.images.items()},
        }


def attention_image(weights: np.ndarray, layer: int, head: int) -> DataImage:
    """One head's weights p (n, n): pixel (j, i) = (v, v, v), v = round(255 · p_ij); 0 above the diagonal."""
    n = weights.shape[0]
    value = np.round(255 * weights.astype(np.float64)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(value[:, :, None], 3, axis=2), "RGB")
    caption = "row i = query position, column j = key position, grey = round(255 · p_ij)"
    extra = {"layer": layer, "head": head}
    return DataImage(
        attention_key(layer, head), f"layer {layer} · head {head}", caption, image, (n, n), (1, 1), extra=extra
    )


def residual_image(residual: np.ndarray) -> tuple[DataImage, list[float]]:
    """The residual stream (stages, n, E) as stages bands of n rows: row s·n + i, column e is x[s, i, e] in
    the diverging map, each band on its own scale ± its largest |x|."""
    stages, n, width = residual.shape
    scales = [colour_scale(band) for band in residual]
    colours = np.concatenate([diverging(band, scale) for band, scale in zip(residual, scales, strict=True)])
    image = Image.fromarray(colours, "RGB")
    caption = "band s: x after the embeddings (s = 0) or after block s - 1; row = position, column = element"
    extra = {"stages": stages, "positions": n, "scales": scales}
    title = "residual stream"
    return DataImage(
        "residual", title, caption, image, (stages * n, width), (1, 1), colour_map="diverging", extra=extra
    ), scales


def logits_image(logits: np.ndarray) -> tuple[DataImage, int]:
    """Every position's logits (n, V): row i, column c = max over ids c·b .. c·b + b - 1 of logit - top_i
    (b = ceil(V / LOGIT_COLUMNS)), coloured sequential from -LOG_SPAN (dark) to 0 (bright, the top)."""
    n, vocab = logits.shape
    bin_ids = math.ceil(vocab / LOGIT_COLUMNS)
    columns = math.ceil(vocab / bin_ids)
    below_top = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    padded = np.full((n, columns * bin_ids), -np.inf)
    padded[:, :vocab] = below_top
    binned = padded.reshape(n, columns, bin_ids).max(axis=2)
    image = Image.fromarray(sequential(binned + LOG_SPAN, LOG_SPAN), "RGB")
    ids = "token id" if bin_ids == 1 else f"ids c·{bin_ids} .. c·{bin_ids} + {bin_ids - 1} (their largest)"
    caption = f"row = position, column c = {ids}, bright = the top logit, dark = {LOG_SPAN:g} nats below or less"
    extra = {"bin": bin_ids, "log_span": LOG_SPAN}
    return DataImage(
        "logits", "logits", caption, image, (n, columns), (1, 1), colour_map="sequential", extra=extra
    ), bin_ids


def transformer_view(
    trace: TransformerTrace,
    vocab_size: int,
    *,
    prompt: str | None = None,
    token_bytes: TokenBytes | None = None,
    about: dict[str, str] | None = None,
    k: int = DEFAULT_TOP_K,
) -> TransformerView:
    layers, heads, n, _ = trace.attention.shape
    images: dict[str, DataImage] = {}
    tokens = [Token.of(int(t), token_bytes) for t in trace.tokens]
    pixels = np.array([token_pixel(t.id) for t in tokens], np.uint8)[None]
    images["tokens"] = DataImage(
        "tokens",
        "token pixels",
        "one pixel per token (§14.5), position 0 first",
        Image.fromarray(pixels),
        (1, n),
        (1, 1),
    )
    for layer in range(layers):
        for head in range(heads):
            image = attention_image(trace.attention[layer, head], layer, head)
            images[image.key] = image
    images["residual"], scales = residual_image(trace.residual)
    images["logits"], logit_bin = logits_image(trace.logits)
    predicted = prediction_pixels(trace.ids[-1:], trace.sums[-1:], vocab_size)
    caption = "§14.5: the last position's argmax id and round(255 · its probability)"
    images["prediction"] = DataImage(
        "prediction", "prediction pixel", caption, Image.fromarray(predicted[0][None]), (1, predicted.shape[1]), (1, 1)
    )
    arrays = {
        "tokens": trace.tokens,
        "residual": trace.residual,
        "attention": trace.attention,
        "logits": trace.logits,
        "ids": trace.ids,
        "sums": trace.sums,
    }
    last = int(trace.ids[-1])
    return TransformerView(
        prompt=prompt,
        about=about or {},
        tokens=tokens,
        prediction=Token.of(last, token_bytes),
        prediction_pixels=predicted,
        confidence=float(1 / trace.sums[-1]),
        images=images,
        top_k=top_k(trace.logits[-1], k, token_bytes),
        arrays=arrays,
        layers=layers,
        heads=heads,
        stage_scales=scales,
        logit_bin=logit_bin,
    )


def trace_row(pixels: np.ndarray, vocab_size: int, source: str) -> np.ndarray:
    """The ids of a token texture's first row (§14.5's pixels, then only (0, 0, 0)), each below vocab_size."""
    row = pixels[0].astype(np.int64)
    padding = ~row.any(axis=1)
    length = int(np.argmax(padding)) if padding.any() else len(row)
    if length == 0:
        raise PxglError(f"{source}: row 0 is empty: give at least one token")
    if not padding[length:].all():
        i = length + int(np.argmin(padding[length:]))
        raise PxglError(f"{source}: row 0, position {i}: pixel {tuple(row[i].tolist())} after the row's padding")
    ids = row[:length, 0] + 256 * row[:length, 1] + 65536 * (255 - row[:length, 2])
    bad = np.flatnonzero(ids >= vocab_size)
    if bad.size:
        i = int(bad[0])
        raise PxglError(f"{source}: row 0, position {i}: token id {ids[i]} ≥ the model's vocab size {vocab_size}")
    return ids
