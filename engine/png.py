"""Strict PNG checking (docs/FORMATS.md §0.2): the chunk stream of a pixel file is walked and its image data
inflated, bounded, before any decoder sees it, so a file is decoded only if it is complete and exact. Rows
filtered None, Sub or Up (all a pxgl writer uses) are decoded here with numpy; a file with Average or Paeth
rows goes to PIL's decoder. pxgl writes pixel files unfiltered (encode_png)."""

import struct
import zlib

import numpy as np

from .errors import PxglError
from .progress import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_RGB = 2
COLOR_NAMES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
CHUNK_HEAD = struct.Struct(">I4s")
IHDR = struct.Struct(">IIBBBBB")
MAX_ANCILLARY_CHUNKS = 64
MAX_ANCILLARY_BYTES = 64 << 10
MAX_FILTER_TYPE = 4
SUB, UP = 1, 2
UP_ROWS_ONE_BY_ONE = 1024
"""Up rows unfiltered one array operation each: below this, faster than the running sum down every row
(pixellm_v1's 158 Up rows: 0.3 ms against 4.5 ms)."""
INPUT_STEP = 1 << 20
OUTPUT_STEP = 16 << 20


def check_png(
    data: bytes, source: str, max_pixels: int, expect: tuple[int, int] | None = None, kind: str = "pixel file"
) -> tuple[int, int, bytes, bytearray]:
    """(width, height, the PNG without its ancillary chunks, its image data inflated) of an 8-bit RGB PNG
    whose every chunk and every byte of image data is as the header promises; the size is checked against
    `max_pixels` and `expect` before anything is inflated. Ancillary chunks never change pixels, so a decoder
    is only given the critical ones and cannot trip over a malformed ancillary chunk."""
    width, height, chunks, ancillary = _checked_chunks(data, source, max_pixels, expect, kind)
    image_data = b"".join(body for name, body in chunks if name == b"IDAT")
    scanlines = _check_image_data(image_data, width, height, source)
    if not ancillary:
        return width, height, data, scanlines
    critical = _chunk(b"IHDR", chunks[0][1]) + _chunk(b"IDAT", image_data) + _chunk(b"IEND", b"")
    return width, height, PNG_MAGIC + critical, scanlines


def inflate_into(
    data: bytes, source: str, out: np.ndarray, max_pixels: int, expect: tuple[int, int], kind: str = "pixel file"
) -> bool:
    """check_png's checks, the image data inflated a piece at a time straight into `out` (the image's
    height·width·3 bytes, 1-D): no scanline copy of the whole image is ever held. Rows filtered None, Sub or
    Up are decoded here; False when a row is filtered Average or Paeth (or Up rows are too many to add one
    by one), and `out` is then not the pixels: the caller decodes the whole image instead."""
    width, height, chunks, _ = _checked_chunks(data, source, max_pixels, expect, kind)
    bodies = [body for name, body in chunks if name == b"IDAT"]
    compressed = bodies[0] if len(bodies) == 1 else b"".join(bodies)
    rows = out.reshape(height, 3 * width)
    row = 1 + 3 * width
    expected, produced, done, decodable = height * row, 0, 0, True
    inflater, carry = zlib.decompressobj(), bytearray()
    view, fed = memoryview(compressed), 0
    try:
        while fed < len(view) and not inflater.eof:
            pending = view[fed : fed + INPUT_STEP]
            fed += len(pending)
            while pending and not inflater.eof:
                piece = inflater.decompress(pending, min(OUTPUT_STEP, expected + 1 - produced))
                pending = inflater.unconsumed_tail
                produced += len(piece)
                if produced > expected:
                    raise PxglError(f"{source}: the PNG's image data runs past the {height} rows its header promises")
                carry += piece
                ready = len(carry) // row
                if ready:
                    decodable = _unfilter_into(carry, ready, row, rows, done, source) and decodable
                    del carry[: ready * row]
                    done += ready
            report("reading pixels", min(produced, expected), expected)
    except zlib.error as e:
        raise PxglError(f"{source}: truncated or corrupt PNG image data ({e})") from None
    _check_inflated_whole(inflater, produced, expected, row, height, len(view) - fed, source)
    return decodable


def _unfilter_into(carry: bytearray, count: int, row: int, rows: np.ndarray, first: int, source: str) -> bool:
    """Scanlines first..first+count-1, held at the start of `carry`, unfiltered into `rows` (Sub and Up as
    unfilter does; an Up row adds the row above it, already decoded). False for an Average or Paeth row."""
    scanlines = np.frombuffer(carry, np.uint8, count * row).reshape(count, row)
    filters = scanlines[:, 0]
    if filters.max() > MAX_FILTER_TYPE:
        bad = int(np.argmax(filters > MAX_FILTER_TYPE))
        raise PxglError(f"{source}: row {first + bad} has PNG filter type {filters[bad]} (types are 0..4)")
    ups = np.flatnonzero(filters == UP)
    if filters.max() > UP or len(ups) > UP_ROWS_ONE_BY_ONE:
        return False
    target = rows[first : first + count]
    target[:] = scanlines[:, 1:]
    sub = filters == SUB
    if sub.any():
        width = (row - 1) // 3
        target[sub] = np.cumsum(target[sub].reshape(-1, width, 3), axis=1, dtype=np.uint8).reshape(-1, row - 1)
    for y in ups[first + ups > 0]:  # in order: each adds the row above it (image row 0 adds zeros)
        np.add(rows[first + y - 1], target[y], out=target[y])
    return True


def _checked_chunks(
    data: bytes, source: str, max_pixels: int, expect: tuple[int, int] | None, kind: str
) -> tuple[int, int, list[tuple[bytes, memoryview]], list[tuple[bytes, memoryview]]]:
    """(width, height, every chunk, the ancillary ones) of a PNG whose chunk stream is as §0.2 says: all but
    the image data itself, which is checked as it is inflated."""
    if data[:8] != PNG_MAGIC:
        raise PxglError(f"{source}: not a PNG file; pixel files (.pxi) are PNG images")
    chunks = list(_chunks(data, source))
    names = [name for name, _ in chunks]
    if names[0] != b"IHDR" or names.count(b"IHDR") != 1:
        raise PxglError(f"{source}: a PNG has exactly one IHDR chunk, first; this one has {names.count(b'IHDR')}")
    width, height = _header(chunks[0][1], source, max_pixels, expect, kind)
    if names[-1] != b"IEND" or names.count(b"IEND") != 1:
        raise PxglError(f"{source}: truncated PNG (no IEND chunk at the end)")
    if chunks[-1][1]:
        raise PxglError(f"{source}: the IEND chunk is not empty")
    first = names.index(b"IDAT") if b"IDAT" in names else -1
    if first < 0:
        raise PxglError(f"{source}: no image data (IDAT chunk)")
    runs = names.count(b"IDAT")
    if names[first : first + runs] != [b"IDAT"] * runs:
        raise PxglError(f"{source}: the IDAT chunks are not consecutive")
    ancillary = [(name, body) for name, body in chunks if name[0:1].islower()]
    unknown = {name for name, _ in chunks if not name[0:1].islower()} - {b"IHDR", b"IDAT", b"IEND"}
    if unknown:
        raise PxglError(f"{source}: PNG chunk {sorted(unknown)[0].decode('latin-1')!r} is not read by pxgl")
    if len(ancillary) > MAX_ANCILLARY_CHUNKS:
        raise PxglError(f"{source}: {len(ancillary)} ancillary PNG chunks, past the limit of {MAX_ANCILLARY_CHUNKS}")
    for name, body in ancillary:
        if len(body) > MAX_ANCILLARY_BYTES:
            raise PxglError(
                f"{source}: ancillary chunk {name.decode('latin-1')!r} of {len(body)} bytes, past the limit "
                f"of {MAX_ANCILLARY_BYTES}"
            )
    return width, height, chunks, ancillary


def unfilter(scanlines: bytes | bytearray, width: int, height: int) -> np.ndarray | None:
    """The (height, width, 3) pixels of checked scanlines filtered None, Sub or Up, every row at once: Sub
    is a running sum along a row, Up one down the rows. None where a row is filtered Average or Paeth (each
    byte of those waits on the one before it: no array operation decodes them)."""
    rows = np.frombuffer(scanlines, np.uint8).reshape(height, 1 + 3 * width)
    filters = rows[:, 0]
    if filters.max() > UP:
        return None
    pixels = rows[:, 1:].reshape(height, width, 3).copy()
    sub = filters == SUB
    if sub.any():
        pixels[sub] = np.cumsum(pixels[sub], axis=1, dtype=np.uint8)
    up = filters == UP
    ups = np.flatnonzero(up)
    if len(ups) <= UP_ROWS_ONE_BY_ONE:  # each adds the row above it, in order (row 0's is zeros)
        for y in ups[ups > 0]:
            np.add(pixels[y - 1], pixels[y], out=pixels[y])
        return pixels
    # A row adds onto the one above it through a run of Up rows: sum down every row, then take from each
    # row the sum up to the row above its run's first row (None or Sub; the picture starts on zeros).
    # Row numbers as int32, in place: a 1 x 2^26 picture makes them 256 MB each.
    total = np.cumsum(pixels, axis=0, dtype=np.uint8)
    del pixels
    before = np.arange(height, dtype=np.int32)
    before[up] = -1
    np.maximum.accumulate(before, out=before)
    before -= 1
    taken = before >= 0
    total[taken] -= total[before[taken]]
    return total


def encode_png(pixels: np.ndarray) -> bytes:
    """An (height, width, 3) uint8 array as an 8-bit RGB PNG, each row unfiltered, deflated at zlib's default
    level: pixellm_v1's weights so take 1,093,554 bytes, where PIL's adaptive filters took 1,165,166."""
    height, width, _ = pixels.shape
    if not height or not width:
        raise ValueError(f"a PNG has at least one row and one column, not {width}x{height}")
    rows = np.zeros((height, 1 + 3 * width), np.uint8)  # each row's filter byte, 0, then its pixels
    rows[:, 1:] = pixels.reshape(height, 3 * width)
    header = IHDR.pack(width, height, 8, PNG_COLOR_RGB, 0, 0, 0)
    image = deflate(rows.data)
    return PNG_MAGIC + _chunk(b"IHDR", header) + _chunk(b"IDAT", image) + _chunk(b"IEND", b"")


DEFLATE_PIECE = 4 << 20
"""Bytes deflated between progress reports (about 0.15 s at zlib's default level)."""


def deflate(data: memoryview) -> bytes:
    """zlib.compress's stream, a piece at a time, each reported (pacing.report): the same bytes, as no piece
    flushes the stream."""
    deflater, flat = zlib.compressobj(), data.cast("B")
    parts = []
    for start in range(0, len(flat), DEFLATE_PIECE):
        parts.append(deflater.compress(flat[start : start + DEFLATE_PIECE]))
        report("compressing pixels", min(start + DEFLATE_PIECE, len(flat)), len(flat))
    parts.append(deflater.flush())
    return b"".join(parts)


def _chunk(name: bytes, body: bytes | memoryview) -> bytes:
    return CHUNK_HEAD.pack(len(body), name) + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(name)))


def _chunks(data: bytes, source: str):
    """(type, data) of each chunk, its length and CRC checked; nothing may follow IEND."""
    offset = len(PNG_MAGIC)
    while offset < len(data):
        if offset + CHUNK_HEAD.size > len(data):
            raise PxglError(f"{source}: truncated PNG (a chunk header is cut off at byte {offset})")
        length, name = CHUNK_HEAD.unpack_from(data, offset)
        end = offset + CHUNK_HEAD.size + length + 4
        if end > len(data):
            raise PxglError(f"{source}: truncated PNG (chunk {name!r} at byte {offset} runs past the end)")
        if not name.isalpha():
            raise PxglError(f"{source}: corrupt PNG (chunk type {name!r} at byte {offset} is not four letters)")
        body = memoryview(data)[offset + CHUNK_HEAD.size : end - 4]  # a view: image data is not copied
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(body, zlib.crc32(name)) != crc:
            raise PxglError(f"{source}: PNG chunk {name!r} at byte {offset} fails its CRC check (corrupt file)")
        yield name, body
        offset = end
        if name == b"IEND" and offset != len(data):
            raise PxglError(f"{source}: {len(data) - offset} bytes after the PNG's IEND chunk")
    if offset == len(PNG_MAGIC):
        raise PxglError(f"{source}: truncated PNG (no chunks)")


def _header(body: bytes, source: str, max_pixels: int, expect: tuple[int, int] | None, kind: str) -> tuple[int, int]:
    if len(body) != IHDR.size:
        raise PxglError(f"{source}: an IHDR chunk of {len(body)} bytes; a PNG's is {IHDR.size}")
    width, height, depth, color, compression, filtering, interlace = IHDR.unpack(body)
    if depth != 8 or color != PNG_COLOR_RGB:
        kind = COLOR_NAMES.get(color, f"type {color}")
        raise PxglError(f"{source}: {depth}-bit {kind} PNG; pixel files are 8-bit RGB (save it as RGB, 8 bits)")
    if compression or filtering or interlace:
        raise PxglError(
            f"{source}: PNG compression {compression}, filter {filtering}, interlace {interlace}; "
            "pixel files are 0, 0, 0 (save it without interlacing)"
        )
    if width == 0 or height == 0 or width * height > max_pixels:
        raise PxglError(
            f"{source}: absurd image size {width}x{height}, over the {kind} size limit of {max_pixels} pixels"
        )
    if expect is not None and (width, height) != expect:
        raise PxglError(f"{source}: image is {width}x{height} but its meta says {expect[0]}x{expect[1]}")
    return width, height


def _check_image_data(compressed: bytes, width: int, height: int, source: str) -> bytearray:
    """The scanlines: the zlib stream inflates to exactly height rows of 1 + 3·width bytes, never inflated past
    that. Input is fed a slice at a time so that what zlib leaves unconsumed, and copies, stays small."""
    row = 1 + 3 * width
    expected = height * row
    inflater = zlib.decompressobj()
    scanlines = bytearray(expected + 1)  # a byte more: data past the promised rows lands there, and is refused
    produced = fed = 0
    view = memoryview(compressed)
    try:
        while fed < len(view) and not inflater.eof:
            pending = view[fed : fed + INPUT_STEP]
            fed += len(pending)
            while pending and not inflater.eof:
                out = inflater.decompress(pending, min(OUTPUT_STEP, expected + 1 - produced))
                pending = inflater.unconsumed_tail
                scanlines[produced : produced + len(out)] = out
                produced += len(out)
                if produced > expected:
                    raise PxglError(f"{source}: the PNG's image data runs past the {height} rows its header promises")
            report("reading pixels", min(produced, expected), expected)
    except zlib.error as e:
        raise PxglError(f"{source}: truncated or corrupt PNG image data ({e})") from None
    _check_inflated_whole(inflater, produced, expected, row, height, len(view) - fed, source)
    del scanlines[expected:]
    filters = scanlines[::row]
    if max(filters, default=0) > MAX_FILTER_TYPE:
        bad = next(i for i, f in enumerate(filters) if f > MAX_FILTER_TYPE)
        raise PxglError(f"{source}: row {bad} has PNG filter type {filters[bad]} (types are 0..4)")
    return scanlines


def _check_inflated_whole(
    inflater: "zlib._Decompress", produced: int, expected: int, row: int, height: int, unfed: int, source: str
) -> None:
    """The image data inflated to exactly the scanlines the header promises, its stream ended, and nothing
    after it (`unfed`: compressed bytes never given to the inflater)."""
    if produced != expected or not inflater.eof:
        raise PxglError(
            f"{source}: truncated or corrupt PNG: its image data holds {produced // row} of the {height} rows its "
            f"header promises ({produced} bytes, expected {expected})"
        )
    trailing = len(inflater.unused_data) + unfed
    if trailing:
        raise PxglError(f"{source}: {trailing} bytes after the PNG's compressed image data")
