"""Pixel files against docs/FORMATS.md §1, §4, §5: the byte↔pixel mapping, token textures, prediction
pixels, and the PNG reader's rejection of everything that is not an 8-bit RGB PNG."""

import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pxgl import png as png_module
from pxgl.errors import PxglError
from pxgl.pxi import (
    MAX_PIXELS,
    bytes_to_pixels,
    decode_predictions,
    decode_rgb,
    decode_tokens,
    encode_predictions,
    encode_rgb,
    encode_tokens,
    image_size_for,
    is_prediction_image,
    pixels_to_bytes,
    read_rgb,
    token_tails,
    write_rgb,
)

from tests.reference import strict_png


@given(st.binary(max_size=5000))
def test_byte_i_lives_in_pixel_i_div_3_channel_i_mod_3(data):
    width, height = image_size_for(len(data))
    pixels = bytes_to_pixels(data, width, height)
    assert pixels.shape == (height, width, 3)
    for i in range(0, len(data), max(1, len(data) // 50)):  # spot-check the spec's formula directly
        p = i // 3
        assert pixels[p // width, p % width, i % 3] == data[i]
    stream = pixels_to_bytes(pixels)
    assert stream[: len(data)] == data
    assert not any(stream[len(data) :]), "unused bytes must be 0"


@given(st.integers(min_value=0, max_value=10**6))
def test_image_size_is_near_square_and_holds_the_stream(n):
    width, height = image_size_for(n)
    assert width * height * 3 >= n
    assert width * (height - 1) * 3 < max(n, 1), "one row fewer must not fit"
    assert abs(width - height) <= 1 or width * height <= 2


def test_pixellm_v0_layout_is_306_by_305():
    assert image_size_for(279_680) == (306, 305)


@given(
    st.lists(st.lists(st.integers(0, 1023), min_size=1, max_size=40), min_size=1, max_size=12),
)
def test_token_texture_round_trip_and_layout(rows):
    pixels = encode_tokens(rows, 1024)
    assert pixels.shape == (len(rows), max(map(len, rows)), 3)
    for r, row in enumerate(rows):
        for i, token in enumerate(row):
            assert tuple(pixels[r, i]) == (token % 256, token // 256, 255)
        assert not pixels[r, len(row) :].any()
    assert [list(ids) for ids in decode_tokens(pixels, 1024)] == rows


@given(st.lists(st.lists(st.integers(0, 999), min_size=1, max_size=30), min_size=1, max_size=8), st.integers(1, 12))
def test_token_tails_keep_each_rows_last_window_tokens(rows, window):
    pixels = encode_tokens(rows, 1000)
    lengths = np.array([len(r) for r in rows])
    tails = token_tails(pixels, lengths, window)
    assert [list(ids) for ids in decode_tokens(tails, 1000)] == [r[-window:] for r in rows]


def test_token_texture_rejections(rng):
    good = encode_tokens([[1, 2, 3], [4]], 1024)
    junk = good.copy()
    junk[1, 2] = (9, 0, 0)
    with pytest.raises(PxglError, match=r"row 1, position 2: pixel \(9, 0, 0\) is neither a token"):
        decode_tokens(junk, 1024)
    empty = good.copy()
    empty[0] = 0
    with pytest.raises(PxglError, match="row 0 is empty"):
        decode_tokens(empty, 1024)
    big = good.copy()
    token = int(rng.integers(1024, 65536))
    big[0, 1] = (token % 256, token // 256, 255)
    with pytest.raises(PxglError, match=rf"row 0, position 1: token id {token} ≥ vocab size 1024"):
        decode_tokens(big, 1024)
    with pytest.raises(PxglError, match="prompt 1 is empty"):
        encode_tokens([[1], []], 1024)
    with pytest.raises(PxglError, match="prompt 0, position 1: token id 1024 is outside"):
        encode_tokens([[1, 1024]], 1024)


@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 255)), min_size=1, max_size=50))
def test_prediction_pixels_round_trip(pairs):
    ids = np.array([p[0] for p in pairs])
    conf = np.array([p[1] for p in pairs], dtype=np.uint8)
    pixels = encode_predictions(ids, conf)
    assert pixels.shape == (len(pairs), 1, 3)
    assert all(tuple(pixels[r, 0]) == (i % 256, i // 256, c) for r, (i, c) in enumerate(pairs))
    got_ids, got_conf = decode_predictions(pixels)
    assert got_ids.tolist() == ids.tolist() and got_conf.tolist() == conf.tolist()
    assert is_prediction_image(pixels) == bool((conf != 255).any())


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.data())
def test_write_then_read_is_lossless(tmp_path_factory, width, height, data):
    pixels = np.frombuffer(data.draw(st.binary(min_size=width * height * 3, max_size=width * height * 3)), np.uint8)
    pixels = pixels.reshape(height, width, 3)
    path = tmp_path_factory.mktemp("png") / "x.pxi"
    write_rgb(path, pixels)
    assert np.array_equal(read_rgb(path), pixels)
    assert [p.name for p in path.parent.iterdir()] == ["x.pxi"], "no temporary file may remain"


def png_bytes(width: int, height: int, depth: int, color: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def filtered(pixels: np.ndarray, filters: list[int]) -> bytes:
    """The scanlines of `pixels`, row y filtered with filters[y] (ISO/IEC 15948 §9), byte by byte."""
    width = pixels.shape[1]
    rows, above = [], [0] * (3 * width)
    for y, kind in enumerate(filters):
        line = [int(v) for v in pixels[y].reshape(-1)]
        out = [kind]
        for x, value in enumerate(line):
            a, b, c = (line[x - 3] if x >= 3 else 0), above[x], (above[x - 3] if x >= 3 else 0)
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c
            out.append((value - (0, a, b, (a + b) // 2, paeth)[kind]) % 256)
        rows.append(bytes(out))
        above = line
    return b"".join(rows)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_every_png_filter_decodes_as_the_reference_reads_it(width, height, data):
    """Rows filtered None, Sub and Up are decoded with numpy, files with Average or Paeth rows by PIL: every
    mixture reads as the strict reference (tests/reference/strict_png.py) reads it."""
    pixels = np.frombuffer(data.draw(st.binary(min_size=width * height * 3, max_size=width * height * 3)), np.uint8)
    pixels = pixels.reshape(height, width, 3)
    filters = data.draw(st.lists(st.sampled_from([0, 1, 2] * 3 + [3, 4]), min_size=height, max_size=height))
    file = png_bytes(width, height, 8, 2, filtered(pixels, filters))
    assert np.array_equal(strict_png.read(file), pixels)
    assert np.array_equal(decode_rgb(file, "filters.pxi"), pixels)


def test_many_up_rows_decode_as_the_reference_reads_them(rng):
    """Past png.UP_ROWS_ONE_BY_ONE Up rows, the running sum down every row decodes them."""
    pixels = rng.integers(0, 256, (3000, 2, 3), dtype=np.uint8)
    filters = rng.choice([0, 1, 2, 2, 2], 3000).tolist()
    file = png_bytes(2, 3000, 8, 2, filtered(pixels, filters))
    assert filters.count(2) > png_module.UP_ROWS_ONE_BY_ONE
    assert np.array_equal(strict_png.read(file), pixels)
    assert np.array_equal(decode_rgb(file, "tall.pxi"), pixels)


def test_pxgl_writes_rows_unfiltered_and_pil_reads_them(rng):
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    file = encode_rgb(pixels)
    with Image.open(io.BytesIO(file)) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), pixels)
    scanlines = zlib.decompress(file[8 + 25 + 8 : -12 - 4])  # the one IDAT chunk's body
    assert scanlines[:: 1 + 3 * 7] == bytes(5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"GIF89a not a png"), "not a PNG file"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "truncated PNG"),
        (lambda p: Image.new("RGBA", (4, 4)).save(p, "PNG"), "8-bit RGBA PNG; pixel files are 8-bit RGB"),
        (lambda p: Image.new("L", (4, 4)).save(p, "PNG"), "8-bit grey PNG"),
        (lambda p: Image.new("P", (4, 4)).save(p, "PNG"), "-bit palette PNG"),
        (lambda p: p.write_bytes(png_bytes(2, 2, 16, 2, b"\x00" * (2 * (1 + 12)))), "16-bit RGB PNG"),
        (lambda p: p.write_bytes(png_bytes(1 << 14, 1 << 13, 8, 2, b"")), "absurd image size"),
        (lambda p: p.write_bytes(png_bytes(8, 8, 8, 2, b"\x00" * 10)), "truncated or corrupt PNG"),
    ],
)
def test_reader_rejects_what_is_not_a_pixel_file(tmp_path, make, message):
    path = tmp_path / "bad.pxi"
    make(path)
    with pytest.raises(PxglError, match=message) as info:
        read_rgb(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_decompression_bomb_limit_is_checked_before_decoding(tmp_path):
    side = int(np.sqrt(MAX_PIXELS)) + 1
    path = tmp_path / "bomb.pxi"
    path.write_bytes(png_bytes(side, side, 8, 2, b""))  # header claims > 64 Mi pixels; no data at all
    with pytest.raises(PxglError, match="absurd image size"):
        read_rgb(path)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 200))
def test_random_or_truncated_bytes_never_escape_as_other_errors(tmp_path_factory, noise, cut):
    path = tmp_path_factory.mktemp("junk") / "junk.pxi"
    valid = png_bytes(3, 2, 8, 2, b"".join(b"\x00" + bytes(range(9)) for _ in range(2)))
    for data in (noise, valid[:cut], valid[:16] + noise):
        path.write_bytes(data)
        with contextlib.suppress(PxglError):
            read_rgb(path)
