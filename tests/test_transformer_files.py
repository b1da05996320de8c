"""Version-2 weights past one image (docs/FORMATS.md §14.7, §2.3): written as several images with a tiny
per-image side injected (so a model of a few kilobytes spans several), read back into one byte stream, and
read independently here from FORMATS alone (json, hashlib, Pillow); the independent oracle
(tests/reference/transformer.py) computes the logits the engine's reading must give. Hostile sets — a missing
image, a wrong sha256, lying sizes, too many images — are one line each."""

import hashlib
import io
import itertools
import json
import math
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl import pack as pack_module
from pxgl import png
from pxgl.cli import app
from pxgl.errors import PxglError
from pxgl.pxi import decode_rgb_into
from pxgl.tokenizer import Tokenizer
from pxgl.transformer import NumpyTransformer, TransformerArchitecture, files, read_transformer
from pxgl.transformer.cartridge import open_transformer_cartridge
from pxgl.transformer.meta import Rope
from typer.testing import CliRunner

from tests.cartridges import random_text
from tests.reference import transformer as oracle


def small_architecture(rng: np.random.Generator) -> TransformerArchitecture:
    width, heads = 32 * int(rng.integers(1, 3)), int(rng.choice([1, 2]))
    return TransformerArchitecture(
        vocab_size=int(rng.integers(200, 400)),
        context_length=16,
        width=width,
        layers=int(rng.integers(1, 3)),
        heads=heads,
        kv_heads=1,
        head_dim=width // heads,
        attention_scale=(width // heads) ** -0.5,
        mlp_kind=str(rng.choice(["gelu_tanh", "silu_gated"])),
        mlp_width=64,
        norm_kind=str(rng.choice(["layernorm", "rmsnorm"])),
        norm_eps=1e-5,
        rope=Rope(10000.0, "halves") if rng.random() < 0.5 else None,
        biases=frozenset(k for k in ("qkv", "attn_out", "mlp", "head") if rng.random() < 0.5),
        tied_head=bool(rng.random() < 0.5),
    )


def several_images(monkeypatch, rng, architecture, quants) -> int:
    """Lower the full image's side so this model's stream spans 3 to 8 images; the side set."""
    _, stream = files.random_layout(architecture, quants, seed=0)
    count = int(rng.integers(3, 9))
    side = math.isqrt(-(-len(stream) // (3 * (count - 1)))) + 1  # (count - 1) full images do not hold it
    while 3 * side * side * (count - 1) >= len(stream):
        side -= 1
    monkeypatch.setattr(files, "FULL_IMAGE_SIDE", side)
    return side


def read_as_formats_says(path: Path) -> tuple[dict, np.ndarray]:
    """§14.7 alone: the meta's images, image k at name.k.pxi, each file's size and sha256 as `files` records
    them, the stream their whole pixel bytes concatenated."""
    meta = json.loads(path.with_name(path.name.removesuffix(".pxi") + ".meta.json").read_text())
    sizes = meta["images"] if "images" in meta else [meta["image"]]
    records = meta["files"]["weights"] if "images" in meta else [meta["files"]["weights"]]
    stem, parts = path.name.removesuffix(".pxi"), []
    for k, (size, record) in enumerate(zip(sizes, records, strict=True)):
        image_path = path if k == 0 else path.with_name(f"{stem}.{k}.pxi")
        data = image_path.read_bytes()
        assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        with Image.open(image_path) as image:
            assert image.mode == "RGB" and image.size == (size["width"], size["height"])
            parts.append(np.asarray(image).reshape(-1))
    return meta, np.concatenate(parts)


@pytest.mark.parametrize("quant", ["q8", "q4", "u8", "f16"])
def test_a_model_past_one_image_is_written_as_several_and_reads_as_the_oracle_computes(
    tmp_path, monkeypatch, rng, quant
):
    architecture = small_architecture(rng)
    side = several_images(monkeypatch, rng, architecture, quant)
    path = tmp_path / "member.pxi"
    spec = files.write_random_transformer(path, architecture, quant, seed=int(rng.integers(1 << 32)), head_gain=3.0)
    meta, stream = read_as_formats_says(path)
    full = 3 * side * side
    assert "image" not in meta and len(meta["images"]) == len(spec.images) >= 3
    assert all(size == {"width": side, "height": side} for size in meta["images"][:-1])
    assert not (tmp_path / f"member.{len(spec.images)}.pxi").exists()
    spans = [
        (e["offset"], e["offset"] + oracle.tensor_bytes(tuple(e["shape"]), e["quant"]))
        for e in meta["tensors"].values()
    ]
    assert any(begin // full != (end - 1) // full for begin, end in spans), "no tensor spans two images"
    ours_spec, ours = read_transformer(path)
    assert ours.ndim == 1 and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, stream)
    assert ours_spec.images == spec.images
    tokens = rng.integers(0, architecture.vocab_size, int(rng.integers(1, architecture.context_length + 1)))
    ours_logits = NumpyTransformer(ours_spec, ours).run(tokens)
    theirs = oracle.forward(meta, oracle.dequantize(meta, stream), tokens)
    assert np.abs(ours_logits - theirs).max() <= oracle.AGREEMENT * (1 + np.abs(theirs).max())


def test_a_model_in_one_image_is_laid_out_byte_for_byte_as_the_oracle_lays_it(tmp_path, rng):
    architecture = small_architecture(rng)
    quants = {name: str(rng.choice(["q8", "q4", "u8", "f16"])) for name in architecture.shapes()}
    quants = {name: "f16" if len(shape) == 1 else quants[name] for name, shape in architecture.shapes().items()}
    path = tmp_path / "one.pxi"
    seed = int(rng.integers(1 << 32))
    files.write_random_transformer(path, architecture, quants, seed=seed)
    meta, stream = read_as_formats_says(path)
    values = files.random_values(architecture, np.random.default_rng(seed))
    theirs_meta, theirs_image = oracle.lay_out(architecture.to_json(), values, quants)
    assert "images" not in meta and meta["image"] == theirs_meta["image"]
    assert meta["tensors"] == theirs_meta["tensors"]
    np.testing.assert_array_equal(stream, theirs_image.reshape(-1))
    assert not (tmp_path / "one.1.pxi").exists()


def test_quantizing_in_pieces_gives_the_bytes_of_quantizing_whole(monkeypatch, rng):
    architecture = small_architecture(rng)
    seed = int(rng.integers(1 << 32))
    for quant in ("q8", "q4", "f16"):
        _, whole = files.random_layout(architecture, quant, seed)
        with monkeypatch.context() as patched:
            patched.setattr(files, "QUANTIZE_PIECE", int(rng.integers(1, 200)))
            _, pieces = files.random_layout(architecture, quant, seed)
        np.testing.assert_array_equal(pieces, whole)


@pytest.fixture
def architecture(rng) -> TransformerArchitecture:
    return small_architecture(rng)


@pytest.fixture
def written(tmp_path, monkeypatch, rng, architecture) -> tuple[Path, int]:
    several_images(monkeypatch, rng, architecture, "q8")
    path = tmp_path / "set.pxi"
    spec = files.write_random_transformer(path, architecture, "q8", seed=int(rng.integers(1 << 32)))
    return path, len(spec.images)


def meta_of(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".pxi") + ".meta.json")


def rewrite_meta(path: Path, change) -> None:
    meta = json.loads(meta_of(path).read_text())
    change(meta)
    meta_of(path).write_text(json.dumps(meta))


def test_a_missing_image_is_one_line_naming_it(written, rng):
    path, count = written
    k = int(rng.integers(1, count))
    path.with_name(f"set.{k}.pxi").unlink()
    with pytest.raises(PxglError, match=rf"set\.{k}\.pxi: no such pixel file \(image {k} of the model's {count}"):
        read_transformer(path)


def test_an_image_of_another_set_is_refused_by_its_sha256(written, rng):
    path, count = written
    full_images = files.image_paths(path, count)[:-1]  # at least two, all of one size
    target, other = (full_images[k] for k in rng.permutation(len(full_images))[:2])
    target.write_bytes(other.read_bytes())
    with pytest.raises(PxglError, match=rf"{target.name}: not the weights file its meta was written with"):
        read_transformer(path)


HOSTILE = [
    (lambda m: m["files"]["weights"].pop(), "must list a record of each of the"),
    (lambda m: m["files"].update(weights=m["files"]["weights"][0]), "must list a record of each of the"),
    (lambda m: m.update(image=m["images"][0]), "exactly one"),
    (lambda m: m.pop("images"), "exactly one"),
    (lambda m: m.update(images=m["images"][:1]), "list of 2 to 32"),
    (lambda m: m.update(images=m["images"] * 17), "list of 2 to 32"),
    (lambda m: m.update(images={"width": 1, "height": 1}), "list of 2 to 32"),
    (lambda m: m["images"][-1].update(extra=1), r"images\[\d+\] must be an object with exactly height, width"),
    (lambda m: m["images"][0].update(width=16385), r"images\[0\]: 'width'"),
    (lambda m: m["images"][-1].update(width=8192, height=8193), "past the pixel-file limit"),
    (
        lambda m: m["tensors"]["embed"].update(
            offset=sum(3 * i["width"] * i["height"] for i in m["images"]) // 4 * 4 - 4
        ),
        "run past the images'",
    ),
]


@pytest.mark.parametrize("change, message", HOSTILE)
def test_a_hostile_meta_past_one_image_is_one_line(written, change, message):
    path, _ = written
    rewrite_meta(path, change)
    with pytest.raises(PxglError, match=message):
        read_transformer(path)


def test_an_image_whose_size_is_not_its_meta_entry_is_refused_before_decoding(written, rng):
    path, count = written
    k = int(rng.integers(0, count))

    def lie(meta: dict) -> None:
        meta["images"][k]["width"] += 1
        meta.pop("files")  # a legacy meta: only the sizes can tell

    rewrite_meta(path, lie)
    with pytest.raises(PxglError, match=r"image is \d+x\d+ but its meta says"):
        read_transformer(path)


def test_a_stream_past_32_images_is_refused_before_anything_is_written(tmp_path, monkeypatch, rng):
    architecture = small_architecture(rng)
    _, stream = files.random_layout(architecture, "f16", seed=0)
    monkeypatch.setattr(files, "FULL_IMAGE_SIDE", math.isqrt(len(stream) // (3 * 40)))
    with pytest.raises(PxglError, match="a model spans at most 32"):
        files.write_random_transformer(tmp_path / "big.pxi", architecture, "f16", seed=0)
    assert not list(tmp_path.iterdir())


def test_a_write_failing_midway_leaves_the_old_set_as_it_was(written, monkeypatch, architecture):
    """The f16 set of the same model spans at least the q8 set's images: the second one fails to write."""
    path, _ = written
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    calls = {"n": 0}
    encode = files.encode_rgb

    def failing(pixels: np.ndarray) -> bytes:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return encode(pixels)

    monkeypatch.setattr(files, "encode_rgb", failing)
    with pytest.raises(PxglError, match="cannot write"):
        files.write_random_transformer(path, architecture, "f16", seed=1)
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before


def png_of_rows(pixels: np.ndarray, filters: np.ndarray, idat_pieces: int) -> bytes:
    """An RGB PNG of `pixels`, row y filtered as filters[y] says (0 None, 1 Sub, 2 Up, 3 Average), written
    here from the PNG specification, its image data cut into `idat_pieces` IDAT chunks."""
    height, width, _ = pixels.shape
    raw = pixels.reshape(height, 3 * width).astype(np.int32)
    left = np.pad(raw, ((0, 0), (3, 0)))[:, :-3]
    above = np.pad(raw, ((1, 0), (0, 0)))[:-1]
    predicted = np.choose(filters[:, None], [np.zeros_like(raw), left, above, (left + above) // 2])
    scanlines = np.concatenate([filters[:, None], (raw - predicted) % 256], axis=1).astype(np.uint8)
    compressed = zlib.compress(scanlines.tobytes())
    cuts = np.linspace(0, len(compressed), idat_pieces + 1).astype(int)

    def chunk(name: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))

    idats = b"".join(chunk(b"IDAT", compressed[a:b]) for a, b in itertools.pairwise(cuts))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + idats + chunk(b"IEND", b"")


@pytest.mark.parametrize("filters", ["none", "sub and up", "average too"])
def test_an_image_decoded_into_the_stream_in_pieces_is_the_image(monkeypatch, rng, filters):
    monkeypatch.setattr(png, "OUTPUT_STEP", int(rng.integers(50, 400)))  # rows land across many pieces
    width, height = int(rng.integers(1, 40)), int(rng.integers(1, 60))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    kinds = {"none": 1, "sub and up": 3, "average too": 4}[filters]
    data = png_of_rows(pixels, rng.integers(0, kinds, height), int(rng.integers(1, 4)))
    with Image.open(io.BytesIO(data)) as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)  # the file is what the PNG spec says
    out = np.zeros(width * height * 3, np.uint8)
    decode_rgb_into(data, "image", out, (width, height))
    np.testing.assert_array_equal(out, pixels.reshape(-1))
    with pytest.raises(PxglError, match="truncated"):
        decode_rgb_into(data[: len(data) // 2], "image", out, (width, height))
    with pytest.raises(PxglError, match="but its meta says"):
        decode_rgb_into(data, "image", out, (width + 1, height))


def pxgl_in_process(*args: str) -> tuple[int, str]:
    """The CLI in this process (so a monkeypatched image side holds): its exit code and what it printed, a
    PxglError as pxgl's main prints it (one line, exit status 2)."""
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, PxglError):
        return 2, f"error: {result.exception}\n"
    return result.exit_code, result.output


def meta_without_record(path: Path) -> dict:
    meta = json.loads(meta_of(path).read_text())
    meta.pop("files")
    return meta


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_export_then_import_gives_the_same_images_and_meta(tmp_path, monkeypatch, rng, suffix):
    """§10: float32 tensors out, and the same quantizations (u8 on its own grid) back in: the same bytes."""
    architecture = small_architecture(rng)
    quants = {name: str(rng.choice(["q8", "q4", "u8", "f16"])) for name in architecture.shapes()}
    several_images(monkeypatch, rng, architecture, quants)
    path = tmp_path / "m.pxi"
    spec = files.write_random_transformer(path, architecture, quants, seed=int(rng.integers(1 << 32)), bos=1)
    code, output = pxgl_in_process("export", "-m", str(path), "-o", str(tmp_path / f"m{suffix}"))
    assert code == 0, output
    back = tmp_path / "back.pxi"
    config = tmp_path / "config.json"
    if suffix == ".npz":  # no metadata: the architecture and the quantizations come as options
        config.write_text(json.dumps({"version": 2, **architecture.to_json(), "bos": 1}))
        kinds = {t.quant for t in spec.tensors.values() if len(t.shape) == 2}
        quant = "q8" if len(kinds) > 1 else kinds.pop()
        code, output = pxgl_in_process(
            "import", str(tmp_path / "m.npz"), "-o", str(back), "--config", str(config), "--quant", quant
        )
        assert code == 0, output
        imported = meta_without_record(back)
        assert {e["quant"] for e in imported["tensors"].values() if len(e["shape"]) == 2} == {quant}
        return
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), "np") as exported:  # the library reads what pxgl writes
        meta, stream = read_as_formats_says(path)
        np.testing.assert_array_equal(exported.get_tensor("embed"), oracle.dequantize(meta, stream)["embed"])
    code, output = pxgl_in_process("import", str(tmp_path / "m.safetensors"), "-o", str(back))
    assert code == 0, output
    assert meta_without_record(back) == meta_without_record(path)
    for original, imported in zip(
        files.image_paths(path, len(spec.images)), files.image_paths(back, len(spec.images)), strict=True
    ):
        assert original.read_bytes() == imported.read_bytes()


IMPORT_REFUSALS = [
    ({"quant": "q5"}, "--quant q5: give one of q8, q4, u8, f16"),
    ({"drop": "heads"}, "a version-2 architecture has exactly"),
    ({"add": ("hidden", [64])}, r"unknown \['hidden'\]"),
    ({"tensor": ("embed", np.float32, (3, 3))}, "tensor 'embed' is float32 \\[3, 3\\], not float"),
    (
        {"tensor": ("final_norm.weight", np.int32, None)},
        "tensor 'final_norm.weight' is 'I32'; pxgl imports F16, F32, F64",
    ),
    ({"nan": "embed"}, "tensor 'embed' holds NaN"),
    ({"quantization": {"embed": {"quant": "u8", "scale": -1.0, "zero_point": 1}}}, "pxgl.quantization: tensor 'embed'"),
]


@pytest.mark.parametrize("broken, message", IMPORT_REFUSALS)
def test_a_bad_version_2_import_is_one_line_and_writes_nothing(tmp_path, rng, broken, message):
    from safetensors.numpy import save_file

    architecture = small_architecture(rng)
    values = files.random_values(architecture, rng)
    document = {"version": 2, **architecture.to_json()}
    if "drop" in broken:
        document.pop(broken["drop"])
    if "add" in broken:
        document[broken["add"][0]] = broken["add"][1]
    if "tensor" in broken:
        name, dtype, shape = broken["tensor"]
        values[name] = np.ones(shape or values[name].shape, dtype)
    if "nan" in broken:
        values[broken["nan"]][0, 0] = np.nan
    metadata = {"pxgl.architecture": json.dumps(document)}
    if "quantization" in broken:
        metadata["pxgl.quantization"] = json.dumps(broken["quantization"])
    save_file(values, str(tmp_path / "in.safetensors"), metadata=metadata)
    extra = ["--quant", broken["quant"]] if "quant" in broken else []
    code, output = pxgl_in_process("import", str(tmp_path / "in.safetensors"), "-o", str(tmp_path / "out.pxi"), *extra)
    assert code == 2 and re.search(message, output), output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def relisted(members: dict[str, bytes], manifest_change=lambda m: None) -> dict[str, bytes]:
    """The members with a manifest listing them as they are now (then changed as asked)."""
    manifest = json.loads(members["manifest.json"])
    manifest["members"] = [
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in members.items()
        if name != "manifest.json"
    ]
    manifest_change(manifest)
    return {"manifest.json": json.dumps(manifest).encode()} | {k: v for k, v in members.items() if k != "manifest.json"}


@pytest.fixture
def packed(written, tmp_path) -> tuple[Path, Path, int]:
    path, count = written
    code, output = pxgl_in_process("pack", "-m", str(path), "-o", str(tmp_path / "set.pxa"))
    assert code == 0, output
    return path, tmp_path / "set.pxa", count


def test_a_model_past_one_image_packs_into_a_version_2_cartridge_and_back(packed, tmp_path):
    path, cart, count = packed
    members = zip_members(cart)
    assert next(iter(members)) == "manifest.json"
    manifest = json.loads(members["manifest.json"])
    assert (manifest["version"], manifest["formats"]) == (2, {"weights": 2})
    images = ["weights.pxi", *(f"weights.{k}.pxi" for k in range(1, count))]
    assert [m["name"] for m in manifest["members"]] == [*images, "weights.meta.json"]
    for entry in manifest["members"]:
        assert entry["size"] == len(members[entry["name"]])
        assert entry["sha256"] == hashlib.sha256(members[entry["name"]]).hexdigest()
    meta, stream = read_as_formats_says(path)
    packed_meta = json.loads(members["weights.meta.json"])
    assert "files" not in packed_meta and packed_meta == {k: v for k, v in meta.items() if k != "files"}
    parts = [np.asarray(Image.open(io.BytesIO(members[name]))).reshape(-1) for name in images]
    np.testing.assert_array_equal(np.concatenate(parts), stream)
    opened = open_transformer_cartridge(cart)
    np.testing.assert_array_equal(opened.stream, stream)
    assert opened.tokenizer is None and len(opened.spec.images) == count
    code, output = pxgl_in_process("pack", "-m", str(cart), "-o", str(tmp_path / "again.pxa"))
    assert code == 0, output
    assert (tmp_path / "again.pxa").read_bytes() == cart.read_bytes()
    code, output = pxgl_in_process("inspect", str(cart))
    assert code == 0 and "verdict        valid: runs" in output and "pxgl-cartridge version 2 (weights 2)" in output


def drop_image(members: dict[str, bytes]) -> dict[str, bytes]:
    return relisted({k: v for k, v in members.items() if k != "weights.2.pxi"})


def one_more_image(members: dict[str, bytes]) -> dict[str, bytes]:
    return relisted(members | {"weights.31.pxi": members["weights.1.pxi"]})


def changed_image(members: dict[str, bytes]) -> dict[str, bytes]:
    changed = bytearray(members["weights.1.pxi"])
    changed[len(changed) // 2] ^= 1  # the listed size still holds; its sha256 no longer does
    return members | {"weights.1.pxi": bytes(changed)}


def with_a_program(members: dict[str, bytes]) -> dict[str, bytes]:
    return relisted(members | {"program.pxi": members["weights.pxi"]})


def tokenizer_not_named(members: dict[str, bytes]) -> dict[str, bytes]:
    return relisted(members | {"tokenizer.json": b"{}"})


def version_1_with_weights_2(members: dict[str, bytes]) -> dict[str, bytes]:
    return relisted(members, lambda m: m.update(version=1, formats={"weights": 2, "pxvm": 0}))


def formats_with_pxvm(members: dict[str, bytes]) -> dict[str, bytes]:
    return relisted(members, lambda m: m.update(formats={"weights": 2, "pxvm": 1}))


CARTRIDGE_REFUSALS = [
    (drop_image, r"lacks \['weights\.2\.pxi'\]"),
    (one_more_image, r"has \['weights\.31\.pxi'\]"),
    (changed_image, r"member 'weights\.1\.pxi' fails its sha256 check"),
    (with_a_program, r"member 'program\.pxi' has no role in a version-2 cartridge"),
    (tokenizer_not_named, r"names tokenizer None; in a version-2 cartridge it is 'tokenizer\.json'"),
    (version_1_with_weights_2, "version-2 weights come in a version-2 cartridge"),
    (formats_with_pxvm, r"a version-2 cartridge's 'formats' is \{\"weights\": 2\}"),
]


@pytest.mark.parametrize("break_it, message", CARTRIDGE_REFUSALS)
def test_a_hostile_version_2_cartridge_is_one_line(packed, tmp_path, break_it, message):
    _, cart, _ = packed
    members = zip_members(cart)  # at least 3 images: weights.2.pxi is there
    write_zip(tmp_path / "hostile.pxa", break_it(members))
    with pytest.raises(PxglError, match=message):
        open_transformer_cartridge(tmp_path / "hostile.pxa")


def test_a_cartridge_past_its_bound_is_refused_before_anything_is_written(written, tmp_path, monkeypatch):
    path, _ = written
    monkeypatch.setattr(pack_module, "MAX_TRANSFORMER_BYTES", path.stat().st_size)
    code, output = pxgl_in_process("pack", "-m", str(path), "-o", str(tmp_path / "big.pxa"))
    assert code == 2 and "past a cartridge's" in output and "keep the .pxi set" in output
    assert not (tmp_path / "big.pxa").exists()


def test_an_import_with_a_tokenizer_writes_it_beside_or_keeps_it_in_place(tmp_path, rng):
    from safetensors.numpy import save_file

    architecture = small_architecture(rng)
    architecture = TransformerArchitecture(**(vars(architecture) | {"vocab_size": int(rng.integers(256, 400))}))
    tokenizer = Tokenizer.train(random_text(rng, 3000), architecture.vocab_size)
    given = tmp_path / "given.tokenizer.json"
    tokenizer.save(given)
    metadata = {"pxgl.architecture": json.dumps({"version": 2, **architecture.to_json()})}
    save_file(files.random_values(architecture, rng), str(tmp_path / "in.safetensors"), metadata=metadata)
    code, output = pxgl_in_process(
        "import", str(tmp_path / "in.safetensors"), "-o", str(tmp_path / "m.pxi"), "--tokenizer", str(given)
    )
    assert code == 0, output
    meta, _ = read_as_formats_says(tmp_path / "m.pxi")
    beside = tmp_path / "m.tokenizer.json"
    assert meta["tokenizer"] == beside.name and Tokenizer.load(beside).to_json() == tokenizer.to_json()
    assert meta["files"]["tokenizer"]["sha256"] == hashlib.sha256(beside.read_bytes()).hexdigest()
    kept = beside.read_bytes()
    code, output = pxgl_in_process(
        "import", str(tmp_path / "in.safetensors"), "-o", str(tmp_path / "m.pxi"), "--tokenizer", str(beside), "--force"
    )
    assert code == 0, output
    meta = json.loads(meta_of(tmp_path / "m.pxi").read_text())
    assert beside.read_bytes() == kept and meta["tokenizer"] == beside.name and "tokenizer" not in meta["files"]
    code, output = pxgl_in_process("export", "-m", str(tmp_path / "m.pxi"), "-o", str(tmp_path / "out.safetensors"))
    assert code == 0, output
    header = files_header(tmp_path / "out.safetensors")
    assert Tokenizer.loads(header["__metadata__"]["pxgl.tokenizer"], "metadata").to_json() == tokenizer.to_json()
    code, output = pxgl_in_process("pack", "-m", str(tmp_path / "m.pxi"), "-o", str(tmp_path / "m.pxa"))
    assert code == 0, output
    assert json.loads(zip_members(tmp_path / "m.pxa")["weights.meta.json"])["tokenizer"] == "tokenizer.json"
    assert open_transformer_cartridge(tmp_path / "m.pxa").tokenizer.to_json() == tokenizer.to_json()


def files_header(path: Path) -> dict:
    """A safetensors header as the format says: 8 bytes of little-endian length, then that much JSON."""
    data = path.read_bytes()
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
