"""Version 2's token textures (docs/FORMATS.md §14.5): §4's rows of token pixels then (0, 0, 0) padding, a pixel
`(id % 256, (id // 256) % 256, 255 - id // 65536)`, so ids up to 2^24 travel and every version-1 texture
reads unchanged."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import PxglError
from ..pxi import MAX_TOKEN_PIXELS, is_prediction_image, read_rgb

ONE_PIXEL_VOCAB = 65536
"""Up to this many ids a prediction is §5's one pixel; past it, two (§14.5)."""


def token_pixels(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, 255 - ids // 65536], axis=-1).astype(np.uint8)


def pixel_ids(pixels: np.ndarray) -> np.ndarray:
    p = pixels.astype(np.int64)
    return p[..., 0] + 256 * p[..., 1] + 65536 * (255 - p[..., 2])


def encode_rows(rows: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """A token texture of prompts of ids: row r's tokens left-aligned, then (0, 0, 0)."""
    if not rows:
        raise PxglError("no prompts to encode")
    pixels = np.zeros((len(rows), max(map(len, rows)), 3), np.uint8)
    for r, row in enumerate(rows):
        ids = np.asarray(row, np.int64)
        if ids.size == 0:
            raise PxglError(f"prompt {r} is empty: every prompt needs at least one token")
        bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
        if bad.size:
            i = int(bad[0])
            raise PxglError(f"prompt {r}, position {i}: token id {ids[i]} is outside 0..{vocab_size - 1}")
        pixels[r, : ids.size] = token_pixels(ids)
    return pixels


def decode_rows(pixels: np.ndarray, vocab_size: int, source: str) -> list[np.ndarray]:
    """Each row's ids of a token texture, checked: tokens, then only padding; no empty row; ids < vocab_size."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise PxglError(f"{source}: expected an RGB token texture, got an array of shape {pixels.shape}")
    padding = ~pixels.any(axis=2)
    lengths = np.cumprod(~padding, axis=1).sum(axis=1)
    beyond = np.arange(pixels.shape[1])[None, :] >= lengths[:, None]
    junk = beyond & ~padding
    if junk.any():
        r, i = (int(v) for v in np.argwhere(junk)[0])
        raise PxglError(f"{source}: row {r}, position {i}: a token after the row's padding (0, 0, 0)")
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise PxglError(f"{source}: row {int(empty[0])} is empty: every prompt needs at least one token")
    ids = pixel_ids(pixels)
    too_big = ~beyond & (ids >= vocab_size)
    if too_big.any():
        r, i = (int(v) for v in np.argwhere(too_big)[0])
        raise PxglError(
            f"{source}: row {r}, position {i}: token id {ids[r, i]} ≥ vocab size {vocab_size}; re-encode the "
            "prompt for this model"
        )
    return [ids[r, : lengths[r]] for r in range(len(ids))]


def is_predictions(pixels: np.ndarray, vocab_size: int) -> bool:
    """Prediction pixels of this vocabulary, not a token texture (§14.5): past 65,536 ids 2 pixels wide with
    the second column's blue 0 in every row; else §5's one pixel wide."""
    if vocab_size > ONE_PIXEL_VOCAB:
        return pixels.shape[1] == 2 and not pixels[:, 1, 2].any()
    return is_prediction_image(pixels)


def read_token_rows(path: str | Path, vocab_size: int) -> list[np.ndarray]:
    """The prompts of a token texture file (§14.5); prediction pixels are refused as such."""
    pixels = read_rgb(path, MAX_TOKEN_PIXELS, kind="token texture")
    if is_predictions(pixels, vocab_size):
        raise PxglError(f"{path}: prediction pixels, not a token texture; give the token texture of the prompts")
    return decode_rows(pixels, vocab_size, str(path))
