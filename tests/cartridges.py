"""Cartridges for tests: random models packed with `pxgl pack`'s code, and a zip writer that lets a test
build whatever archive it wants (hostile ones included). Reading a cartridge back here uses zipfile and
json directly, never engine.cartridge, so tests check the engine against the spec, not against itself."""

import hashlib
import json
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pxgl import cli
from pxgl.model import Model
from pxgl.pack import pack
from pxgl.tokenizer import Tokenizer

from tests.models import random_model

LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def random_text(rng: np.random.Generator, words: int = 6000) -> str:
    """Words of random letters: enough distinct pairs for a BPE tokenizer of a few hundred tokens."""
    return " ".join("".join(rng.choice(LETTERS, int(rng.integers(1, 9)))) for _ in range(words))


def random_cartridge(
    directory: Path,
    rng: np.random.Generator,
    vocab: int = 512,
    embed: int = 64,
    hidden: int = 96,
    window: int = 8,
    executor: str = "passes",
    name: str = "random",
) -> tuple[Path, Model]:
    """A random model with a trained tokenizer beside it, packed into `name.pxa`; returns (cartridge, model)."""
    model = random_model(directory, rng, vocab, embed, hidden, window, name)
    Tokenizer.train(random_text(rng), vocab).save(model.tokenizer_path)
    cart = directory / f"{name}.pxa"
    pack(model.source, cart, executor)
    return cart, model


def read_members(cart: Path) -> dict[str, bytes]:
    """Every member of a zip, in order, manifest included."""
    with zipfile.ZipFile(cart) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def listing(contents: dict[str, bytes], base_manifest: bytes) -> bytes:
    """manifest.json for `contents` (the manifest itself excluded): the base manifest's fields, with a member
    list giving each member's true size and sha256."""
    doc = json.loads(base_manifest)
    doc["members"] = [
        {"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in contents.items()
        if n != "manifest.json"
    ]
    return json.dumps(doc, indent=2).encode()


def relisted(contents: dict[str, bytes]) -> dict[str, bytes]:
    """The contents with manifest.json rewritten to list exactly them, truthfully."""
    return {"manifest.json": listing(contents, contents["manifest.json"])} | {
        n: d for n, d in contents.items() if n != "manifest.json"
    }


def entry(name: str, compress: int = zipfile.ZIP_DEFLATED, mode: int = 0o100644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = compress
    return info


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> None:
    """Write exactly these entries, duplicates and odd names included (zipfile only warns about them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)


def write_contents(path: Path, contents: dict[str, bytes]) -> None:
    write_zip(path, list(contents.items()))


def write_streamed(archive: zipfile.ZipFile, name: str, chunk: bytes, repeats: int) -> tuple[int, str]:
    """Deflate `repeats` copies of `chunk` into one member without holding it in memory; returns (size, sha256)."""
    digest = hashlib.sha256()
    with archive.open(entry(name), "w") as member:
        for _ in range(repeats):
            member.write(chunk)
            digest.update(chunk)
    return len(chunk) * repeats, digest.hexdigest()


CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
FIELDS = {"flags": ("<H", 6, 8), "file_size": ("<L", 22, 24)}
"""Header fields a test may forge: (struct format, offset in the local header, offset in the central one)."""


def patch_entry(path: Path, name: str, field: str, value: int) -> None:
    """Rewrite one field of a member's local header and central directory entry (forging a zip)."""
    fmt, local_offset, central_offset = FIELDS[field]
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        directory_offset = archive.start_dir
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, info.header_offset + local_offset, value)
    offset = directory_offset
    while data[offset : offset + 4] == b"PK\x01\x02":
        fields = CENTRAL_HEADER.unpack_from(data, offset)
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        if data[offset + CENTRAL_HEADER.size : offset + CENTRAL_HEADER.size + name_len].decode() == name:
            struct.pack_into(fmt, data, offset + central_offset, value)
        offset += CENTRAL_HEADER.size + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))


def snapshot(*directories: Path) -> dict[str, tuple[int, int]]:
    """Every file under the directories with its size and modification time (to prove nothing was written)."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for d in directories
        for p in sorted(d.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def pxgl(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the CLI's real entry point in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["pxgl", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
