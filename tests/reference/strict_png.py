"""A strict reader of pxgl pixel files written from the PNG specification (ISO/IEC 15948) and
docs/FORMATS.md §0.2 with struct and zlib alone: the independent reference the engine's reader is fuzzed
against. Small images only (it unfilters byte by byte)."""

import struct
import zlib

import numpy as np

SIGNATURE = bytes([137, 80, 78, 71, 13, 10, 26, 10])
MAX_ANCILLARY_CHUNKS = 64
MAX_ANCILLARY_BYTES = 64 * 1024


class Refused(Exception):
    """The file is not a pixel file pxgl may read."""


def read(data: bytes, max_pixels: int = 1 << 26) -> np.ndarray:
    """The (height, width, 3) uint8 pixels of a strict 8-bit RGB non-interlaced PNG; Refused otherwise."""
    if not data.startswith(SIGNATURE):
        raise Refused("signature")
    chunks: list[tuple[bytes, bytes]] = []
    at = len(SIGNATURE)
    while True:
        if at + 12 > len(data):
            raise Refused("chunk cut off")
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if len(body) != length or at + 12 + length > len(data):
            raise Refused("chunk cut off")
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        if crc != zlib.crc32(kind + body) or not all(65 <= c <= 90 or 97 <= c <= 122 for c in kind):
            raise Refused("crc or chunk type")
        chunks.append((kind, body))
        at += 12 + length
        if kind == b"IEND":
            break
    if at != len(data):
        raise Refused("bytes after IEND")
    kinds = [k for k, _ in chunks]
    if kinds[0] != b"IHDR" or kinds.count(b"IHDR") != 1 or kinds.count(b"IEND") != 1 or chunks[-1][1]:
        raise Refused("IHDR / IEND")
    if len(chunks[0][1]) != 13:
        raise Refused("IHDR length")
    width, height, depth, colour, method, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if (depth, colour, method, filtering, interlace) != (8, 2, 0, 0, 0):
        raise Refused("not 8-bit RGB, methods 0")
    if not (width and height and width * height <= max_pixels):
        raise Refused("size")
    idat = [i for i, k in enumerate(kinds) if k == b"IDAT"]
    if not idat or idat != list(range(idat[0], idat[0] + len(idat))):
        raise Refused("IDAT missing or split")
    ancillary = [b for k, b in chunks if k[0] >= 97]
    if any(k[0] < 97 and k not in (b"IHDR", b"IDAT", b"IEND") for k in kinds):
        raise Refused("unknown critical chunk")
    if len(ancillary) > MAX_ANCILLARY_CHUNKS or any(len(b) > MAX_ANCILLARY_BYTES for b in ancillary):
        raise Refused("ancillary bounds")
    stride = 3 * width
    expected = height * (1 + stride)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(chunks[i][1] for i in idat), expected + 1)
    except zlib.error as e:
        raise Refused(f"zlib: {e}") from None
    if len(raw) != expected or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise Refused("image data length")
    return _unfilter(raw, width, height)


def _unfilter(raw: bytes, width: int, height: int) -> np.ndarray:
    stride = 3 * width
    previous = [0] * stride
    rows = []
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, encoded = line[0], line[1:]
        out = [0] * stride
        for x in range(stride):
            a = out[x - 3] if x >= 3 else 0
            b = previous[x]
            c = previous[x - 3] if x >= 3 else 0
            if kind == 0:
                predictor = 0
            elif kind == 1:
                predictor = a
            elif kind == 2:
                predictor = b
            elif kind == 3:
                predictor = (a + b) // 2
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            else:
                raise Refused(f"filter type {kind}")
            out[x] = (encoded[x] + predictor) & 0xFF
        rows.append(out)
        previous = out
    return np.array(rows, dtype=np.uint8).reshape(height, width, 3)
