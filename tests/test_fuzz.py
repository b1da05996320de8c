"""Mutation fuzzing of every reader (docs/FORMATS.md §0-§8): valid files are damaged (bit flips, truncation,
chunk and field edits, huge numbers, deep nesting) and read. An input is accepted only if an independent
strict reference in tests/ accepts it and gives the same array or object; otherwise it is refused with a
PxglError, never another exception. Hypothesis prints the falsifying input and how to replay it."""

import hashlib
import io
import json
import re
import struct
import unicodedata
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxgl.cartridge import open_cartridge
from pxgl.cli.predict import read_prompt_lines
from pxgl.errors import PxglError
from pxgl.executors import NAMES
from pxgl.pxi import decode_predictions, decode_rgb, is_prediction_image, read_prompt_pixels, read_token_texture
from pxgl.pxvm.asm import assemble, disassemble
from pxgl.pxvm.program import decode_program
from pxgl.reading import read_text
from pxgl.spec import read_meta
from pxgl.tokenizer import Tokenizer

from tests.cartridges import write_contents
from tests.reference import pxvm as reference_pxvm
from tests.reference import strict_json, strict_meta, strict_png

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
FUZZ = settings(
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTS: Counter[str] = Counter()
"""Mutated inputs each reader was given in this run (CountsSummary prints them at the end of the run)."""
VOCAB = 1024
OPCODES = {
    "LOAD_WEIGHT_SLICE": 0x01,
    "LOAD_TOKEN": 0x02,
    "DOT_PRODUCT": 0x03,
    "ADD_BIAS": 0x04,
    "RELU": 0x05,
    "ARGMAX": 0x06,
    "STORE_PIXEL": 0x07,
    "POOL_TOKENS": 0x08,
    "CONCAT_TOKENS": 0x09,
    "ATTEND": 0x0A,
    "HALT": 0xFF,
}
"""§7.4's table, written out here so the assembler is checked against the spec, not against itself."""


class CountsSummary:
    """A pytest plugin, registered by this module, that ends the run's terminal report with COUNTS (so CI's
    log says how many mutated inputs each reader was given, without -s)."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_sep("-", "fuzz: mutated inputs per reader")
        for reader, count in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{reader:28} {count}")


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("pxgl-fuzz-counts"):
        plugins.register(CountsSummary(), "pxgl-fuzz-counts")
    yield


def refused_or(read, *args) -> tuple[bool, Any]:
    """(True, result) if the engine accepts, (False, message) if it refuses with a PxglError. Anything
    else propagates and fails the test."""
    try:
        return True, read(*args)
    except PxglError as e:
        assert "\n" not in str(e), f"a message of several lines: {e}"
        return False, str(e)


def reference_or(read, refusal, *args) -> tuple[bool, Any]:
    try:
        return True, read(*args)
    except refusal:
        return False, None


# --- generic byte mutations --------------------------------------------------------------------------


@st.composite
def mutated_bytes(draw, valid: bytes, hot: tuple[int, int] | None = None) -> bytes:
    """1-4 edits: bit flips, byte overwrites, insertions, deletions, truncation, appended junk. With `hot`
    (a byte range), most positions fall in it."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        last = max(len(data) - 1, 0)
        lo, hi = hot if hot and draw(st.booleans()) else (0, last)
        at = draw(st.integers(min(lo, last), min(hi, last)))
        edit = draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate", "append"]))
        if edit == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif edit == "truncate":
            del data[at:]
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


# --- PNG: weights and pixel files ------------------------------------------------------------------


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_of(width: int, height: int, image_data: bytes, ancillary: list[tuple[bytes, bytes]] = ()) -> bytes:
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    extra = b"".join(chunk(k, b) for k, b in ancillary)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + extra + chunk(b"IDAT", image_data) + chunk(b"IEND", b"")


def split_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


@st.composite
def valid_png(draw) -> tuple[bytes, int, int, bytes]:
    """A small PNG whose rows use random filter types over random bytes (so every filter is exercised);
    returns (file, width, height, its inflated image data)."""
    width, height = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    rows = b"".join(
        bytes([draw(st.integers(0, 4))]) + draw(st.binary(min_size=3 * width, max_size=3 * width))
        for _ in range(height)
    )
    ancillary = draw(
        st.lists(st.tuples(st.sampled_from([b"tEXt", b"gAMA", b"zzZz"]), st.binary(max_size=12)), max_size=2)
    )
    return png_of(width, height, zlib.compress(rows), ancillary), width, height, rows


@st.composite
def mutated_png(draw) -> tuple[bytes, int, int]:
    data, width, height, rows = draw(valid_png())
    edit = draw(st.sampled_from(["bytes", "chunk", "ihdr", "image_data", "order", "split", "keep"]))
    chunks = split_chunks(data)
    if edit == "bytes":
        return draw(mutated_bytes(data)), width, height
    if edit == "chunk":  # a chunk's body changed and its CRC made right again
        i = draw(st.integers(0, len(chunks) - 1))
        kind, body = chunks[i]
        chunks[i] = (kind, draw(mutated_bytes(body or b"\x00")))
    elif edit == "ihdr":
        fields = list(struct.unpack(">IIBBBBB", chunks[0][1]))
        field = draw(st.integers(0, 6))
        fields[field] = draw(st.integers(0, 2**31 - 1 if field < 2 else 255) | st.integers(0, 9))
        chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", *fields))
    elif edit == "image_data":  # rows cut, added, or refiltered, in a complete zlib stream
        raw = draw(mutated_bytes(rows))
        level = draw(st.integers(0, 9))
        idat = next(i for i, (k, _) in enumerate(chunks) if k == b"IDAT")
        chunks[idat] = (b"IDAT", zlib.compress(raw, level) + draw(st.sampled_from([b"", b"\x00"])))
    elif edit == "order":
        i, j = draw(st.integers(0, len(chunks) - 1)), draw(st.integers(0, len(chunks) - 1))
        chunks.insert(j, chunks[i] if draw(st.booleans()) else chunks.pop(i))
    elif edit == "split":  # IDAT split in two (valid), maybe with a chunk between (not)
        idat = next(i for i, (k, _) in enumerate(chunks) if k == b"IDAT")
        body = chunks[idat][1]
        cut = draw(st.integers(0, len(body)))
        between = [(b"tEXt", b"a\x00b")] if draw(st.booleans()) else []
        chunks[idat : idat + 1] = [(b"IDAT", body[:cut]), *between, (b"IDAT", body[cut:])]
    rebuilt = b"\x89PNG\r\n\x1a\n" + b"".join(chunk(k, b) for k, b in chunks)
    return rebuilt, width, height


@settings(FUZZ, max_examples=1000)
@given(case=mutated_png(), as_weights=st.booleans())
def test_fuzz_png_pixel_files_and_weights(case, as_weights):
    data, width, height = case
    COUNTS["png weights" if as_weights else "png pixel file"] += 1
    expect = (width, height) if as_weights else None
    accepted, pixels = refused_or(decode_rgb, data, "fuzz.pxi", 1 << 26, expect)
    if accepted:
        ok, reference = reference_or(strict_png.read, strict_png.Refused, data)
        assert ok, "the engine accepted a PNG the strict reference refuses"
        assert np.array_equal(pixels, reference)
        assert expect is None or pixels.shape[:2] == (height, width)


# --- JSON: meta and tokenizer -------------------------------------------------------------------------

HUGE = "<an integer of 5000 digits>"
"""Stands for the integer in the document (Python will not print it: hypothesis must show examples)."""
DEEP = "<arrays nested this deep:>"
SCALARS = st.one_of(
    st.integers(-(10**80), 10**80),
    st.just(HUGE),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)


@st.composite
def mutated_json(draw, valid: bytes) -> bytes:
    """A JSON document with a value replaced (huge numbers, deep nesting, wrong types), a key dropped or
    repeated, or its text damaged."""
    edit = draw(st.sampled_from(["value", "drop", "repeat", "bytes", "deep"]))
    if edit == "bytes":
        return draw(mutated_bytes(valid))
    doc = json.loads(valid)
    paths = list(_paths(doc))
    path = draw(st.sampled_from(paths))
    parent, key = _parent(doc, path)
    if edit == "value":
        parent[key] = draw(SCALARS | st.lists(SCALARS, max_size=3))
    elif edit == "deep":
        parent[key] = f"{DEEP}{draw(st.integers(60, 70) | st.just(5000))}"
    elif edit == "drop" and isinstance(parent, dict):
        del parent[key]
    text = _dumps(doc)
    if edit == "repeat" and isinstance(parent, dict):
        marker = json.dumps(str(key))
        text = text.replace(f"{marker}:", f"{marker}: 0, {marker}:", 1)
    return text.encode()


def _dumps(doc: Any) -> str:
    def encode(value: Any) -> str:
        if value == HUGE:
            return "1" + "0" * 5000
        if isinstance(value, str) and value.startswith(DEEP):
            levels = int(value.removeprefix(DEEP))
            return "[" * levels + "0" + "]" * levels
        if isinstance(value, bool | int | float | str) or value is None:
            return json.dumps(value)
        if isinstance(value, list):
            return "[" + ",".join(encode(v) for v in value) + "]"
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"

    return encode(doc)


def _paths(value: Any, path: tuple = ()):
    if path:
        yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in list(items)[:40]:
        yield from _paths(child, (*path, key))


def _at(doc: Any, path: tuple) -> Any:
    parent, key = _parent(doc, path)
    return parent[key]


def _parent(doc: Any, path: tuple) -> tuple[Any, Any]:
    for key in path[:-1]:
        doc = doc[key]
    return doc, path[-1]


META = (ASSETS / "pixellm_v0.meta.json").read_bytes()
TOKENIZER = (ASSETS / "pixellm_v0.tokenizer.json").read_bytes()


@settings(FUZZ, max_examples=600)
@given(data=mutated_json(META))
def test_fuzz_meta(tmp_path_factory, data):
    COUNTS["meta json"] += 1
    path = tmp_path_factory.getbasetemp() / "fuzz.meta.json"
    path.write_bytes(data)
    accepted, spec = refused_or(read_meta, path)
    if not accepted:
        return
    ok, doc = reference_or(strict_json.loads, strict_json.Refused, data)
    assert ok, "the engine accepted a meta the strict JSON reference refuses"
    assert (spec.vocab_size, spec.embed_dim) == (doc["vocab_size"], doc["embed_dim"])
    assert (spec.image_width, spec.image_height) == (doc["image"]["width"], doc["image"]["height"])
    for name, tensor in spec.tensors.items():
        listed = doc["tensors"][spec.meta_name(name)]
        assert (tensor.offset, list(tensor.shape), tensor.scale) == (listed["offset"], listed["shape"], listed["scale"])


ARCHITECTURES = (
    {"vocab": 300, "embed": 3, "mode": "mean", "window": 4, "concat": 0, "head": 0, "hidden": (5,), "residual": False},
    {
        "vocab": 256,
        "embed": 2,
        "mode": "concat",
        "window": 3,
        "concat": 0,
        "head": 0,
        "hidden": (4, 4),
        "residual": True,
    },
    {"vocab": 257, "embed": 2, "mode": "attention", "window": 5, "concat": 2, "head": 3, "hidden": (3, 2, 2, 6)}
    | {"residual": True},
)
"""Small members of every mode (the fuzz needs metas of every shape, not big ones)."""
BOUNDS = (0, 1, 2, 3, 255, 256, 257, 4095, 4096, 4097, 16383, 16384, 16385, 65535, 65536, 65537, 1 << 26)
FIELD_VALUES = st.one_of(
    st.sampled_from(BOUNDS).flatmap(lambda b: st.sampled_from([b - 1, b, b + 1, -b, float(b)])),
    st.sampled_from([10**63, 10**64 - 1, True, False, None, "", "mean", [], {}, 1e-45, 1e-46, 3.4e38, 3.5e38]),
    st.sampled_from([float("inf"), float("nan"), -0.0, 0.5, 1e308]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
    st.lists(st.integers(-2, 5000), max_size=5),
)
"""Values near every bound §2.1 states, of every JSON type."""


@st.composite
def meta_field_edit(draw) -> dict:
    """A valid meta of a random small member (or the bundled v0 or v1) with one to three field edits: a
    value near a bound or of another type, a key dropped or added, an architecture changed with the
    tensors and image laid out again to match it (so the edit may be valid), a tensor moved by a byte."""
    source = draw(st.sampled_from(["v0", "v1", *range(len(ARCHITECTURES))]))
    if source in ("v0", "v1"):
        doc = json.loads((ASSETS / f"pixellm_{source}.meta.json").read_bytes())
    else:
        arch = dict(ARCHITECTURES[source])
        version = 0 if arch["mode"] == "mean" and len(arch["hidden"]) == 1 and draw(st.booleans()) else 1
        for key in draw(st.lists(st.sampled_from(["vocab", "embed", "window", "concat", "head"]), max_size=2)):
            arch[key] = max(0, arch[key] + draw(st.integers(-3, 3)))
        doc = strict_meta.layout(arch, version, draw(st.sampled_from([0.01, 1, 1e-45, 3e38])))
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["value", "value", "drop", "add", "move", "tokenizer", "retype"]))
        numbers = [path for path in _paths(doc) if type(_at(doc, path)) is int]
        if edit == "retype" and numbers:  # the same number as a float, or as true/false where it is 0 or 1
            parent, key = _parent(doc, draw(st.sampled_from(numbers)))
            parent[key] = bool(parent[key]) if parent[key] in (0, 1) and draw(st.booleans()) else float(parent[key])
            continue
        if edit == "tokenizer":
            doc["tokenizer"] = draw(st.text(max_size=5) | st.sampled_from([".", "..", "a/b", "a\\b", "\x85", "a\x7f"]))
            continue
        tensors = doc.get("tensors")
        entries = tensors.values() if isinstance(tensors, dict) else []
        movable = [t for t in entries if isinstance(t, dict) and type(t.get("offset")) is int]
        if edit == "move" and movable:
            tensor = draw(st.sampled_from(movable))
            tensor["offset"] += draw(st.sampled_from([-1, 1, -3, 3]))
            continue
        parent, key = _parent(doc, draw(st.sampled_from(list(_paths(doc)))))
        if edit == "value":
            parent[key] = draw(FIELD_VALUES)
        elif edit == "drop" and isinstance(parent, dict):
            del parent[key]
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "mode", "concat", "files", "scale"]))] = draw(FIELD_VALUES)
    return doc


@settings(FUZZ, max_examples=1000)
@given(doc=meta_field_edit())
def test_fuzz_meta_fields(tmp_path_factory, doc):
    """Field by field against tests/reference/strict_meta.py (§2.1, §2.2): the engine accepts exactly the
    metas the reference accepts, and reads the same model from them."""
    COUNTS["meta fields"] += 1
    path = tmp_path_factory.getbasetemp() / "fields.meta.json"
    data = json.dumps(doc).encode()
    path.write_bytes(data)
    accepted, spec = refused_or(read_meta, path)
    ok, want = reference_or(lambda d: strict_meta.read(strict_json.loads(d)), strict_meta.Refused, data)
    assert accepted == ok, (
        f"engine {'accepted' if accepted else 'refused: ' + spec}, reference {'accepted' if ok else 'refused'}"
    )
    if not accepted:
        return
    COUNTS["meta fields (accepted)"] += 1
    arch, context = spec.architecture, spec.architecture.context
    got = {"vocab": arch.vocab_size, "embed": arch.embed_dim, "mode": context.mode, "window": context.window}
    got |= {"concat": context.concat, "head": context.head_dim, "hidden": arch.hidden, "residual": arch.residual}
    assert (spec.version, got, spec.tokenizer, spec.eval) == (
        want["version"],
        want["arch"],
        want["tokenizer"],
        want["eval"],
    )
    assert (spec.image_width, spec.image_height) == (want["width"], want["height"])
    tensors = {name: (t.offset, t.shape, t.scale, t.zero_point) for name, t in spec.tensors.items()}
    assert tensors == want["tensors"] and list(tensors) == list(strict_meta.shapes(want["arch"]))


def reference_tokenizer(data: bytes) -> list[bytes]:
    """The byte table of a §6 tokenizer, caps included; strict_json.Refused otherwise."""
    doc = strict_json.loads(data)
    if not isinstance(doc, dict) or not {"format", "version", "vocab_size", "merges"} <= doc.keys():
        raise strict_json.Refused("keys")
    vocab, merges = doc["vocab_size"], doc["merges"]
    if (doc["format"], doc["version"]) != ("pxgl-bpe", 0) or type(doc["version"]) is not int:
        raise strict_json.Refused("format")
    if type(vocab) is not int or not 256 <= vocab <= 65536 or not isinstance(merges, list):
        raise strict_json.Refused("vocab")
    if len(merges) != vocab - 256:
        raise strict_json.Refused("count")
    table = [bytes([b]) for b in range(256)]
    for i, pair in enumerate(merges):
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int and 0 <= x < 256 + i for x in pair)):
            raise strict_json.Refused("pair")
        if len(table[pair[0]]) + len(table[pair[1]]) > 256:
            raise strict_json.Refused("token cap")
        table.append(table[pair[0]] + table[pair[1]])
        if sum(map(len, table)) > 4 << 20:
            raise strict_json.Refused("table cap")
    return table


@st.composite
def mutated_tokenizer(draw) -> bytes:
    if draw(st.integers(0, 3)) == 0:  # merges that double a token's length from some merge on
        doc = json.loads(TOKENIZER)
        start = draw(st.integers(0, len(doc["merges"]) - 2))
        for i in range(start + 1, len(doc["merges"])):
            doc["merges"][i] = [255 + i, 255 + i]
        return json.dumps(doc).encode()
    return draw(mutated_json(TOKENIZER))


@settings(FUZZ, max_examples=300)
@given(data=mutated_tokenizer())
def test_fuzz_tokenizer(tmp_path_factory, data):
    COUNTS["tokenizer json"] += 1
    path = tmp_path_factory.getbasetemp() / "fuzz.tokenizer.json"
    path.write_bytes(data)
    accepted, tokenizer = refused_or(Tokenizer.load, path)
    if not accepted:
        return
    ok, table = reference_or(reference_tokenizer, strict_json.Refused, data)
    assert ok, "the engine accepted a tokenizer the reference refuses"
    assert [tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)] == table


# --- token textures and prediction pixels --------------------------------------------------------------


def reference_texture(pixels: np.ndarray, vocab: int) -> list[list[int]] | None:
    """§4: the ids of each row, or None when the texture is refused."""
    rows = []
    for row in pixels.tolist():
        ids = []
        for r, g, b in row:
            if b != 255:
                break
            ids.append(r + 256 * g)
        if not ids or any(p != [0, 0, 0] for p in row[len(ids) :]) or max(ids) >= vocab:
            return None
        rows.append(ids)
    return rows


def reference_predictions(pixels: np.ndarray, vocab: int) -> list[tuple[int, int]] | None:
    """§5: (id, confidence) of each row of a 1-pixel-wide image that is not all-blue-255, or None."""
    if pixels.shape[1] != 1 or all(p[0][2] == 255 for p in pixels.tolist()):
        return None
    answers = [(r + 256 * g, b) for [[r, g, b]] in pixels.tolist()]
    return None if any(i >= vocab for i, _ in answers) else answers


@st.composite
def mutated_texture(draw) -> np.ndarray:
    height, width = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    pixels = np.zeros((height, width, 3), np.uint8)
    for r in range(height):
        n = draw(st.integers(1, width))
        pixels[r, :n, 0] = draw(st.lists(st.integers(0, 255), min_size=n, max_size=n))
        pixels[r, :n, 1] = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        pixels[r, :n, 2] = 255
    for _ in range(draw(st.integers(0, 3))):
        y, x, c = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1)), draw(st.integers(0, 2))
        pixels[y, x, c] = draw(st.sampled_from([0, 1, 4, 254, 255]) | st.integers(0, 255))
    return pixels


def png_file(tmp_path_factory, pixels: np.ndarray) -> Path:
    path = tmp_path_factory.getbasetemp() / "fuzz.pxi"
    height, width, _ = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    path.write_bytes(png_of(width, height, zlib.compress(rows.tobytes())))
    return path


@settings(FUZZ, max_examples=500)
@given(pixels=mutated_texture())
def test_fuzz_token_textures(tmp_path_factory, pixels):
    COUNTS["token texture"] += 1
    accepted, result = refused_or(read_token_texture, png_file(tmp_path_factory, pixels), VOCAB)
    reference = reference_texture(pixels, VOCAB)
    if accepted:
        read, lengths = result
        assert reference is not None, "the engine accepted a token texture §4 refuses"
        ids = read[..., 0].astype(int) + 256 * read[..., 1].astype(int)
        assert [ids[r, :n].tolist() for r, n in enumerate(lengths)] == reference
    else:
        assert reference is None or is_prediction_image(pixels)


@settings(FUZZ, max_examples=400)
@given(pixels=mutated_texture().map(lambda p: p[:, :1]) | mutated_texture())
def test_fuzz_prediction_pixels(tmp_path_factory, pixels):
    COUNTS["prediction pixels"] += 1
    accepted, read = refused_or(read_prompt_pixels, png_file(tmp_path_factory, pixels), VOCAB)
    if not accepted or not is_prediction_image(read):
        assert reference_predictions(pixels, VOCAB) is None
        return
    ids, confidence = decode_predictions(read, "fuzz", VOCAB)
    assert list(zip(ids.tolist(), confidence.tolist(), strict=True)) == reference_predictions(pixels, VOCAB)


# --- cartridges ----------------------------------------------------------------------------------------

CARTRIDGE = (ASSETS / "pixellm_v0.pxa").read_bytes()


def reference_members(path: Path) -> dict[str, bytes]:
    """Members of a zip whose end record counts its central directory truly, read with zipfile (CRCs
    checked), each matching the manifest's size and sha256. ValueError-family on anything else."""
    data = path.read_bytes()
    end = data.rindex(b"PK\x05\x06")
    _, disk, start_disk, here, total, _, offset, comment = struct.unpack("<4s4H2LH", data[end : end + 22])
    walked, at = 0, offset
    while data[at : at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<3H", data[at + 28 : at + 34])
        at += 46 + name_len + extra_len + comment_len
        walked += 1
    if (disk, start_disk, comment) != (0, 0, 0) or not here == total == walked:
        raise ValueError("end record")
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    manifest = strict_json.loads(members["manifest.json"])
    for listed in manifest["members"]:
        body = members[listed["name"]]
        if len(body) != listed["size"] or hashlib.sha256(body).hexdigest() != listed["sha256"]:
            raise ValueError("listing")
    return members


@settings(FUZZ, max_examples=300)
@given(data=mutated_bytes(CARTRIDGE, hot=(len(CARTRIDGE) - 600, len(CARTRIDGE))))
def test_fuzz_cartridges(tmp_path_factory, data):
    COUNTS["cartridge"] += 1
    path = tmp_path_factory.getbasetemp() / "fuzz.pxa"
    path.write_bytes(data)
    accepted, cart = refused_or(open_cartridge, path)
    if accepted:
        ok, members = reference_or(
            reference_members, (ValueError, KeyError, zipfile.BadZipFile, strict_json.Refused), path
        )
        assert ok, "the engine accepted a cartridge the reference refuses"
        assert np.array_equal(cart.weights, strict_png.read(members["weights.pxi"]))
        assert np.array_equal(cart.program.pixels, strict_png.read(members["program.pxi"]))


CARTRIDGES = {
    "v1": (ASSETS / "pixellm_v0.pxa").read_bytes(),
    "v0": (ROOT / "tests/fixtures/pixellm_v0-207f995.pxa").read_bytes(),
}
"""A version-1 cartridge (the bundled one) and a version-0 one (pxgl 0.1's, with its shaders)."""
MANIFEST_WORDS = ("passes", "pxvm", "fused", "auto", "gpu", "Passes", "a" * 32, "a" * 33, "x-y", "p" * 128)
MANIFEST_WORDS += ("p" * 129, "name\x85", "tab\there", "shaders/a.comp", "shaders/a.txt", "../x", "E" * 64, "0" * 64)
MANIFEST_VALUES = FIELD_VALUES | st.sampled_from(MANIFEST_WORDS)
PRINTABLE_CATEGORIES = ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe")
PRINTABLE_CATEGORIES += ("Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So")


@st.composite
def mutated_manifest(draw) -> tuple[bytes, dict[str, bytes]]:
    """A cartridge's members with its manifest edited field by field (values near bounds or of other types,
    keys dropped or added, member entries changed, dropped or repeated) and maybe a shader member added,
    listed truthfully or not: (manifest bytes, the other members)."""
    with zipfile.ZipFile(io.BytesIO(CARTRIDGES[draw(st.sampled_from(sorted(CARTRIDGES)))])) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    doc = json.loads(members.pop("manifest.json"))
    if draw(st.booleans()):
        body = draw(st.binary(max_size=40))
        name = draw(st.sampled_from(["shaders/extra.glsl", "shaders/x.comp", "notes.txt", "shaders/a b.comp"]))
        members[name] = body
        if draw(st.booleans()):
            doc["members"].append({"name": name, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["value", "value", "drop", "add", "entry", "repeat"]))
        entries = doc.get("members") if isinstance(doc.get("members"), list) else []
        if edit in ("entry", "repeat") and entries:
            entry = draw(st.sampled_from(entries))
            if edit == "repeat":
                entries.append(dict(entry) if isinstance(entry, dict) else entry)
            elif isinstance(entry, dict) and entry:
                key = draw(st.sampled_from(sorted(entry)))
                entry[key] = draw(
                    st.sampled_from([entry[key].upper() if isinstance(entry[key], str) else entry[key]])
                    | (st.integers(-1, 1).map(lambda d, v=entry[key]: v + d if type(v) is int else v))
                    | MANIFEST_VALUES
                )
            continue
        parent, key = _parent(doc, draw(st.sampled_from(list(_paths(doc)))))
        if edit == "value":
            parent[key] = draw(MANIFEST_VALUES)
        elif edit == "drop" and isinstance(parent, dict):
            del parent[key]
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "about", "model", "formats", "size"]))] = draw(MANIFEST_VALUES)
    return json.dumps(doc).encode(), members


def reference_cartridge(manifest_bytes: bytes, members: dict[str, bytes]) -> dict:
    """§8.1 and §8.3 steps 3-7 for a well-formed zip of these members: the manifest's version, name,
    executor and listed names, or strict_meta.Refused."""
    doc = strict_json.loads(manifest_bytes)
    refuse = strict_meta.check
    refuse(isinstance(doc, dict) and doc.get("format") == "pxgl-cartridge", "format")
    version = doc.get("version")
    refuse(type(version) is int and version in (0, 1), "version")
    refuse({"name", "executor", "members", "formats" if version else "model"} <= doc.keys(), "keys")
    if version:
        formats = doc["formats"]
        refuse(isinstance(formats, dict) and set(formats) == {"weights", "pxvm"}, "formats keys")
        refuse(all(type(v) is int and v in (0, 1) for v in formats.values()), "formats versions")
        refuse(isinstance(doc.get("about", {}), dict), "about")
    else:
        formats, model = {"weights": 0, "pxvm": 0}, doc["model"]
        keys = {"vocab_size", "embed_dim", "hidden_dim", "context_window"}
        refuse(isinstance(model, dict) and set(model) == keys, "model keys")
        refuse(all(type(v) is int and v > 0 for v in model.values()), "model values")
    name = doc["name"]
    printable = isinstance(name, str) and all(unicodedata.category(c) in PRINTABLE_CATEGORIES or c == " " for c in name)
    refuse(printable and 1 <= len(name) <= 128, "name")
    refuse(doc["executor"] in NAMES and re.fullmatch(r"[a-z0-9_]{1,32}", doc["executor"]) is not None, "executor")
    listed = doc["members"]
    refuse(isinstance(listed, list), "members")
    table = {}
    for entry in listed:
        refuse(isinstance(entry, dict) and set(entry) == {"name", "size", "sha256"}, "entry keys")
        refuse(isinstance(entry["name"], str) and entry["name"] not in table, "entry name")
        refuse(type(entry["size"]) is int and 0 <= entry["size"] <= 256 << 20, "entry size")
        refuse(isinstance(entry["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None, "sha")
        shader = re.fullmatch(r"shaders/[A-Za-z0-9_][A-Za-z0-9_.-]*\.(comp|glsl)", entry["name"]) is not None
        refuse(entry["name"] in ("weights.pxi", "weights.meta.json", "tokenizer.json", "program.pxi") or shader, "role")
        table[entry["name"]] = entry
    refuse({"weights.pxi", "weights.meta.json", "tokenizer.json", "program.pxi"} <= table.keys(), "required")
    refuse(set(table) == set(members), "listing")
    for member, body in members.items():
        digest = hashlib.sha256(body).hexdigest()
        refuse((len(body), digest) == (table[member]["size"], table[member]["sha256"]), "size or sha256")
    meta = strict_meta.read(strict_json.loads(members["weights.meta.json"]))
    refuse(meta["tokenizer"] == "tokenizer.json" and meta["version"] == formats["weights"], "meta")
    arch = meta["arch"]
    if not version:
        dims = {"vocab_size": arch["vocab"], "embed_dim": arch["embed"], "context_window": arch["window"]}
        refuse(len(arch["hidden"]) == 1 and doc["model"] == dims | {"hidden_dim": arch["hidden"][0]}, "model")
    weights = strict_png.read(members["weights.pxi"])
    refuse(weights.shape[:2] == (meta["height"], meta["width"]), "weights size")
    refuse(len(reference_tokenizer(members["tokenizer.json"])) == arch["vocab"], "tokenizer")
    program_version, _, _ = reference_pxvm.decode(strict_png.read(members["program.pxi"]))
    refuse(program_version == formats["pxvm"], "program version")
    return {"version": version, "name": name, "executor": doc["executor"], "members": sorted(table)}


@settings(FUZZ, max_examples=400)
@given(case=mutated_manifest())
def test_fuzz_cartridge_manifests(tmp_path_factory, case):
    """Field by field against reference_cartridge: a cartridge opens exactly when the reference accepts its
    manifest and members, and says what the reference reads."""
    COUNTS["cartridge manifest"] += 1
    manifest, members = case
    path = tmp_path_factory.getbasetemp() / "manifest.pxa"
    write_contents(path, {"manifest.json": manifest, **members})
    accepted, cart = refused_or(open_cartridge, path)
    ok, want = reference_or(reference_cartridge, (strict_meta.Refused, strict_json.Refused), manifest, members)
    assert accepted == ok, (
        f"engine {'accepted' if accepted else 'refused: ' + cart}, reference {'accepted' if ok else 'refused'}"
    )
    if accepted:
        COUNTS["cartridge manifest (accepted)"] += 1
        m = cart.manifest
        got = {
            "version": m.version,
            "name": m.name,
            "executor": m.executor,
            "members": sorted(x.name for x in m.members),
        }
        assert got == want


# --- pxVM programs: pixels and assembly ----------------------------------------------------------------

PROGRAM = strict_png.read((ASSETS / "pixellm_v0.program.pxi").read_bytes())


@st.composite
def mutated_program(draw) -> np.ndarray:
    stream = PROGRAM.reshape(-1, 3).copy()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(stream) - 1))
        stream[at, draw(st.integers(0, 2))] = draw(st.sampled_from([0, 1, 2, 3, 9, 10, 255]) | st.integers(0, 255))
    width = draw(st.sampled_from([PROGRAM.shape[1], 1, len(stream)]))
    cut = draw(st.integers(len(stream) // 2, len(stream)))
    stream = stream[: cut - cut % width] if width > 1 else stream[:cut]
    return stream.reshape(-1, width, 3) if len(stream) else PROGRAM[:1, :1]


@settings(FUZZ, max_examples=800)
@given(pixels=mutated_program())
def test_fuzz_program_pixels(pixels):
    COUNTS["pxvm program pixels"] += 1
    accepted, program = refused_or(decode_program, pixels, "fuzz.program.pxi")
    if accepted:
        ok, (version, scratch, instructions) = reference_or(reference_pxvm.decode, reference_pxvm.Fault, pixels)
        assert ok, "the engine accepted a program the reference refuses"
        assert (program.version, program.scratch_size) == (version, scratch)
        assert [(i.op.code, list(i.operands)) for i in program.instructions] == instructions


ASSEMBLY = disassemble(decode_program(PROGRAM, "shipped")).encode()
NUMBER_TEXT = re.compile(rb"\d+")


@st.composite
def mutated_assembly(draw) -> bytes:
    edit = draw(st.sampled_from(["number", "bytes", "line"]))
    if edit == "number":  # a number replaced by another, possibly enormous
        spots = list(NUMBER_TEXT.finditer(ASSEMBLY))
        spot = draw(st.sampled_from(spots))
        new = draw(st.integers(0, 2**50).map(str) | st.just("9" * 5000) | st.just("0" * 30 + "7")).encode()
        return ASSEMBLY[: spot.start()] + new + ASSEMBLY[spot.end() :]
    if edit == "line":
        lines = ASSEMBLY.split(b"\n")
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines.insert(j, lines[i] if draw(st.booleans()) else lines.pop(i))
        return b"\n".join(lines)
    return draw(mutated_bytes(ASSEMBLY))


def reference_assembly(text: str) -> tuple[int, list[tuple[int, list[int]]]]:
    """(scratch, [(opcode, operands)]) read from assembly text by §7.6 and §7.3's spellings."""
    scratch, version, program = None, 0, []
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if not line or line.startswith(".image"):
            continue
        word, _, rest = line.partition(" ")
        if word == ".scratch":
            scratch = int(rest)
        elif word == ".version":
            version = int(rest)
        else:
            args = [a.strip() for a in rest.split(",")] if rest.strip() else []
            names = reference_pxvm.TENSORS[version]
            program.append((OPCODES[word], [names.index(a) if a in names else int(a.lstrip("sto")) for a in args]))
    return scratch, program


@settings(FUZZ, max_examples=600)
@given(data=mutated_assembly())
def test_fuzz_assembly(tmp_path_factory, data):
    """As `pxgl asm` reads it: the text file, assembled, then the program's format checked."""
    COUNTS["pxvm assembly"] += 1
    path = tmp_path_factory.getbasetemp() / "fuzz.asm"
    path.write_bytes(data)

    def read_assembly(path: Path) -> np.ndarray:
        pixels = assemble(read_text(path, "assembly file"), str(path))
        decode_program(pixels, str(path))
        return pixels

    accepted, pixels = refused_or(read_assembly, path)
    if accepted:
        _, scratch, instructions = reference_pxvm.decode(pixels)
        assert reference_assembly(data.decode("utf-8")) == (scratch, instructions)


# --- batch text ------------------------------------------------------------------------------------------

PROMPTS = "pxOS evolution\r\nthe quick brown fox\nüber ∑ text\n".encode()


def reference_prompts(data: bytes) -> list[str] | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.endswith("\n"):
        text = text[:-1]
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")] if text else []
    return lines if lines and all(lines) else None


@settings(FUZZ, max_examples=500)
@given(data=mutated_bytes(PROMPTS))
def test_fuzz_batch_text(tmp_path_factory, data):
    COUNTS["batch text"] += 1
    path = tmp_path_factory.getbasetemp() / "prompts.txt"
    path.write_bytes(data)
    accepted, lines = refused_or(read_prompt_lines, path)
    reference = reference_prompts(data)
    assert (list(lines) if accepted else None) == reference
