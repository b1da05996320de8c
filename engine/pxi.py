"""Pixel files (docs/FORMATS.md): PNG I/O, the byte stream ↔ pixel mapping, token textures and
prediction pixels. Every reader validates before it trusts; every writer is atomic."""

import io
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .constants import TOKEN_MARK
from .errors import PxglError
from .outputs import atomic_write

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_RGB = 2
PNG_HEAD_BYTES = 33
"""Signature (8), IHDR length and type (8), width, height, bit depth, colour type (10), rest of IHDR (7)."""
MAX_PIXELS = 1 << 26
"""Decompression-bomb guard: no pixel file of pxgl comes near 64 Mi pixels."""


def read_rgb(path: str | Path) -> np.ndarray:
    """A pixel file as an (height, width, 3) uint8 array; only 8-bit RGB PNGs are pixel files."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(PNG_HEAD_BYTES)
    except FileNotFoundError:
        raise PxglError(f"{path}: no such file") from None
    except OSError as e:
        raise PxglError(f"{path}: cannot read ({e.strerror})") from None
    width, height = _checked_size(head, str(path))
    return _decode(path, width, height, str(path))


def decode_rgb(data: bytes, source: str) -> np.ndarray:
    """A pixel file held in memory (a cartridge member) as (height, width, 3) uint8, with read_rgb's checks."""
    width, height = _checked_size(data[:PNG_HEAD_BYTES], source)
    return _decode(io.BytesIO(data), width, height, source)


def _checked_size(head: bytes, source: str) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR, refusing non-8-bit-RGB images and bombs before decoding."""
    if head[:8] != PNG_MAGIC:
        raise PxglError(f"{source}: not a PNG file; pixel files (.pxi) are PNG images")
    if len(head) < PNG_HEAD_BYTES or head[12:16] != b"IHDR":
        raise PxglError(f"{source}: truncated PNG header")
    width, height, depth, color = struct.unpack(">IIBB", head[16:26])
    if depth != 8 or color != PNG_COLOR_RGB:
        kind = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}.get(color, f"type {color}")
        raise PxglError(f"{source}: {depth}-bit {kind} PNG; pixel files are 8-bit RGB (save it as RGB, 8 bits)")
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise PxglError(f"{source}: absurd image size {width}x{height} (limit {MAX_PIXELS} pixels)")
    return width, height


def _decode(image: Path | BinaryIO, width: int, height: int, source: str) -> np.ndarray:
    try:
        with Image.open(image) as opened:
            opened.load()
            pixels = np.asarray(opened, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise PxglError(f"{source}: truncated or corrupt PNG ({e})") from None
    if pixels.shape != (height, width, 3):
        raise PxglError(f"{source}: decoded to shape {pixels.shape}, expected ({height}, {width}, 3)")
    return pixels


def write_rgb(path: str | Path, pixels: np.ndarray) -> None:
    """Write an (height, width, 3) uint8 array as a PNG, atomically: the file appears whole or not at all."""
    data = encode_rgb(pixels)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def encode_rgb(pixels: np.ndarray) -> bytes:
    """An (height, width, 3) uint8 array as the bytes of a pixel file (8-bit RGB PNG)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def read_text(path: str | Path, what: str, hint: str = "") -> str:
    """A UTF-8 text file the user named (a meta, tokenizer, prompts file), or one PxglError saying why not. Line
    ends are kept as they are (no newline translation: a lone carriage return is not a line end)."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PxglError(f"{path}: no such {what}{hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PxglError(f"{path}: cannot read the {what} as UTF-8 text ({e})") from None


def parse_json(text: str, where: str) -> Any:
    """JSON from a file pxgl reads (meta, tokenizer, manifest), strictly: a key repeated in one object is
    an error (a second 'members' or 'scale' must not silently replace the first), as is malformed or
    absurdly nested text."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if twice is not None:
            raise PxglError(f"{where}: key {twice!r} appears twice in one object")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        raise PxglError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise PxglError(f"{where}: JSON nested too deeply") from None


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


def encode_tokens(rows: Sequence[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Token texture: one row per prompt, pixel i = (id % 256, id // 256, 255), then (0, 0, 0)."""
    if not rows:
        raise PxglError("no prompts to encode")
    width = max(len(r) for r in rows)
    pixels = np.zeros((len(rows), max(width, 1), 3), dtype=np.uint8)
    for r, row in enumerate(rows):
        ids = np.asarray(row, dtype=np.int64)
        if ids.size == 0:
            raise PxglError(f"prompt {r} is empty: every prompt needs at least one token")
        bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
        if bad.size:
            i = int(bad[0])
            raise PxglError(f"prompt {r}, position {i}: token id {ids[i]} is outside 0..{vocab_size - 1}")
        pixels[r, : ids.size, 0] = ids % 256
        pixels[r, : ids.size, 1] = ids // 256
        pixels[r, : ids.size, 2] = TOKEN_MARK
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


def decode_predictions(pixels: np.ndarray, source: str = "prediction pixels") -> tuple[np.ndarray, np.ndarray]:
    """(ids, confidence bytes) of a 1-pixel-wide prediction image."""
    if pixels.shape[1] != 1:
        raise PxglError(f"{source}: {pixels.shape[1]} pixels wide; prediction pixels are 1 pixel wide")
    column = pixels[:, 0, :].astype(np.int64)
    return column[:, 0] + 256 * column[:, 1], column[:, 2].astype(np.uint8)


def is_prediction_image(pixels: np.ndarray) -> bool:
    """Tell a prediction image from a token texture: one pixel wide and some blue is not the token mark."""
    return pixels.shape[1] == 1 and bool((pixels[:, 0, 2] != TOKEN_MARK).any())
