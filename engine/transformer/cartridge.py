"""Version-2 cartridges (docs/FORMATS.md §8.5): a transformer's weight images, meta and tokenizer in one .pxa,
checked as every cartridge is (engine/cartridge.py: end record, entries, manifest, listing) and read a member
at a time into the model's one weight byte stream; and the members `pxgl pack` writes for one."""

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cartridge import (
    META,
    TOKENIZER,
    TRANSFORMER_VERSION,
    WEIGHTS,
    Manifest,
    open_archive,
    read_member,
)
from ..errors import PxglError
from ..pxi import decode_rgb_into, encode_rgb
from ..reading import MAX_PIXEL_FILE_BYTES, TEXT_CAPS, decode_utf8, parse_json
from ..tokenizer import Tokenizer
from .files import check_finite, image_paths, weight_stream
from .meta import TransformerSpec, architecture_record, transformer_spec_from_meta


@dataclass(frozen=True)
class TransformerCartridge:
    path: Path
    manifest: Manifest
    spec: TransformerSpec
    stream: np.ndarray
    """The weight byte stream (§14.7), as read_transformer gives it."""
    tokenizer: Tokenizer | None


def image_members(count: int) -> list[str]:
    """`weights.pxi`, then `weights.k.pxi` for image k ≥ 1 (§8.5, as §14.7 names the files)."""
    return [path.name for path in image_paths(Path(WEIGHTS), count)]


def open_transformer_cartridge(path: str | Path) -> TransformerCartridge:
    """Check and read a version-2 .pxa without extracting it (§8.3, §8.5): the meta first, then each image
    member read, its sha256 checked and decoded into the stream one at a time, then the tokenizer. Every
    problem is one PxglError naming the archive and the member."""
    path = Path(path)
    with open_archive(path) as (archive, entries, manifest):
        if manifest.version != TRANSFORMER_VERSION:
            raise PxglError(f"{path}: a version-{manifest.version} cartridge, of a version 0 or 1 model")
        listed = {m.name: m for m in manifest.members}

        def member(name: str, limit: int) -> bytes:
            if listed[name].size > limit:
                raise PxglError(f"{path}: member {name!r} is {listed[name].size} bytes, past its limit of {limit}")
            return read_member(archive, entries[name], listed[name], path)

        where = f"{path}:{META}"
        document = parse_json(decode_utf8(member(META, TEXT_CAPS["meta file"]), f"{where}: not UTF-8 text"), where)
        spec = transformer_spec_from_meta(document, where)
        if spec.tokenizer != (TOKENIZER if TOKENIZER in listed else None):
            raise PxglError(
                f"{where}: names tokenizer {spec.tokenizer!r}; in a version-2 cartridge it is {TOKENIZER!r} when "
                f"the cartridge carries {TOKENIZER}, else none"
            )
        names = image_members(len(spec.images))
        extra = sorted(set(listed) - {*names, META, TOKENIZER})
        missing = [name for name in names if name not in listed]
        if extra or missing:
            raise PxglError(
                f"{path}: its meta has {len(spec.images)} image(s), {', '.join(names)}; the cartridge lacks "
                f"{missing or 'none'} and has {extra or 'no other'}"
            )
        stream = weight_stream(spec, where)
        start = 0
        for name, size, expect in zip(names, spec.image_bytes, spec.images, strict=True):
            decode_rgb_into(member(name, MAX_PIXEL_FILE_BYTES), f"{path}:{name}", stream[start : start + size], expect)
            start += size
        check_finite(spec, stream, str(path))
        tokenizer = None
        if TOKENIZER in listed:
            text = decode_utf8(member(TOKENIZER, TEXT_CAPS["tokenizer file"]), f"{path}:{TOKENIZER}: not UTF-8 text")
            tokenizer = Tokenizer.loads(text, f"{path}:{TOKENIZER}")
            if tokenizer.vocab_size != spec.architecture.vocab_size:
                raise PxglError(
                    f"{path}:{TOKENIZER}: {tokenizer.vocab_size} tokens; the model's vocabulary is "
                    f"{spec.architecture.vocab_size}"
                )
    return TransformerCartridge(path, manifest, spec, stream, tokenizer)


def transformer_members(spec: TransformerSpec, stream: np.ndarray, tokenizer: Tokenizer | None) -> dict[str, bytes]:
    """Every member but the manifest, in the order `pxgl pack` writes them: the images (each encoded as
    save_transformer encodes it), the meta (its tokenizer `tokenizer.json` or none; no `files`: the
    manifest's hashes record the members), the tokenizer."""
    from ..pxi import bytes_to_pixels

    contents, start = {}, 0
    for name, (width, height), size in zip(image_members(len(spec.images)), spec.images, spec.image_bytes, strict=True):
        contents[name] = encode_rgb(bytes_to_pixels(stream[start : start + size], width, height))
        start += size
    meta = replace(spec, tokenizer=None if tokenizer is None else TOKENIZER).to_meta()
    contents[META] = (json.dumps(meta, indent=2) + "\n").encode()
    if tokenizer is not None:
        contents[TOKENIZER] = (json.dumps(tokenizer.to_json(), separators=(",", ":")) + "\n").encode()
    return contents


def describe_transformer_cartridge(path: Path, sha256: str) -> dict[str, Any]:
    """What `pxgl inspect` shows of a version-2 cartridge, opened and checked whole (§8.3, §8.5)."""
    cart = open_transformer_cartridge(path)
    manifest, a = cart.manifest, cart.spec.architecture
    quants = Counter(t.quant for t in cart.spec.tensors.values())
    record: dict[str, Any] = {
        "file": str(path),
        "sha256": sha256,
        "kind": "cartridge",
        "format": f"pxgl-cartridge version {manifest.version} (weights {manifest.formats['weights']})",
        "name": manifest.name,
        "model": architecture_record(a),
        "quantization": ", ".join(f"{quant} {count} tensors" for quant, count in sorted(quants.items())),
        "images": [f"{width}x{height}" for width, height in cart.spec.images],
        "tokenizer": "tokenizer.json" if cart.tokenizer is not None else "none: token pixels in and out",
        "executor": manifest.executor,
        "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in manifest.members],
    }
    if manifest.about is not None:
        record["about"] = manifest.about
    return record | {"verdict": "valid: runs"}
