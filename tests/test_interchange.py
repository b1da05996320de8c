"""`pxgl import` / `pxgl export` (docs/FORMATS.md §10): safetensors files made by the safetensors library
itself, quantized by the spec's rule written out here, round trips to identical pixels, and hostile tensor
files refused in one line with nothing written."""

import io
import json
import math
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image
from pxgl.tokenizer import Tokenizer
from safetensors.numpy import save, save_file

from tests.cartridges import pxgl, random_text, snapshot
from tests.cli_process import PEAK_MEMORY
from tests.reference.models import member_shapes, meta_beside, random_architecture, write_random_member

PERCENTILES = (0.01, 99.99)


def spec_quantization(w: np.ndarray) -> tuple[np.ndarray, float, int]:
    """FORMATS §10's rule, written from the text: float32 first, the percentile range widened to hold 0."""
    w = w.astype(np.float32)
    low, high = np.percentile(w, PERCENTILES)
    lo, hi = min(float(low), 0.0), max(float(high), 0.0)
    scale = (hi - lo) / 255
    zero_point = round(-lo / scale)
    return np.clip(np.round(w / scale) + zero_point, 0, 255).astype(np.uint8), scale, zero_point


def stored_tensors(weights) -> dict[str, np.ndarray]:
    """Each tensor's bytes as the meta places them in the image, read with Pillow and json alone."""
    meta = meta_beside(weights)
    with Image.open(weights) as image:
        stream = np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1)
    return {
        name: stream[t["offset"] : t["offset"] + math.prod(t["shape"])].reshape(t["shape"])
        for name, t in meta["tensors"].items()
    }


def random_floats(rng: np.random.Generator, arch: dict) -> dict[str, np.ndarray]:
    dtypes = [np.float16, np.float32, np.float64]
    return {
        name: (rng.standard_normal(shape) * rng.uniform(0.01, 3.0)).astype(dtypes[int(rng.integers(0, 3))])
        for name, shape in member_shapes(arch).items()
    }


def architecture_json(arch: dict) -> str:
    return json.dumps({k: arch[k] for k in ("vocab_size", "embed_dim", "context", "hidden", "residual")})


@pytest.fixture
def tokenizer_file(tmp_path, rng):
    """A trained tokenizer of 300 tokens; the architectures below use that vocabulary."""
    path = tmp_path / "given.tokenizer.json"
    Tokenizer.train(random_text(rng), 300).save(path)
    return path


def small_architecture(rng: np.random.Generator) -> dict:
    return random_architecture(rng) | {"vocab_size": 300}


def test_import_quantizes_library_made_safetensors_by_the_documented_rule(
    tmp_path, rng, tokenizer_file, monkeypatch, capsys
):
    for index in range(3):
        arch = small_architecture(rng)
        floats = random_floats(rng, arch)
        source = tmp_path / f"trained{index}.safetensors"
        save_file(floats, source, metadata={"pxgl.architecture": architecture_json(arch)})
        out = tmp_path / f"imported{index}.pxi"
        code, stdout, stderr = pxgl(
            monkeypatch, capsys, "import", str(source), "--tokenizer", str(tokenizer_file), "-o", str(out), "--json"
        )
        assert code in (None, 0), stderr
        stored = stored_tensors(out)
        meta = meta_beside(out)
        assert meta["version"] == 1 and {k: meta[k] for k in arch} == arch
        reported = [json.loads(line) for line in stdout.splitlines()][:-1]
        for record in reported:
            name = record["tensor"]
            q, scale, zero_point = spec_quantization(floats[name])
            np.testing.assert_array_equal(stored[name], q, err_msg=f"{name} of {arch}")
            assert meta["tensors"][name]["zero_point"] == zero_point
            assert math.isclose(meta["tensors"][name]["scale"], scale, rel_tol=1e-6)
            back = (q.astype(np.float32) - zero_point) * np.float32(scale)
            error = np.abs(back - floats[name].astype(np.float32))
            assert math.isclose(record["max_error"], float(error.max()), rel_tol=1e-5, abs_tol=1e-9)
        assert {r["tensor"] for r in reported} == set(floats)
        assert Tokenizer.load(tmp_path / f"imported{index}.tokenizer.json").to_json() == (
            Tokenizer.load(tokenizer_file).to_json()
        )


def test_export_then_import_gives_identical_pixels(tmp_path, rng, tokenizer_file, monkeypatch, capsys):
    for index in range(3):
        arch = small_architecture(rng)
        model = write_random_member(tmp_path, rng, arch, name=f"m{index}")
        tokenizer_file.replace(tmp_path / f"m{index}.tokenizer.json")
        exported = tmp_path / f"m{index}.safetensors"
        code, _, stderr = pxgl(monkeypatch, capsys, "export", "-m", str(model), "-o", str(exported))
        assert code in (None, 0), stderr
        back = tmp_path / f"back{index}.pxi"
        code, _, stderr = pxgl(monkeypatch, capsys, "import", str(exported), "-o", str(back))
        assert code in (None, 0), stderr
        with Image.open(model) as a, Image.open(back) as b:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(arch))
        assert meta_beside(back)["tensors"] == meta_beside(model)["tensors"]
        assert (tmp_path / f"back{index}.tokenizer.json").read_bytes() == (
            tmp_path / f"m{index}.tokenizer.json"
        ).read_bytes()
        tokenizer_file = tmp_path / f"m{index}.tokenizer.json"


def test_npz_with_other_names_imports_through_map_and_config(tmp_path, rng, tokenizer_file, monkeypatch, capsys):
    arch = small_architecture(rng) | {"hidden": [24], "context": {"mode": "mean", "window": 3}}
    floats = random_floats(rng, arch)
    theirs = {"tok_emb": floats.pop("embed"), "fc1.w": floats.pop("layer0.weight")} | floats
    # as other writers store them: column-major, big-endian, deflated
    theirs |= {"fc1.w": np.asfortranarray(theirs["fc1.w"]), "tok_emb": theirs["tok_emb"].astype(">f8")}
    source = tmp_path / "theirs.npz"
    np.savez_compressed(source, **theirs)
    config = tmp_path / "arch.json"
    config.write_text(architecture_json(arch))
    out = tmp_path / "mapped.pxi"
    args = ["import", str(source), "--tokenizer", str(tokenizer_file), "--config", str(config), "-o", str(out)]
    code, _, stderr = pxgl(monkeypatch, capsys, *args, "--map", "tok_emb=embed", "--map", "fc1.w=layer0.weight")
    assert code in (None, 0), stderr
    stored = stored_tensors(out)
    np.testing.assert_array_equal(stored["embed"], spec_quantization(theirs["tok_emb"])[0])
    np.testing.assert_array_equal(stored["layer0.weight"], spec_quantization(theirs["fc1.w"])[0])
    code, _, stderr = pxgl(monkeypatch, capsys, *args, "--map", "tok_emb=embed")
    assert code == 2 and "layer0.weight" in stderr and "fc1.w" in stderr


def header_file(header: object, body: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + body


def past_float32(rng: np.random.Generator, w: np.ndarray) -> np.ndarray:
    """`w` as float64 with one value, at a random place, past float32's range (its cast is inf)."""
    w = w.astype(np.float64)
    w.flat[int(rng.integers(w.size))] = float(rng.choice([1e300, -1e300, 1e39]))
    return w


def hostile_files(rng: np.random.Generator, arch: dict) -> dict[str, bytes]:
    floats = {n: w.astype(np.float32) for n, w in random_floats(rng, arch).items()}
    good = save(floats, metadata={"pxgl.architecture": architecture_json(arch)})
    (length,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + length])
    body = good[8 + length :]
    first, second = sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"])[:2]

    def edited(name: str, **fields) -> bytes:
        changed = json.loads(json.dumps(header))
        changed[name] |= fields
        return header_file(changed, body)

    matrix = next(n for n in header if n != "__metadata__" and len(header[n]["shape"]) == 2)
    a, b = header[first]["data_offsets"], header[second]["data_offsets"]
    return {
        "header length past the file": struct.pack("<Q", len(good)) + good[8:],
        "huge header": header_file(b"{}", length=1 << 40),
        "header not JSON": header_file(b"{'embed': nope", body),
        "header not UTF-8": header_file(b'{"\xff": 1}', body),
        "offsets outside the data": edited(first, data_offsets=[a[0], len(body) + 4]),
        "offsets overlapping": edited(second, data_offsets=[b[0] - 4, b[1] - 4]),
        "dtype not float": edited(first, dtype="I32"),
        "shape not the architecture's": edited(matrix, shape=[math.prod(header[matrix]["shape"])]),
        "shape not the bytes": edited(first, shape=[*header[first]["shape"], 2]),
        "repeated key": header_file(b'{"embed": 1, "embed": 2}', body),
        "too short": b"\x01\x00",
        "NaN weights": save(
            floats | {first: np.full(header[first]["shape"], np.nan, np.float32)},
            metadata={"pxgl.architecture": architecture_json(arch)},
        ),
        "float64 past float32's range": save(
            floats | {matrix: past_float32(rng, floats[matrix])},
            metadata={"pxgl.architecture": architecture_json(arch)},
        ),
        "a quantization scale float32 cannot hold": save(
            floats,
            metadata={
                "pxgl.architecture": architecture_json(arch),
                "pxgl.quantization": json.dumps({first: [float(rng.choice([1e-300, 1e300])), 0]}),
            },
        ),
    }


def test_hostile_safetensors_are_one_line_errors_with_nothing_written(
    tmp_path, rng, tokenizer_file, monkeypatch, capsys
):
    arch = small_architecture(rng)
    for case, data in hostile_files(rng, arch).items():
        source = tmp_path / "hostile.safetensors"
        source.write_bytes(data)
        before = snapshot(tmp_path)
        out = tmp_path / "never.pxi"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a RuntimeWarning on the way to the error is a second line
            code, _, stderr = pxgl(
                monkeypatch, capsys, "import", str(source), "--tokenizer", str(tokenizer_file), "-o", str(out)
            )
        assert code == 2, f"{case}: {stderr}"
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, f"{case}: {stderr}"
        assert str(source) in stderr, f"{case}: {stderr}"
        assert snapshot(tmp_path) == before, case


LOCAL_HEADER = struct.Struct("<4s5H3L2H")
CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
END_RECORD = struct.Struct("<4s4H2LH")


def deflated(*segments: bytes, repeats: int = 1) -> bytes:
    """Raw deflate of the segments, the last one `repeats` times: each segment is compressed on its own and
    ends byte-aligned (a full flush), so copies of it concatenate into one stream (a bomb, built in ms)."""

    def alone(data: bytes) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)

    *head, tail = segments
    return b"".join(map(alone, head)) + alone(tail) * repeats + b"\x03\x00"  # an empty final block


def zip_archive(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of deflated members (name, raw deflate, CRC-32, declared size), written field by field so a
    test declares whatever it wants."""
    out, directory = io.BytesIO(), io.BytesIO()
    for name, data, crc, size in members:
        offset, encoded = out.tell(), name.encode()
        out.write(LOCAL_HEADER.pack(b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(encoded), 0))
        out.write(encoded + data)
        fields = (b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(encoded), 0, 0, 0, 0, 0, offset)
        directory.write(CENTRAL_HEADER.pack(*fields) + encoded)
    start, listing = out.tell(), directory.getvalue()
    end = END_RECORD.pack(b"PK\x05\x06", 0, 0, len(members), len(members), len(listing), start, 0)
    return out.getvalue() + listing + end


def member(name: str, npy: bytes) -> tuple[str, bytes, int, int]:
    return name, deflated(npy), zlib.crc32(npy), len(npy)


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version-1 .npy header as numpy writes it (padded to 64 bytes)."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    size = -(-(len(text) + 11) // 64) * 64 - 10
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", size) + text.ljust(size - 1) + b"\n"


def npy(w: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, w)
    return buffer.getvalue()


def hostile_npz(rng: np.random.Generator, arch: dict) -> dict[str, tuple[bytes, str]]:
    """Case → (file, what its one-line error says), each built around a random valid set of tensors."""
    floats = {n: w.astype(np.float32) for n, w in random_floats(rng, arch).items()}
    name = str(rng.choice(list(floats)))
    shape = floats[name].shape
    others = [member(f"{n}.npy", npy(w)) for n, w in floats.items() if n != name]
    data_bytes = math.prod(shape) * 4
    bomb = deflated(npy_header("<f4", (1 << 28,)), bytes(1 << 24), repeats=64)  # 1 MB inflating to 1 GiB

    def with_member(npy_bytes: bytes, size: int | None = None, crc: int | None = None) -> bytes:
        """The valid tensors and this member under `name`, its declared size and CRC-32 as given."""
        _, data, true_crc, true_size = member(f"{name}.npy", npy_bytes)
        forged = (f"{name}.npy", data, true_crc if crc is None else crc, true_size if size is None else size)
        return zip_archive([*others, forged])

    return {
        "a 64-byte member claiming 4 TiB": (with_member(npy_header("<f4", (1 << 40,))), "shape [1099511627776]"),
        "a member declaring fewer bytes than its shape": (
            with_member(npy_header("<f4", shape) + bytes(data_bytes - 4)),
            "declares",
        ),
        "a bomb declaring 1 GiB under a tensor's name": (
            zip_archive([*others, (f"{name}.npy", bomb, 0, (1 << 30) + 64)]),
            f"member '{name}.npy' declares 1,073,741,888 bytes",
        ),
        "a bomb under a name the architecture lacks": (
            zip_archive([*others, member(f"{name}.npy", npy(floats[name])), ("bomb.npy", bomb, 0, (1 << 30) + 64)]),
            "also has ['bomb']",
        ),
        "a header length past the bound": (
            with_member(b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 31) + b"{}"),
            "2,147,483,648-byte .npy header",
        ),
        "a pickled object array": (with_member(npy_header("|O", shape) + bytes(data_bytes)), "'|O'"),
        "float64 past float32's range": (
            with_member(npy(past_float32(rng, floats[name]))),
            f"tensor '{name}' holds NaN or infinite values, or values past float32's range",
        ),
        "a wrong CRC": (with_member(npy(floats[name]), crc=1), "CRC"),
        "not a zip": (rng.bytes(200), "not a zip archive"),
        "an end record listing 9,999 entries": (
            zip_archive(others)[: -END_RECORD.size] + END_RECORD.pack(b"PK\x05\x06", 0, 0, 9999, 9999, 1 << 21, 0, 0),
            "past the limits",
        ),
    }


def test_hostile_npz_files_are_one_line_errors_naming_the_file_before_inflating(
    tmp_path, rng, tokenizer_file, monkeypatch, capsys
):
    arch = small_architecture(rng)
    config = tmp_path / "arch.json"
    config.write_text(architecture_json(arch))
    for case, (data, message) in hostile_npz(rng, arch).items():
        source = tmp_path / "hostile.npz"
        source.write_bytes(data)
        before = snapshot(tmp_path)
        args = ["import", str(source), "--config", str(config), "--tokenizer", str(tokenizer_file)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            code, _, stderr = pxgl(monkeypatch, capsys, *args, "-o", str(tmp_path / "never.pxi"))
        assert code == 2, f"{case}: {stderr}"
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, f"{case}: {stderr}"
        assert stderr.startswith(f"error: {source}: ") and message in stderr, f"{case}: {stderr}"
        assert snapshot(tmp_path) == before, case


def test_a_deflate_bomb_in_an_npz_is_never_inflated(tmp_path, rng, tokenizer_file):
    """A 1 MB member inflating to 1 GiB: refused from the zip's directory, within FORMATS §0.3's bound
    (500 MB plus 4x the input) — numpy.load inflated it whole before its name was checked."""
    arch = small_architecture(rng)
    config = tmp_path / "arch.json"
    config.write_text(architecture_json(arch))
    source = tmp_path / "bomb.npz"
    data, message = hostile_npz(rng, arch)["a bomb under a name the architecture lacks"]
    source.write_bytes(data)
    args = ["import", str(source), "--config", str(config), "--tokenizer", str(tokenizer_file)]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, *args, "-o", str(tmp_path / "never.pxi")], capture_output=True, text=True
    )
    *lines, peak = done.stderr.splitlines()
    assert int(peak) < 500_000_000 + 4 * len(data), f"peak {int(peak) >> 20} MiB"
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], lines


def test_outputs_never_overwrite_inputs(tmp_path, rng, tokenizer_file, monkeypatch, capsys):
    arch = small_architecture(rng)
    model = write_random_member(tmp_path, rng, arch, name="m")
    tokenizer_file.replace(tmp_path / "m.tokenizer.json")
    exported = tmp_path / "m.safetensors"
    assert pxgl(monkeypatch, capsys, "export", "-m", str(model), "-o", str(exported))[0] in (None, 0)
    config = tmp_path / "new.meta.json"
    config.write_text(architecture_json(arch))
    (tmp_path / "link.safetensors").symlink_to(model)
    refused = {
        "a config where the meta goes": (
            "import",
            str(exported),
            "--config",
            str(config),
            "-o",
            str(tmp_path / "new.pxi"),
        ),
        "a link to the model": ("export", "-m", str(model), "-o", str(tmp_path / "link.safetensors")),
    }
    for case, args in refused.items():
        before = snapshot(tmp_path)
        code, _, stderr = pxgl(monkeypatch, capsys, *args)
        assert code == 2 and "is the input" in stderr and len(stderr.strip().splitlines()) == 1, f"{case}: {stderr}"
        assert snapshot(tmp_path) == before, case


def test_a_tokenizer_where_the_model_puts_it_is_used_in_place(tmp_path, rng, tokenizer_file, monkeypatch, capsys):
    arch = small_architecture(rng)
    source = tmp_path / "tiny.safetensors"
    save_file(random_floats(rng, arch), source, metadata={"pxgl.architecture": architecture_json(arch)})
    in_place = tmp_path / "tiny.tokenizer.json"
    tokenizer_file.replace(in_place)
    before = in_place.stat().st_mtime_ns, in_place.read_bytes()
    code, _, stderr = pxgl(
        monkeypatch, capsys, "import", str(source), "--tokenizer", str(in_place), "-o", str(tmp_path / "tiny.pxi")
    )
    assert code in (None, 0), stderr
    assert (in_place.stat().st_mtime_ns, in_place.read_bytes()) == before
    assert meta_beside(tmp_path / "tiny.pxi")["tokenizer"] == "tiny.tokenizer.json"


def test_the_meta_files_record_is_checked_through_the_bounded_opener(tmp_path, rng, tokenizer_file):
    """A model written as a set (its meta records the other files) whose weights became a FIFO, or whose
    tokenizer became a link to /dev/zero, is refused in one line: never a hang, never an unbounded read."""
    import os
    import subprocess
    import sys

    arch = small_architecture(rng)
    source = tmp_path / "set.safetensors"
    save_file(random_floats(rng, arch), source, metadata={"pxgl.architecture": architecture_json(arch)})
    command = [sys.executable, "-m", "pxgl.cli"]
    made = subprocess.run(
        [*command, "import", str(source), "--tokenizer", str(tokenizer_file), "-o", str(tmp_path / "m.pxi")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "files" in meta_beside(tmp_path / "m.pxi")
    weights, tokenizer = tmp_path / "m.pxi", tmp_path / "m.tokenizer.json"
    kept = weights.read_bytes()
    weights.unlink()
    os.mkfifo(weights)
    refused = subprocess.run([*command, "infer", "-m", str(weights), "ab"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "FIFO" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    weights.unlink()
    weights.write_bytes(kept)
    tokenizer.unlink()
    tokenizer.symlink_to("/dev/zero")
    refused = subprocess.run([*command, "infer", "-m", str(weights), "ab"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "device" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_inspect_refuses_a_tokenizer_its_meta_was_not_written_with(tmp_path, rng, tokenizer_file, monkeypatch, capsys):
    arch = small_architecture(rng)
    source = tmp_path / "set.safetensors"
    save_file(random_floats(rng, arch), source, metadata={"pxgl.architecture": architecture_json(arch)})
    out = tmp_path / "m.pxi"
    code, _, stderr = pxgl(
        monkeypatch, capsys, "import", str(source), "--tokenizer", str(tokenizer_file), "-o", str(out)
    )
    assert code in (None, 0), stderr
    code, stdout, stderr = pxgl(monkeypatch, capsys, "inspect", str(out))
    assert code in (None, 0) and "present, 300 tokens" in stdout, stderr
    with (tmp_path / "m.tokenizer.json").open("a") as tokenizer:
        tokenizer.write(" ")
    code, _, stderr = pxgl(monkeypatch, capsys, "inspect", str(out))
    assert code == 2 and "not the tokenizer file its meta was written with" in stderr
    assert len(stderr.strip().splitlines()) == 1
