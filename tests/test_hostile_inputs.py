"""Hostile files of every kind pxgl reads (docs/FORMATS.md §0, §4-§6, §8.3), one class per test: each is
refused through the CLI with exit status 2 and one line, no traceback, nothing written, and quickly (a
FIFO never blocks, a bomb is never inflated). PNGs are built here with struct and zlib, never the engine."""

import json
import os
import shutil
import signal
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from pxgl import png as png_module
from pxgl import pxi
from pxgl.errors import PxglError
from pxgl.gl import GLBackend
from pxgl.pxi import read_prompt_pixels, read_token_texture
from pxgl.tokenizer import MAX_TOKEN_BYTES, Tokenizer

from tests.cartridges import pxgl, read_members, relisted, snapshot, write_contents
from tests.cli_process import PEAK_MEMORY
from tests.reference import strict_png

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "assets"
NAME = "pixellm_v0"
SIGNATURE = b"\x89PNG\r\n\x1a\n"
PATIENCE_S = 20
"""A test that would hang (a FIFO read) fails after this long instead."""


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def ihdr(width: int, height: int) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def raw_rows(pixels: np.ndarray) -> bytes:
    """Filter type 0 before every row, as the PNG spec lays out image data."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    return np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()


def png(pixels: np.ndarray, rows: int | None = None, extra: bytes = b"", after: bytes = b"") -> bytes:
    """An 8-bit RGB PNG of `pixels` whose IDAT holds only the first `rows` rows (a complete zlib stream),
    with `extra` chunks before IDAT and `after` bytes after IEND."""
    height, width, _ = pixels.shape
    data = zlib.compress(raw_rows(pixels[: height if rows is None else rows]))
    return SIGNATURE + ihdr(width, height) + extra + chunk(b"IDAT", data) + chunk(b"IEND", b"") + after


@pytest.fixture
def patience():
    """Fail, rather than hang, if a read blocks."""

    def expire(*_):
        raise AssertionError(f"pxgl blocked for {PATIENCE_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(PATIENCE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A copy of the bundled model (weights, meta, tokenizer) to break."""
    folder = tmp_path / "model"
    folder.mkdir()
    for suffix in (".pxi", ".meta.json", ".tokenizer.json"):
        shutil.copy(BUNDLED / f"{NAME}{suffix}", folder / f"{NAME}{suffix}")
    return folder


@pytest.fixture
def no_gpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a GL context was created for input that must be refused first")

    monkeypatch.setattr(GLBackend, "__init__", refuse)


def refused(monkeypatch, capsys, tmp_path: Path, message: str, *args: str) -> str:
    """Run pxgl; it exits 2 with one line matching `message`, no traceback, and writes nothing."""
    before = snapshot(tmp_path)
    code, out, err = pxgl(monkeypatch, capsys, *args)
    assert code == 2, f"pxgl {' '.join(args)} exited {code}: {out}{err}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err + out
    assert message in err, f"{message!r} not in {err!r}"
    assert snapshot(tmp_path) == before, "something was written"
    return err


# --- strict PNG --------------------------------------------------------------------------------------


def test_truncated_image_data_is_refused(model_dir, tmp_path, monkeypatch, capsys, no_gpu):
    weights = model_dir / f"{NAME}.pxi"
    pixels = strict_png.read(weights.read_bytes())
    assert pixels.shape[0] == 305
    weights.write_bytes(png(pixels, rows=100))  # a complete zlib stream of 100 rows of the 305 promised
    with pytest.raises(strict_png.Refused):
        strict_png.read(weights.read_bytes())
    monkeypatch.chdir(tmp_path)
    refused(monkeypatch, capsys, tmp_path, "holds 100 of the 305 rows", "inspect", str(weights))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-8] + bytes([data[-8] ^ 1]) + data[-7:], "fails its CRC check"),  # IEND's CRC
        (lambda data: data[:33] + ihdr(2, 2) + data[33:], "exactly one IHDR"),
        (lambda data: data + b"\x00", "1 bytes after the PNG's IEND chunk"),
        (lambda data: data[:33] + chunk(b"PLTE", b"\x00" * 3) + data[33:], "PNG chunk 'PLTE' is not read"),
        (lambda data: data[:33] + chunk(b"tEXt", b"x" * 70_000) + data[33:], "ancillary chunk 'tEXt' of 70000"),
    ],
    ids=["crc", "second_ihdr", "after_iend", "plte", "big_ancillary"],
)
def test_corrupt_png_chunk_streams_are_refused(damage, message, tmp_path, rng, monkeypatch, capsys, no_gpu):
    texture = np.zeros((2, 2, 3), np.uint8)
    texture[:, :, 0] = rng.integers(0, 256, (2, 2))
    texture[:, :, 2] = 255
    path = tmp_path / "tokens.pxi"
    path.write_bytes(damage(png(texture)))
    with pytest.raises(strict_png.Refused):
        strict_png.read(path.read_bytes())
    monkeypatch.chdir(tmp_path)
    refused(monkeypatch, capsys, tmp_path, message, "inspect", "tokens.pxi")


def test_huge_token_texture_is_refused_by_its_size_before_decoding(tmp_path, monkeypatch, capsys, no_gpu):
    side = 8192  # 2^26 pixels: a complete, valid PNG of zeros (about 200 KB), 192 MiB once decoded
    deflate = zlib.compressobj(1)
    row = bytes(1 + 3 * side)
    body = b"".join(deflate.compress(row * 512) for _ in range(side // 512)) + deflate.flush()
    path = tmp_path / "big.pxi"
    path.write_bytes(SIGNATURE + ihdr(side, side) + chunk(b"IDAT", body) + chunk(b"IEND", b""))

    inflate = png_module._check_image_data

    def inflate_small(compressed: bytes, width: int, height: int, source: str) -> bytes:
        assert width * height <= pxi.MAX_TOKEN_PIXELS, f"{source} was inflated"
        return inflate(compressed, width, height, source)

    monkeypatch.setattr(png_module, "_check_image_data", inflate_small)
    monkeypatch.chdir(tmp_path)
    message = "absurd image size 8192x8192, over the {} size limit of 16777216 pixels"
    refused(monkeypatch, capsys, tmp_path, message.format("token texture or prediction pixels"), "decode", "big.pxi")
    run = ["run", "--input", "big.pxi", "--out", "out.pxi"]
    refused(monkeypatch, capsys, tmp_path, message.format("token texture"), *run)
    refused(monkeypatch, capsys, tmp_path, message.format("pixel file without a meta"), "inspect", "big.pxi")


def test_weights_of_another_size_are_refused_before_decoding(model_dir, tmp_path, monkeypatch, capsys):
    weights = model_dir / f"{NAME}.pxi"
    weights.write_bytes(png(np.zeros((40, 30, 3), np.uint8)))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the image was inflated")

    monkeypatch.setattr(png_module, "_check_image_data", no_decoding)
    monkeypatch.chdir(tmp_path)
    refused(monkeypatch, capsys, tmp_path, "image is 30x40 but its meta says 306x305", "inspect", str(weights))


# --- tokenizer caps ----------------------------------------------------------------------------------


def doubling_tokenizer(merges: int = 1000) -> bytes:
    """About 9 KB whose merge i joins token 255 + i to itself: token lengths 2, 4, 8 ... 2^1000."""
    pairs = [[97, 97]] + [[256 + i, 256 + i] for i in range(merges - 1)]
    doc = {"format": "pxgl-bpe", "version": 0, "vocab_size": 256 + merges, "merges": pairs}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_doubling_tokenizer_is_refused_bare_in_a_cartridge_and_by_inspect(
    model_dir, tmp_path, monkeypatch, capsys, patience
):
    message = "merge 8 makes a token of 512 bytes, past the limit of 256"
    (model_dir / f"{NAME}.tokenizer.json").write_bytes(doubling_tokenizer())
    monkeypatch.chdir(tmp_path)
    refused(monkeypatch, capsys, tmp_path, message, "encode", "-m", str(model_dir / f"{NAME}.pxi"), "hi")

    contents = read_members(BUNDLED / f"{NAME}.pxa")
    contents["tokenizer.json"] = doubling_tokenizer()
    write_contents(tmp_path / "doubling.pxa", relisted(contents))
    refused(monkeypatch, capsys, tmp_path, message, "inspect", "doubling.pxa")
    refused(monkeypatch, capsys, tmp_path, message, "ask", "-m", "doubling.pxa", "hi", "--out", "a.pxi")


# --- not regular files -------------------------------------------------------------------------------


def make_special(path: Path, kind: str) -> None:
    if kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


SPECIALS = {"dev_zero": "is a character device (a link to /dev/zero)", "fifo": "is a FIFO", "folder": "is a folder"}


@pytest.mark.parametrize("kind", SPECIALS)
@pytest.mark.parametrize("role", ["meta", "tokenizer", "batch"])
def test_devices_fifos_and_folders_are_refused_without_blocking(
    kind, role, model_dir, tmp_path, monkeypatch, capsys, patience, no_gpu
):
    weights = str(model_dir / f"{NAME}.pxi")
    monkeypatch.chdir(tmp_path)
    if role == "batch":
        make_special(tmp_path / "prompts.txt", kind)
        args = ["infer", "-m", weights, "--batch", "prompts.txt", "--out", "out.pxi"]
    else:
        target = model_dir / f"{NAME}.{role}.json"
        target.unlink()
        make_special(target, kind)
        args = ["encode", "-m", weights, "hi"] if role == "tokenizer" else ["inspect", weights]
    refused(monkeypatch, capsys, tmp_path, SPECIALS[kind], *args)


def test_dev_zero_as_pixel_file_assembly_or_cartridge_is_refused(monkeypatch, capsys, tmp_path, patience, no_gpu):
    monkeypatch.chdir(tmp_path)
    for name in ("zero.pxi", "zero.pxa"):
        (tmp_path / name).symlink_to("/dev/zero")
        refused(monkeypatch, capsys, tmp_path, f"{name}: is a character device", "inspect", name)
    message = "/dev/zero: is a character device; the assembly file must be a regular file"
    refused(monkeypatch, capsys, tmp_path, message, "asm", "/dev/zero", "-o", "x.pxi")


# --- huge numbers ------------------------------------------------------------------------------------


def test_huge_integers_in_json_and_assembly_are_refused(model_dir, tmp_path, monkeypatch, capsys):
    meta = model_dir / f"{NAME}.meta.json"
    meta.write_text(meta.read_text().replace('"vocab_size": 1024', '"vocab_size": 1' + "0" * 5000, 1))
    monkeypatch.chdir(tmp_path)
    refused(
        monkeypatch,
        capsys,
        tmp_path,
        "an integer of 5001 digits; at most 64",
        "inspect",
        str(model_dir / f"{NAME}.pxi"),
    )
    (tmp_path / "big.asm").write_text(".scratch 1" + "0" * 5000 + "\nHALT\n")
    refused(monkeypatch, capsys, tmp_path, "big.asm:1: a number of 5001 digits", "asm", "big.asm", "-o", "p.pxi")
    (tmp_path / "operand.asm").write_text(".scratch 8\nRELU s" + "9" * 5000 + ", 1\nHALT\n")
    refused(monkeypatch, capsys, tmp_path, "operand.asm:2: dst: a number of 5000", "asm", "operand.asm", "-o", "p.pxi")


def test_an_object_of_300000_keys_is_read_in_linear_time(model_dir, tmp_path, monkeypatch, capsys, patience):
    """A 3.6 MB tokenizer (under its 4 MiB cap) of one object with 300,000 keys, the first repeated last:
    checking each key against the ones before it took hours; a set takes well under the patience."""
    keys = ",".join(f'"k{i}":0' for i in range(300_000))
    (model_dir / f"{NAME}.tokenizer.json").write_text("{" + keys + ',"k0":1}')
    model = str(model_dir / f"{NAME}.pxi")
    out = str(tmp_path / "t.pxi")
    refused(
        monkeypatch, capsys, tmp_path, "key 'k0' appears twice in one object", "encode", "ab", "-m", model, "-o", out
    )


# --- one reader for token textures and prediction pixels -------------------------------------------


def test_decode_infer_and_inspect_read_token_textures_alike(tmp_path, rng, monkeypatch, capsys):
    """Random 1- and 2-pixel-wide images: whatever decode reads as a token texture, run reads as the same
    one, and decode reads the rest as prediction pixels, which run refuses as such."""
    vocab = 1024
    for i in range(60):
        pixels = np.zeros((int(rng.integers(1, 4)), int(rng.integers(1, 3)), 3), np.uint8)
        pixels[..., 0] = rng.integers(0, 256, pixels.shape[:2])
        pixels[..., 1] = rng.integers(0, 5, pixels.shape[:2])
        pixels[..., 2] = rng.choice([0, 255, 255, 7], pixels.shape[:2])
        path = tmp_path / f"{i}.pxi"
        path.write_bytes(png(pixels))
        outcomes = []
        for read in (read_token_texture, read_prompt_pixels):
            try:
                outcomes.append(read(path, vocab))
            except PxglError as e:
                outcomes.append(str(e))
        as_texture, as_either = outcomes
        if not isinstance(as_texture, str):
            assert np.array_equal(as_texture[0], as_either), f"{pixels.tolist()}"
        elif not pxi.is_prediction_image(pixels):
            assert as_either == as_texture  # a token texture refused alike, with the same message
        else:
            assert "prediction pixels" in as_texture

    # and through the CLI, on the GPU: the texture decode reads as one-token rows, run runs
    monkeypatch.chdir(tmp_path)
    one_wide = np.array([[[5, 0, 255]], [[0, 0, 0]]], np.uint8)  # a prompt and an empty row
    Path("ambiguous.pxi").write_bytes(png(one_wide))
    code, out, err = pxgl(monkeypatch, capsys, "decode", "ambiguous.pxi")
    assert code == 0 and "confidence" in out, err  # two prediction pixels (§5: (0, 0, 0) is id 0)
    refused(monkeypatch, capsys, tmp_path, "prediction pixels", "run", "--input", "ambiguous.pxi", "--out", "o.pxi")


# --- cartridge end record ----------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [(4, 4), (3, 4), (4, 3)], ids=["both_off", "disk_count_off", "total_off"])
def test_zip_end_record_miscounting_its_directory_is_refused(fields, tmp_path, monkeypatch, capsys, no_gpu):
    cart = tmp_path / "miscounted.pxa"
    shutil.copy(BUNDLED / f"{NAME}.pxa", cart)
    data = bytearray(cart.read_bytes())
    end = len(data) - 22
    assert data[end : end + 4] == b"PK\x05\x06"
    with zipfile.ZipFile(cart) as archive:
        assert len(archive.infolist()) == 5
    struct.pack_into("<HH", data, end + 8, *fields)
    cart.write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)
    message = "end record counts 4 entries" if fields == (4, 4) else "multi-disk archive"
    refused(monkeypatch, capsys, tmp_path, message, "inspect", "miscounted.pxa")


def test_training_never_makes_a_token_past_the_caps(tmp_path):
    """A run of 3000 '=' would merge into ever-doubling tokens: training stops each at 256 bytes, so what
    it saves loads again and still encodes the text back exactly."""
    text = "=" * 3000 + " a b ab"
    trained = Tokenizer.train(text, 300)
    assert max(len(trained.token_bytes(i)) for i in range(trained.vocab_size)) == MAX_TOKEN_BYTES
    trained.save(tmp_path / "t.json")
    loaded = Tokenizer.load(tmp_path / "t.json")
    assert loaded.merges == trained.merges
    assert loaded.decode(loaded.encode(text)) == text


# --- legal input at a disproportionate cost ----------------------------------------------------------


def test_batch_memory_grows_no_faster_than_the_prompts_file(tmp_path, rng):
    """FORMATS §0.3: at most 500 MB plus 4x the input. Two runs of `infer --batch`, 1,000 and 40,000 lines
    of ~100 bytes: the peak may grow by at most 4 bytes a byte of prompts between them (the 500 MB is what
    a run costs whatever its size). It grew by 13 (1 M lines of 10 bytes peaked at 835 MB): every prompt's
    whole token list, a dict a record and a str a line were held at once."""
    import subprocess
    import sys

    from tests.cartridges import random_text
    from tests.models import random_model

    model = random_model(tmp_path, rng, 300, 8, 8, 4, "w")
    Tokenizer.train(random_text(rng, 3000), 300).save(model.tokenizer_path)
    words = random_text(rng, 300).split(" ")
    peaks, sizes = [], []
    for lines in (1_000, 40_000):
        prompts = tmp_path / f"p{lines}.txt"
        prompts.write_text("\n".join(" ".join(rng.choice(words, 18)) for _ in range(lines)) + "\n")
        args = ["infer", "--batch", str(prompts), "-m", model.source, "-o", str(tmp_path / f"o{lines}.pxi")]
        run = subprocess.run([sys.executable, "-c", PEAK_MEMORY, *args], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.count("\n") == lines + 1  # an answer a prompt, and where the pixels went
        peaks.append(int(run.stderr.split()[-1]))
        sizes.append(prompts.stat().st_size)
    growth = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    assert growth <= 4, f"{growth:.1f} bytes a byte of prompts (peaks {peaks[0] >> 20} and {peaks[1] >> 20} MiB)"
