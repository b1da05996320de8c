"""`pxgl import` / `pxgl export` (docs/FORMATS.md §10): safetensors files made by the safetensors library
itself, quantized by the spec's rule written out here, round trips to identical pixels, and hostile tensor
files refused in one line with nothing written."""

import json
import math
import struct

import numpy as np
import pytest
from PIL import Image
from pxgl.tokenizer import Tokenizer
from safetensors.numpy import save, save_file

from tests.cartridges import pxgl, random_text, snapshot
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
    source = tmp_path / "theirs.npz"
    np.savez(source, **theirs)
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
        code, _, stderr = pxgl(
            monkeypatch, capsys, "import", str(source), "--tokenizer", str(tokenizer_file), "-o", str(out)
        )
        assert code == 2, f"{case}: {stderr}"
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, f"{case}: {stderr}"
        assert str(source) in stderr, f"{case}: {stderr}"
        assert snapshot(tmp_path) == before, case


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
