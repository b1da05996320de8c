"""§14.5 token and prediction pixels, §3's prediction (id, p, confidence byte)."""

from __future__ import annotations

import math

import numpy as np


def token_pixel(token: int) -> tuple[int, int, int]:
    return (token % 256, (token // 256) % 256, 255 - token // 65536)


def token_of(pixel: tuple[int, int, int]) -> int:
    r, g, b = pixel
    return r + 256 * g + 65536 * (255 - b)


def prediction(logits: np.ndarray) -> tuple[int, float]:
    """§14.4 Predictions: argmax (lowest on ties) and its softmax probability."""
    top = int(np.argmax(logits))
    wide = logits.astype(np.float64)
    return top, float(1.0 / np.exp(wide - wide[top]).sum())


def confidence_byte(p: float) -> int:
    """§3: floor(255 · p + 0.5), halves up."""
    return math.floor(255 * p + 0.5)


def prediction_pixels(token: int, p: float, vocab_size: int) -> list[tuple[int, int, int]]:
    c = confidence_byte(p)
    if vocab_size <= 65536:
        return [(token % 256, token // 256, c)]
    return [token_pixel(token), (c, 0, 0)]
