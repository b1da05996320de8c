"""§14.8: the images of a version-2 forward, from a trace (attention, residual, logits)."""

from __future__ import annotations

import math

import numpy as np

DIVERGING = [
    (5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240), (247, 247, 247),
    (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31),
]  # fmt: skip
SEQUENTIAL = [
    (0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39),
    (252, 255, 164),
]  # fmt: skip


def colour_map(anchors: list[tuple[int, int, int]]) -> np.ndarray:
    """[255, 3] uint8: level k interpolates the anchors at t = k·(A-1)/254, each channel rounded (ties even)."""
    a = np.asarray(anchors, dtype=np.float64)
    levels = np.empty((255, 3), np.uint8)
    for k in range(255):
        t = k * (len(a) - 1) / 254
        i = min(math.floor(t), len(a) - 2)
        levels[k] = np.round(a[i] + (t - i) * (a[i + 1] - a[i]))
    return levels


def n_max(meta: dict) -> int:
    L, H, C = meta["layers"], meta["heads"], meta["context_length"]
    V, E = meta["vocab_size"], meta["width"]
    return max(1, min(256, C, math.isqrt(2**24 // (L * H)), 2**25 // max(V, (L + 1) * E)))


def attention_image(p: np.ndarray) -> np.ndarray:
    """[n, n] weights of one head → grey [n, n, 3]."""
    v = np.round(255 * np.tril(p.astype(np.float64))).astype(np.uint8)
    return np.repeat(v[:, :, None], 3, axis=2)


def residual_image(residual: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """[(L+1), n, E] → [(L+1)·n, E, 3] and each band's scale S_s."""
    cmap = colour_map(DIVERGING)
    bands, scales = [], []
    for band in residual.astype(np.float64):
        top = float(np.abs(band).max())
        scale = top if top > 0 else 1.0
        level = np.round((np.clip(band / scale, -1, 1) + 1) * 127).astype(np.int64)
        bands.append(cmap[level])
        scales.append(scale)
    return np.concatenate(bands), scales


def logits_image(logits: np.ndarray) -> np.ndarray:
    """[n, V] → [n, ⌈V/b⌉, 3], b = ⌈V/1024⌉."""
    n, V = logits.shape
    b = -(-V // 1024)
    columns = -(-V // b)
    padded = np.full((n, columns * b), -np.inf)
    padded[:, :V] = logits
    m = padded.reshape(n, columns, b).max(axis=2) - logits.astype(np.float64).max(axis=1, keepdims=True)
    level = np.round(np.clip((m + 10) / 10, 0, 1) * 254).astype(np.int64)
    return colour_map(SEQUENTIAL)[level]
