"""Pixel files (docs/FORMATS.md): PNG I/O, the byte stream ↔ pixel mapping, token textures and
prediction pixels. Every reader validates before it trusts; every writer is atomic."""

import io
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .constants import TOKEN_MARK
from .errors import PxglError
from .outputs import atomic_write
from .png import check_png, encode_png, inflate_into, unfilter
from .reading import MAX_PIXEL_FILE_BYTES, read_bounded
from .reading import parse_json as parse_json
from .reading import read_text as read_text

MAX_PIXELS = 1 << 26
"""Decompression-bomb guard: no pixel file of pxgl comes near 64 Mi pixels."""
TOKEN_IDS = 1 << 16
"""Ids are 16 bits (R + 256·G)."""
MAX_TOKEN_PIXELS = 1 << 24
"""Token textures and prediction pixels: 16 Mi tokens or answers, checked before decoding."""


def read_rgb(
    path: str | Path, max_pixels: int = MAX_PIXELS, expect: tuple[int, int] | None = None, kind: str = "pixel file"
) -> np.ndarray:
    """A pixel file as an (height, width, 3) uint8 array; only strict 8-bit RGB PNGs are pixel files
    (docs/FORMATS.md §0). `expect` is the (width, height) the caller requires, checked before decoding."""
    data = read_bounded(path, "pixel file", MAX_PIXEL_FILE_BYTES)
    return decode_rgb(data, str(path), max_pixels, expect, kind)


def decode_rgb(
    data: bytes,
    source: str,
    max_pixels: int = MAX_PIXELS,
    expect: tuple[int, int] | None = None,
    kind: str = "pixel file",
) -> np.ndarray:
    """A pixel file held in memory (a cartridge member) as (height, width, 3) uint8, with read_rgb's checks."""
    width, height, critical, scanlines = check_png(data, source, max_pixels, expect, kind)
    pixels = unfilter(scanlines, width, height)
    del scanlines  # not held while PIL decodes the file again
    if pixels is None:  # Average or Paeth rows: PIL's decoder (only here: importing PIL takes ~25 ms)
        from PIL import Image

        try:
            with Image.open(io.BytesIO(critical)) as opened:
                opened.load()
                pixels = np.asarray(opened, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as e:
            raise PxglError(f"{source}: corrupt PNG ({e})") from None
    if pixels.shape != (height, width, 3):
        raise PxglError(f"{source}: decoded to shape {pixels.shape}, expected ({height}, {width}, 3)")
    return pixels


def decode_rgb_into(data: bytes, source: str, out: np.ndarray, expect: tuple[int, int]) -> None:
    """A pixel file held in memory, checked as decode_rgb checks it, its (width, height) `expect`, decoded
    into `out` (its height·width·3 bytes, 1-D) a piece at a time: what a reader of several images holds
    besides `out` is the file, not two more copies of its pixels (§14.7)."""
    if not inflate_into(data, source, out, MAX_PIXELS, expect):
        out[:] = decode_rgb(data, source, expect=expect).reshape(-1)


def write_rgb(path: str | Path, pixels: np.ndarray) -> None:
    """Write an (height, width, 3) uint8 array as a PNG, atomically: the file appears whole or not at all."""
    data = encode_rgb(pixels)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def encode_rgb(pixels: np.ndarray) -> bytes:
    """An (height, width, 3) uint8 array as the bytes of a pixel file (8-bit RGB PNG)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels are (height, width, 3) uint8, not {pixels.shape} {pixels.dtype}")
    return encode_png(pixels)


def image_size_for(n_bytes: int) -> tuple[int, int]:
    """The near-square (width, height) that holds n_bytes at three bytes a pixel."""
    n_pixels = max(1, -(-n_bytes // 3))
    width = int(np.ceil(np.sqrt(n_pixels)))
    return width, -(-n_pixels // width)


def bytes_to_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    """Byte i → pixel i // 3 (row-major), channel i % 3; unused bytes are 0."""
    capacity = width * height * 3
    if len(data) > capacity:
        raise ValueError(f"{len(data)} bytes do not fit a {width}x{height} RGB image")
    stream = np.zeros(capacity, dtype=np.uint8)
    stream[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return stream.reshape(height, width, 3)


def pixels_to_bytes(pixels: np.ndarray) -> bytes:
    return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()


def encode_tokens(rows: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Token texture: one row per prompt, pixel i = (id % 256, id // 256, 255), then (0, 0, 0). `rows` is
    read once, as it comes (a generator of each prompt's last window tokens is never held as lists), into
    one flat array; the texture is then filled with a few array operations, not a few per row."""
    flat, lengths = array("q"), array("q")
    for row in rows:
        flat.extend(row)
        lengths.append(len(row))
    if not lengths:
        raise PxglError("no prompts to encode")
    ids, counts = np.frombuffer(flat, np.int64), np.frombuffer(lengths, np.int64)
    starts = np.cumsum(counts) - counts
    empty = np.flatnonzero(counts == 0)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    bad_row = int(np.searchsorted(starts, bad[0], side="right")) - 1 if bad.size else len(counts)
    if empty.size and empty[0] < bad_row:
        raise PxglError(f"prompt {int(empty[0])} is empty: every prompt needs at least one token")
    if bad.size:
        i = int(bad[0])
        raise PxglError(
            f"prompt {bad_row}, position {i - int(starts[bad_row])}: token id {ids[i]} is outside 0..{vocab_size - 1}"
        )
    width = int(counts.max())
    pixels = np.zeros((len(counts), width, 3), dtype=np.uint8)
    # each token's place in the padded texture, rows laid end to end
    places = np.arange(ids.size, dtype=np.int64) + np.repeat(np.arange(len(counts)) * width - starts, counts)
    laid = pixels.reshape(-1, 3)
    laid[places, :2] = ids.astype("<u2").view(np.uint8).reshape(-1, 2)  # (id % 256, id // 256)
    laid[places, 2] = TOKEN_MARK
    return pixels


def token_lengths(pixels: np.ndarray, vocab_size: int, source: str = "token texture") -> np.ndarray:
    """Validate a token texture (tokens, then only (0, 0, 0); no empty row; ids < vocab_size) and
    return each row's token count."""
    is_token = pixels[..., 2] == TOKEN_MARK
    lengths = np.cumprod(is_token, axis=1).sum(axis=1)
    beyond = np.arange(pixels.shape[1])[None, :] >= lengths[:, None]
    junk = beyond & pixels.any(axis=2)
    if junk.any():
        r, i = (int(v) for v in np.argwhere(junk)[0])
        raise PxglError(
            f"{source}: row {r}, position {i}: pixel {tuple(int(c) for c in pixels[r, i])} is neither a token "
            "(blue 255) nor padding (0, 0, 0) after the row's last token"
        )
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise PxglError(f"{source}: row {int(empty[0])} is empty: every prompt needs at least one token")
    too_big = ~beyond & (token_ids(pixels) >= vocab_size)
    if too_big.any():
        r, i = (int(v) for v in np.argwhere(too_big)[0])
        raise PxglError(
            f"{source}: row {r}, position {i}: token id {token_ids(pixels)[r, i]} ≥ vocab size {vocab_size}; "
            "re-encode the prompt with this model's tokenizer"
        )
    return lengths


def token_ids(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., 0].astype(np.int64) + 256 * pixels[..., 1].astype(np.int64)


def decode_tokens(pixels: np.ndarray, vocab_size: int, source: str = "token texture") -> list[np.ndarray]:
    """Token ids of each row of a validated token texture."""
    lengths = token_lengths(pixels, vocab_size, source)
    ids = token_ids(pixels)
    return [ids[r, : lengths[r]] for r in range(pixels.shape[0])]


def token_tails(pixels: np.ndarray, lengths: np.ndarray, window: int) -> np.ndarray:
    """The token texture cut to each row's last `window` tokens, left-aligned, padded with (0, 0, 0)."""
    take = np.minimum(lengths, window)
    offsets = np.arange(window)[None, :]
    valid = offsets < take[:, None]
    columns = np.where(valid, (lengths - take)[:, None] + offsets, 0)
    tails = pixels[np.arange(pixels.shape[0])[:, None], columns]
    tails[~valid] = 0
    return tails


def encode_predictions(ids: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Prediction pixels: one row per prompt, (id % 256, id // 256, confidence byte), one pixel wide."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256, np.asarray(confidence)], axis=-1).astype(np.uint8)[:, None, :]


def decode_predictions(
    pixels: np.ndarray, source: str = "prediction pixels", vocab_size: int = TOKEN_IDS
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, confidence bytes) of a 1-pixel-wide prediction image whose ids are below vocab_size."""
    if pixels.shape[1] != 1:
        raise PxglError(f"{source}: {pixels.shape[1]} pixels wide; prediction pixels are 1 pixel wide")
    column = pixels[:, 0, :].astype(np.int64)
    ids = column[:, 0] + 256 * column[:, 1]
    too_big = np.flatnonzero(ids >= vocab_size)
    if too_big.size:
        row = int(too_big[0])
        raise PxglError(f"{source}: row {row}: token id {ids[row]} ≥ vocab size {vocab_size}")
    return ids, column[:, 2].astype(np.uint8)


def read_token_texture(path: str | Path, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, each row's token count) of a token texture file: the one reader of every command that
    runs one (docs/FORMATS.md §4). Prediction pixels are refused as such."""
    pixels = read_rgb(path, MAX_TOKEN_PIXELS, kind="token texture")
    if is_prediction_image(pixels):
        raise PxglError(
            f"{path}: prediction pixels (one pixel wide, blue a confidence), not a token texture; "
            "give the token texture of the prompts (pxgl infer --tokens-out writes one)"
        )
    return pixels, token_lengths(pixels, vocab_size, str(path))


def read_prompt_pixels(path: str | Path, vocab_size: int) -> np.ndarray:
    """A token texture or prediction pixels (is_prediction_image tells which), validated as what it is:
    the one reader of the commands that show either (decode, inspect)."""
    pixels = read_rgb(path, MAX_TOKEN_PIXELS, kind="token texture or prediction pixels")
    if is_prediction_image(pixels):
        decode_predictions(pixels, str(path), vocab_size)
    else:
        token_lengths(pixels, vocab_size, str(path))
    return pixels


def is_prediction_image(pixels: np.ndarray) -> bool:
    """Tell a prediction image from a token texture: one pixel wide and some blue is not the token mark."""
    return pixels.shape[1] == 1 and bool((pixels[:, 0, 2] != TOKEN_MARK).any())
