"""Untrusted cartridges (docs/FORMATS.md §8): each class of hostile archive is built here, opened, and
shown to be rejected with its own message, before any GPU work, with nothing extracted or written, and
through the CLI as exit status 2 with one line."""

import hashlib
import json
import re
import stat
import tracemalloc
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxgl.cartridge import (
    EXECUTOR_NAME,
    FORMAT,
    FORMAT_KEYS,
    MAX_MEMBERS,
    MAX_NAME,
    MAX_RATIO,
    MAX_TOTAL_BYTES,
    open_cartridge,
)
from pxgl.errors import PxglError
from pxgl.gl import GLBackend
from pxgl.loading import load_model
from pxgl.pxi import encode_rgb, encode_tokens, write_rgb
from pxgl.pxvm.compiler import compile_program, compiled_instructions, scratch_layout
from pxgl.pxvm.program import encode_program
from pxgl.spec import spec_from_meta

from tests.cartridges import (
    entry,
    patch_entry,
    pxgl,
    random_cartridge,
    read_members,
    relisted,
    snapshot,
    write_contents,
    write_streamed,
    write_zip,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """One valid cartridge (small model) and its members, shared by every hostile variant."""
    directory = tmp_path_factory.mktemp("valid")
    # one fixed model suffices: each hostile variant draws its own randomness from the per-test rng
    cart, _ = random_cartridge(directory, np.random.default_rng(0), vocab=300, embed=16, hidden=24, window=4)
    return cart, read_members(cart)


def pick(rng: np.random.Generator, contents: dict[str, bytes]) -> str:
    """A random member other than the manifest."""
    names = [n for n in contents if n != "manifest.json"]
    return names[int(rng.integers(len(names)))]


# --- one builder per class: (path, valid members, rng) → writes the hostile archive at path ------------


def dot_dot(path, contents, rng):
    write_contents(path, relisted(contents | {"../" * int(rng.integers(1, 4)) + "evil.comp": b"void main() {}"}))


def absolute(path, contents, rng):
    name = str(rng.choice(["/etc/cron.d/evil", "/tmp/evil.comp", "\\evil.comp", "C:/evil.comp"]))
    write_contents(path, relisted(contents | {name: b"x"}))


def symlink(path, contents, rng):
    target = b"../../../etc/passwd"
    listed = relisted(contents | {"shaders/link.comp": target})
    entries = [(n, d) for n, d in listed.items() if n != "shaders/link.comp"]
    write_zip(path, [*entries, (entry("shaders/link.comp", mode=stat.S_IFLNK | 0o777), target)])


def duplicate(path, contents, rng):
    name = pick(rng, contents)
    write_zip(path, [*contents.items(), (name, contents[name] + b" ")])


def unlisted(path, contents, rng):
    write_contents(path, contents | {"shaders/extra.comp": b"void main() {}"})


def missing(path, contents, rng):
    name = pick(rng, contents)
    write_contents(path, {n: d for n, d in contents.items() if n != name})


def size_mismatch(path, contents, rng):
    doc = json.loads(contents["manifest.json"])
    member = doc["members"][int(rng.integers(len(doc["members"])))]
    delta = int(rng.integers(1, 50))
    member["size"] += delta if member["size"] < delta or rng.random() < 0.5 else -delta
    write_contents(path, contents | {"manifest.json": json.dumps(doc).encode()})


def sha256_mismatch(path, contents, rng):
    name = pick(rng, contents)
    data = bytearray(contents[name])
    data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    write_contents(path, contents | {name: bytes(data)})


def write_rest_listing_bomb(archive: zipfile.ZipFile, contents: dict, size: int, digest: str) -> None:
    """The cartridge's own members, with a manifest that lists the bomb honestly (size and sha256 match)."""
    base = json.loads(contents["manifest.json"])
    base["members"].append({"name": "shaders/bomb.comp", "size": size, "sha256": digest})
    archive.writestr("manifest.json", json.dumps(base))
    for name, data in contents.items():
        if name != "manifest.json":
            archive.writestr(name, data)


def bomb_by_ratio(path, contents, rng):
    """One member of zeros: deflate squeezes 1000:1."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        size, digest = write_streamed(archive, "shaders/bomb.comp", bytes(MIB), int(rng.integers(8, 32)))
        write_rest_listing_bomb(archive, contents, size, digest)


def bomb_by_total(path, contents, rng):
    """Members that each deflate within the ratio limit, but add up past the total size limit."""
    chunk = bytearray(MIB)
    chunk[: MIB // 64] = rng.integers(0, 256, MIB // 64, dtype=np.uint8).tobytes()  # about 60:1
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        size, digest = write_streamed(archive, "shaders/bomb.comp", bytes(chunk), MAX_TOTAL_BYTES // MIB + 1)
        write_rest_listing_bomb(archive, contents, size, digest)


def malformed_manifest(path, contents, rng):
    doc = json.loads(contents["manifest.json"])
    broken = [
        b"{not json",
        b'{"format": "pxgl-cartridge", "format": "pxgl-cartridge"}',
        json.dumps(doc | {"members": {"weights.pxi": 1}}).encode(),
        json.dumps({k: v for k, v in doc.items() if k != "executor"}).encode(),
        json.dumps(doc | {"formats": doc["formats"] | {"weights": "0"}}).encode(),
        json.dumps(doc | {"version": 0.0}).encode(),
    ]
    write_contents(path, contents | {"manifest.json": broken[int(rng.integers(len(broken)))]})


def meta_repeats_a_key(path, contents, rng):
    """A meta whose plain JSON reading is valid (the last value wins), but that repeats a key (§8.1)."""
    meta = json.loads(contents["weights.meta.json"])
    key = str(rng.choice(sorted(meta)))
    repeated = b"{" + json.dumps({key: meta[key]})[1:-1].encode() + b", " + contents["weights.meta.json"].lstrip()[1:]
    write_contents(path, relisted(contents | {"weights.meta.json": repeated}))


def wider(spec):
    """The spec with twice the embedding width: its compiled program reads past the real model's tensors."""
    return replace(spec, architecture=replace(spec.architecture, embed_dim=spec.embed_dim * 2))


def program_rejected(path, contents, rng):
    """A program.pxi that decodes as an image but that the pxVM validator refuses for this model."""
    spec = spec_from_meta(json.loads(contents["weights.meta.json"]))
    compiled = compiled_instructions(spec)
    faults = [
        lambda: compile_program(wider(spec)),  # reads past its tensors
        lambda: encode_program(scratch_layout(spec).size, [i for i in compiled if i.op.name != "STORE_PIXEL"]),
        lambda: rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),  # no magic pixel: not a program at all
    ]
    program = faults[int(rng.integers(len(faults)))]()
    write_contents(path, relisted(contents | {"program.pxi": encode_rgb(program)}))


def newer_format(path, contents, rng):
    """A manifest from a future pxgl: a newer cartridge, weights or pxVM format than this engine reads."""
    doc = json.loads(contents["manifest.json"])
    newer = [
        doc | {"version": int(rng.integers(3, 1000))},
        doc | {"formats": doc["formats"] | {"weights": int(rng.integers(3, 1000))}},
        doc | {"formats": doc["formats"] | {"pxvm": int(rng.integers(1, 1000))}},
    ]
    write_contents(path, contents | {"manifest.json": json.dumps(newer[int(rng.integers(len(newer)))]).encode()})


def not_a_zip(path, contents, rng):
    path.write_bytes(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes())


def too_many_members(path, contents, rng):
    extra = {f"shaders/extra{i}.comp": b"x" for i in range(MAX_MEMBERS)}
    write_contents(path, relisted(contents | extra))


def encrypted(path, contents, rng):
    write_contents(path, contents)
    patch_entry(path, pick(rng, contents), "flags", 0x1)


def archive_comment(path, contents, rng):
    write_contents(path, contents)
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = b"hello"


def inflates_past_its_size(path, contents, rng):
    """The zip says a member holds 16 bytes, but its data inflates to 64 MiB: a reader that believed the
    data instead of the directory would inflate it all."""
    declared = 16
    doc = json.loads(contents["manifest.json"])
    doc["members"].append(
        {"name": "shaders/bomb.comp", "size": declared, "sha256": hashlib.sha256(bytes(declared)).hexdigest()}
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(doc))
        for name, data in contents.items():
            if name != "manifest.json":
                archive.writestr(name, data)
        write_streamed(archive, "shaders/bomb.comp", bytes(MIB), int(rng.integers(16, 64)))
    patch_entry(path, "shaders/bomb.comp", "file_size", declared)


def name_not_utf8(path, contents, rng):
    """A member name flagged UTF-8 whose bytes are not."""
    write_contents(path, contents | {"shaders/café.comp": b"x"})
    data = path.read_bytes()
    assert data.count("café".encode()) == 2, "the name must appear in the local and the central header only"
    path.write_bytes(data.replace("café".encode(), b"caf\xff\xfe"))


def empty_name(path, contents, rng):
    """A member whose name is empty (zipfile's own ZipInfo.is_dir indexes its last character)."""
    write_contents(path, contents)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo(""), b"x")


HOSTILE = {
    "dot_dot": (dot_dot, r"climbs out of the archive with '\.\.'"),
    "absolute": (absolute, "is an absolute path"),
    "symlink": (symlink, "is a symbolic link"),
    "duplicate": (duplicate, "appears more than once in the zip"),
    "unlisted": (unlisted, "is not listed in manifest.json"),
    "missing": (missing, "manifest.json lists '.+' but the zip has no such member"),
    "size_mismatch": (size_mismatch, r"is \d+ bytes but manifest.json says \d+"),
    "sha256_mismatch": (sha256_mismatch, "fails its sha256 check"),
    "bomb_by_ratio": (bomb_by_ratio, f"inflates \\d+:1 .*past the limit of {MAX_RATIO}:1"),
    "bomb_by_total": (bomb_by_total, f"members total \\d+ bytes uncompressed, past the limit of {MAX_TOTAL_BYTES}"),
    "malformed_manifest": (malformed_manifest, "manifest.json: "),
    "meta_repeats_a_key": (meta_repeats_a_key, r"weights\.meta\.json: key '\w+' appears twice in one object"),
    "program_rejected": (program_rejected, r":program\.pxi: "),
    "newer_format": (newer_format, "this pxgl reads cartridge 0 to 2, weights 0 to 2, pxvm 0 to 1"),
    "not_a_zip": (not_a_zip, "not a zip archive"),
    "too_many_members": (too_many_members, f"members, past the limit of {MAX_MEMBERS}"),
    "encrypted": (encrypted, "is encrypted"),
    "archive_comment": (archive_comment, "archive comment"),
    "name_not_utf8": (name_not_utf8, r"not a readable zip archive \('utf-8' codec"),
    "empty_name": (empty_name, "a member has an empty name"),
    "inflates_past_its_size": (inflates_past_its_size, r"'shaders/bomb.comp' is corrupt \(Bad CRC-32"),
}


@pytest.fixture
def no_gpu(monkeypatch):
    """Fail the test if anything creates a GL context."""

    def refuse(*args, **kwargs):
        raise AssertionError("a GL context was created for a cartridge that must be rejected before GPU work")

    monkeypatch.setattr(GLBackend, "__init__", refuse)


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_cartridge_is_rejected_before_gpu_work_with_nothing_written(
    kind, valid, tmp_path, rng, seed, monkeypatch, capsys, no_gpu
):
    build, message = HOSTILE[kind]
    work = tmp_path / "work"
    work.mkdir()
    cart = work / "hostile.pxa"
    build(cart, valid[1], rng)
    write_rgb(work / "tokens.pxi", encode_tokens([[1, 2, 3]], 256))
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)

    with pytest.raises(PxglError, match=message) as error:
        load_model(cart)
    assert "\n" not in str(error.value)
    commands = [
        ["run", "--model", "hostile.pxa", "--input", "tokens.pxi", "--out", "out.pxi"],
        ["ask", "-m", "hostile.pxa", "abc", "--out", "ask.pxi"],
        ["infer", "abc", "--model", "hostile.pxa", "--out", "infer.pxi"],
        ["pack", "-m", "hostile.pxa", "--out", "repacked.pxa"],
        ["inspect", "hostile.pxa"],
    ]
    for args in commands:
        code, out, err = pxgl(monkeypatch, capsys, *args)
        assert code == 2, f"pxgl {' '.join(args)} exited {code} (seed {seed}): {out}{err}"
        assert re.search(message, err), f"pxgl {args[0]}: {err!r} (seed {seed})"
        assert err.startswith("error: ") and err.count("\n") == 1, f"not one line: {err!r}"
    assert snapshot(tmp_path) == before, f"something was written (seed {seed})"


def test_each_class_has_its_own_message():
    messages = [message for _, message in HOSTILE.values()]
    assert len(set(messages)) == len(messages)


def test_a_member_is_never_inflated_past_its_declared_size(valid, tmp_path, rng):
    cart = tmp_path / "liar.pxa"
    inflates_past_its_size(cart, valid[1], rng)
    tracemalloc.start()
    try:
        with pytest.raises(PxglError, match="corrupt"):
            open_cartridge(cart)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB, f"opening it allocated {peak} bytes: the member was inflated past its 16 bytes"


# --- malformed manifests, generated ---------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def not_count(minimum: int):
    """JSON values that are not an integer ≥ minimum (booleans are not integers here)."""
    return JSON.filter(lambda v: not (type(v) is int and v >= minimum))


def broken_value(key: str, doc: dict):
    """Values of a top-level manifest key that the spec forbids."""
    name = doc["members"][0]["name"]
    return {
        "format": JSON.filter(lambda v: v != FORMAT),
        "version": JSON.filter(lambda v: not (type(v) is int and v == 1)),
        "name": st.one_of(
            JSON.filter(lambda v: not isinstance(v, str)),
            st.just(""),
            st.text(min_size=MAX_NAME + 1, max_size=MAX_NAME + 20),
            st.text(max_size=5).map(lambda t: t + "\n"),
        ),
        "formats": st.one_of(
            JSON.filter(lambda v: not isinstance(v, dict)),
            st.sampled_from(FORMAT_KEYS).flatmap(lambda k: not_count(0).map(lambda v: doc["formats"] | {k: v})),
            st.sampled_from(FORMAT_KEYS).map(lambda k: {m: v for m, v in doc["formats"].items() if m != k}),
            st.sampled_from(FORMAT_KEYS).flatmap(
                lambda k: st.integers(1, 10**6).map(lambda v: doc["formats"] | {k: doc["formats"][k] + v})
            ),
        ),
        "about": JSON.filter(lambda v: not isinstance(v, dict)),
        "executor": JSON.filter(lambda v: not (isinstance(v, str) and EXECUTOR_NAME.fullmatch(v))),
        "members": st.one_of(
            JSON.filter(lambda v: not isinstance(v, list)),
            JSON.map(lambda v: [v, *doc["members"][1:]]),
            st.sampled_from(["name", "size", "sha256"]).flatmap(
                lambda f: not_count(0).map(lambda v: [doc["members"][0] | {f: v}, *doc["members"][1:]])
            ),
            st.just([*doc["members"], doc["members"][0]]),
            st.just([{"name": "notes.txt", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}, *doc["members"]]),
            st.just([m for m in doc["members"] if m["name"] != name]),
        ),
    }[key]


@st.composite
def broken_manifests(draw, doc: dict) -> bytes:
    how = draw(st.sampled_from(["value", "drop", "duplicate key", "bytes", "nesting"]))
    if how == "value":
        key = draw(st.sampled_from(sorted(doc)))
        return json.dumps(doc | {key: draw(broken_value(key, doc))}).encode()
    if how == "drop":
        key = draw(st.sampled_from(sorted(set(doc) - {"about"})))  # about is optional
        return json.dumps({k: v for k, v in doc.items() if k != key}).encode()
    if how == "duplicate key":
        key = draw(st.sampled_from(sorted(doc)))
        return (
            b"{"
            + json.dumps(key).encode()
            + b": "
            + json.dumps(doc[key]).encode()
            + b", "
            + json.dumps(doc)[1:].encode()
        )
    if how == "nesting":
        return b"[" * draw(st.integers(1000, 100_000))
    return draw(st.binary(max_size=64))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_manifests_are_rejected_naming_the_manifest(valid, tmp_path, data):
    _, contents = valid
    doc = json.loads(contents["manifest.json"])
    manifest = data.draw(broken_manifests(doc))
    cart = tmp_path / "broken.pxa"
    write_contents(cart, contents | {"manifest.json": manifest})
    with pytest.raises(PxglError, match=r"manifest\.json") as error:
        open_cartridge(cart)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_archives_are_rejected_or_read_back_identical(valid, tmp_path, data):
    """Flip or cut bytes anywhere in a valid cartridge: opening it either fails with a PxglError or, the
    members being hash-checked, gives exactly the original model."""
    cart, _ = valid
    raw = bytearray(cart.read_bytes())
    for position, mask in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=4)):
        raw[position] ^= mask
    raw = raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    corrupted = tmp_path / "corrupted.pxa"
    corrupted.write_bytes(bytes(raw))
    try:
        opened = open_cartridge(corrupted)
    except PxglError as error:
        assert "\n" not in str(error)
        return
    original = open_cartridge(cart)
    assert opened.spec == original.spec and np.array_equal(opened.weights, original.weights)
    assert opened.tokenizer.merges == original.tokenizer.merges
    assert opened.manifest.members == original.manifest.members
    assert opened.shaders == original.shaders


def test_a_zip_feature_pxgl_does_not_read_is_one_line(valid, tmp_path, rng, seed):
    """A central directory entry asking for a later zip version (zipfile raises NotImplementedError)."""
    path, _ = valid
    data = bytearray(path.read_bytes())
    entries = [m.start() for m in re.finditer(rb"PK\x01\x02", data)]
    at = entries[int(rng.integers(0, len(entries)))] + 6  # "version needed to extract"
    data[at : at + 2] = (64).to_bytes(2, "little")  # 6.4: strong encryption
    bad = tmp_path / "later.pxa"
    bad.write_bytes(bytes(data))
    with pytest.raises(PxglError, match=r"later\.pxa: uses a zip feature pxgl does not read"):
        open_cartridge(bad)


@pytest.mark.parametrize("executor", ["0", "turbo"])
def test_a_manifest_naming_an_executor_this_pxgl_lacks_is_refused_on_open(valid, tmp_path, executor):
    """FORMATS §8.3 step 7, at open: not first when a command would run it."""
    _, contents = valid
    manifest = json.loads(contents["manifest.json"]) | {"executor": executor}
    path = tmp_path / "other.pxa"
    write_contents(path, contents | {"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(PxglError, match=f"unknown executor '{executor}'; this pxgl has auto, passes"):
        open_cartridge(path)
