"""Hostile GGUF files (docs/FORMATS.md §10.3, issue 28 item 6): each refused by `pxgl import` in one line, exit
status 2, nothing written, the peak memory of the process at most the file's size + 200 MB — headers built
byte by byte here (counts that lie, strings and arrays past the file, a tensor claiming 10 GB, …) and small
valid files spoilt after `gguf`'s writer wrote them (NaN weights, an unknown pre-tokenizer, a missing tensor)."""

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.cartridges import pxgl, snapshot
from tests.gguf_files import T, hf_meta, random_weights, write_gguf

STRING, ARRAY, UINT32 = 8, 9, 4


def text(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(data)) + data


def kv(key: str | bytes, kind: int, value: bytes) -> bytes:
    return text(key) + struct.pack("<I", kind) + value


def info(name: str, dims: list[int], kind: int, offset: int) -> bytes:
    return text(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, offset)


def header(kvs: list[bytes], infos: list[bytes], data: bytes = b"", counts=None, version: int = 3) -> bytes:
    tensors, keys = counts if counts is not None else (len(infos), len(kvs))
    head = b"GGUF" + struct.pack("<IQQ", version, tensors, keys) + b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % 32) + data


ARCH = kv("general.architecture", STRING, text("llama"))
ONE = [info("token_embd.weight", [32, 4], 0, 0)]
DATA = bytes(4 * 32 * 4)
CRAFTED: dict[str, tuple[bytes, str]] = {
    "tensor count lies": (header([ARCH], ONE, DATA, counts=(1 << 40, 1)), "claims 1,099,511,627,776 tensors"),
    "key/value count lies": (header([ARCH], ONE, DATA, counts=(1, 10**6)), "claims 1,000,000 key/values"),
    "string length past the file": (
        header([kv("general.name", STRING, struct.pack("<Q", 1000) + b"x")], ONE, DATA),
        "runs past the end of the file",
    ),
    "string past the cap": (header([kv("general.name", STRING, struct.pack("<Q", 1 << 33))], []), "bytes; 0..16"),
    "array count lies": (
        header([kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", 6, 1 << 20))], ONE, DATA),
        "runs past the end of the file",
    ),
    "array past the cap": (
        header([kv("x", ARRAY, struct.pack("<IQ", 6, 1 << 40))], []),
        "claims 1,099,511,627,776 items",
    ),
    "strings array lies": (
        header([kv("x", ARRAY, struct.pack("<IQ", STRING, 1 << 20))], []),
        "more than the file holds",
    ),
    "nested array": (header([kv("x", ARRAY, struct.pack("<IQ", ARRAY, 1))], []), "an array of type 9"),
    "unknown value type": (header([kv("x", 13, b"\0" * 8)], []), "value type 13"),
    "repeated key": (header([ARCH, ARCH], ONE, DATA), "appears twice"),
    "key not UTF-8": (header([kv(b"\xff\xfe", UINT32, b"\0" * 4)], ONE, DATA), "not valid UTF-8"),
    "version 1": (header([ARCH], ONE, DATA, version=1), "GGUF version 1"),
    "big-endian": (header([ARCH], ONE, DATA, version=3 << 24), "a big-endian GGUF file"),
    "one part of a split file": (
        header([ARCH, kv("split.count", 2, struct.pack("<H", 3))], ONE, DATA),
        "one part of a split GGUF",
    ),
    "a tensor claiming 10 GB": (
        header([ARCH], [info("token_embd.weight", [1 << 16, 40960], 0, 0)], DATA),
        "claims 10,737,418,240 bytes",
    ),
    "too many dimensions": (header([ARCH], [info("t", [1, 1, 1, 1, 1], 0, 0)], DATA), "5 dimensions"),
    "unknown tensor type": (header([ARCH], [info("t", [32], 99, 0)], DATA), "type 99"),
    "rows not whole blocks": (header([ARCH], [info("t", [33], 8, 0)], DATA), "not whole blocks of 32"),
    "unaligned offset": (header([ARCH], [info("a", [8], 0, 4)], DATA), "not a multiple of 32"),
    "overlapping tensors": (header([ARCH], [info("a", [32], 0, 0), info("b", [32], 0, 64)], DATA), "overlap"),
    "repeated tensor": (header([ARCH], [info("a", [8], 0, 0), info("a", [8], 0, 32)], DATA), "appears twice"),
    "bad alignment": (header([kv("general.alignment", UINT32, struct.pack("<I", 24))], []), "power of two"),
}


def valid(path: Path, rng: np.random.Generator, arch: str = "llama", kind=T.F32) -> Path:
    meta = hf_meta(arch)
    write_gguf(path, arch, meta, random_weights(meta, rng), kind, rng)
    return path


def tensor_at(path: Path, name: str) -> int:
    return next(t.data_offset for t in gguf.GGUFReader(path).tensors if t.name == name)


def nan_weight(path: Path, rng: np.random.Generator) -> None:
    valid(path, rng)
    data = bytearray(path.read_bytes())
    data[tensor_at(path, "blk.1.ffn_up.weight") + 40 : tensor_at(path, "blk.1.ffn_up.weight") + 44] = struct.pack(
        "<f", float("nan")
    )
    path.write_bytes(bytes(data))


def nan_block_scale(path: Path, rng: np.random.Generator) -> None:
    valid(path, rng, kind=T.Q8_0)
    data = bytearray(path.read_bytes())
    at = tensor_at(path, "blk.0.attn_v.weight") + 34 * 3  # the fourth block's float16 d
    data[at : at + 2] = np.array([np.inf], "<f2").tobytes()
    path.write_bytes(bytes(data))


def nan_half(path: Path, rng: np.random.Generator) -> None:
    valid(path, rng, kind=T.F16)
    data = bytearray(path.read_bytes())
    at = tensor_at(path, "output.weight") + 2 * 77
    data[at : at + 2] = np.array([np.nan], "<f2").tobytes()
    path.write_bytes(bytes(data))


def write_many_tokens(path: Path, rng: np.random.Generator) -> None:
    """2^20 two-byte token strings, the most an array holds: read (their memory counted), then the file refused."""
    count = 1 << 20
    tokens = kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, count) + text("ab") * count)
    path.write_bytes(header([ARCH, tokens], ONE, DATA))


def rewritten(path: Path, rng: np.random.Generator, change: Callable) -> None:
    """A valid file written again by gguf's writer, its fields and tensors passed through `change`."""
    source = valid(path.with_suffix(".source"), rng)
    original = gguf.GGUFReader(source)
    fields = {f.name: (f.contents(), f.types[0], f.types[-1]) for f in original.fields.values()}
    tensors = {t.name: (np.asarray(t.data), t.tensor_type) for t in original.tensors}
    change(fields, tensors)
    writer = gguf.GGUFWriter(path, fields.pop("general.architecture")[0])
    for name, (value, kind, item) in fields.items():
        if not name.startswith("GGUF."):
            writer.add_key_value(name, value, kind, item if kind == gguf.GGUFValueType.ARRAY else None)
    for name, (data, kind) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=kind if data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    source.unlink()


def with_tokenizer(pre: str, long_token: int = 0) -> Callable:
    def change(fields: dict, tensors: dict) -> None:
        V = gguf.GGUFValueType
        fields["tokenizer.ggml.model"] = ("gpt2", V.STRING, V.STRING)
        fields["tokenizer.ggml.pre"] = (pre, V.STRING, V.STRING)
        tokens = ["t", "1", "t1"] + [f"t{i}" for i in range(3, 300)]
        tokens[7] = "x" * long_token or tokens[7]
        fields["tokenizer.ggml.tokens"] = (tokens, V.ARRAY, V.STRING)
        fields["tokenizer.ggml.merges"] = (["t 1"], V.ARRAY, V.STRING)

    return change


SPOILT: dict[str, tuple[Callable[[Path, np.random.Generator], None], str]] = {
    "NaN weight": (nan_weight, "NaN or infinite values"),
    "infinite block scale": (nan_block_scale, "block scale that is NaN or infinite"),
    "NaN float16 weight": (nan_half, "a value that is NaN or infinite"),
    "unknown architecture": (
        lambda p, rng: rewritten(
            p, rng, lambda f, t: f.update({"general.architecture": ("mamba", f["general.architecture"][1], 0)})
        ),
        "general.architecture 'mamba'",
    ),
    "missing tensor": (lambda p, rng: rewritten(p, rng, lambda f, t: t.pop("blk.1.ffn_gate.weight")), "lacks"),
    "unknown pre-tokenizer": (lambda p, rng: rewritten(p, rng, with_tokenizer("made-up")), "'made-up' is not one"),
    "truncated": (
        lambda p, rng: p.write_bytes(valid(p.with_suffix(".whole"), rng).read_bytes()[:-1000]),
        "truncated or lying",
    ),
    "a 1 MB token": (
        lambda p, rng: rewritten(p, rng, with_tokenizer("gpt-2", long_token=1 << 20)),
        "tokenizer.ggml.tokens[7] is 1,048,576 bytes",
    ),
    "a million short tokens": (write_many_tokens, "llama.embedding_length"),
    "partial rotation": (
        lambda p, rng: rewritten(
            p, rng, lambda f, t: f.update({"llama.rope.dimension_count": (8, f["llama.rope.dimension_count"][1], 0)})
        ),
        "dimension_count",
    ),
}


def hostile_file(case: str, folder: Path, rng: np.random.Generator) -> Path:
    path = folder / "hostile.gguf"
    if case in CRAFTED:
        path.write_bytes(CRAFTED[case][0])
    else:
        SPOILT[case][0](path, rng)
    return path


@pytest.mark.parametrize("case", [*CRAFTED, *SPOILT])
def test_a_hostile_file_is_one_line_and_nothing_written(case, tmp_path, rng, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    source = hostile_file(case, tmp_path / "in", rng)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = pxgl(monkeypatch, capsys, "import", str(source), "-o", str(out / "model.pxi"))
    assert code == 2, f"exit {code}: {stdout}{err}"
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    message = (CRAFTED.get(case) or SPOILT[case])[1]
    assert message in err, f"{message!r} not in {err!r}"
    assert snapshot(out) == {}


PEAKS = """
import re, sys
from pathlib import Path
from pxgl import cli

for path in sys.argv[1:]:
    Path("/proc/self/clear_refs").write_text("5")  # the peak so far forgotten: each file's own
    sys.argv = ["pxgl", "import", path, "-o", path + ".pxi"]
    try:
        cli.main()
    except SystemExit as done:
        code = done.code
    peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) << 10
    print(code, peak)
"""


def test_hostile_files_stay_within_their_size_plus_200_mb(tmp_path, rng):
    """One process reads every hostile file in turn, its peak memory reset before each (Linux's clear_refs)."""
    paths = []
    for k, case in enumerate([*CRAFTED, *SPOILT]):
        folder = tmp_path / str(k)
        folder.mkdir()
        paths.append(hostile_file(case, folder, rng))
    run = subprocess.run([sys.executable, "-c", PEAKS, *map(str, paths)], capture_output=True, text=True)
    results = [line.split() for line in run.stdout.splitlines()]
    assert len(results) == len(paths), run.stderr
    for path, (code, peak) in zip(paths, results, strict=True):
        assert code == "2", f"{path}: exit {code}"
        assert int(peak) <= path.stat().st_size + (200 << 20), f"{path}: peak {int(peak) >> 20} MiB"
        assert not Path(str(path) + ".pxi").exists()


def test_random_header_bytes_are_read_or_refused_in_one_line(tmp_path, rng):
    """A valid file (with a tokenizer) with 1..3 random bytes of its header changed, 200 times: the import either
    reads it or refuses it with a PxglError — never another exception."""
    from pxgl.errors import PxglError
    from pxgl.gguf.header import read_header
    from pxgl.gguf.importing import import_gguf, plan

    rewritten(tmp_path / "tokens.gguf", rng, with_tokenizer("gpt-2"))
    data = (tmp_path / "tokens.gguf").read_bytes()
    end = read_header(tmp_path / "tokens.gguf").data_start
    spoilt, read = tmp_path / "spoilt.gguf", 0
    for _ in range(200):
        changed = bytearray(data)
        for at in rng.integers(0, end, int(rng.integers(1, 4))):
            changed[at] = int(rng.integers(0, 256))
        spoilt.write_bytes(bytes(changed))
        try:
            planned, mapped = plan(spoilt, None)
            import_gguf(spoilt, planned, mapped, "spoilt.tokenizer.json")
            read += 1
        except PxglError as e:
            assert "\n" not in str(e)
    assert 0 < read < 200  # some changes are harmless (a token's text), most are not
