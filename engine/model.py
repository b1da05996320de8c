"""A model in memory: the weight pixels exactly as stored, the spec from the meta beside them, and where its
tokenizer comes from; a model opened from a cartridge also keeps the cartridge. engine/loading.py is the
front door that opens one by name or path."""

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PxglError
from .outputs import write_files
from .pxi import bytes_to_pixels, encode_rgb, read_rgb
from .reading import MAX_PIXEL_FILE_BYTES, TEXT_CAPS, read_bounded
from .spec import ModelSpec, meta_path_for, read_meta_document, spec_from_meta
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # engine/cartridge.py (zipfile, the archive's checks) loads only to open a cartridge: ~5 ms
    from .cartridge import Cartridge

WEIGHTS_SUFFIX = ".pxi"
WRITTEN = "files"
"""The meta key recording the files written with it (FORMATS §2.3)."""


@dataclass(frozen=True)
class Model:
    spec: ModelSpec
    weights: np.ndarray
    """The weight image, (height, width, 3) uint8, exactly as stored."""
    source: str
    tokenizer_path: Path | None = None
    """The tokenizer beside a weights .pxi (read when first needed); None for a cartridge, which holds it."""
    cartridge: "Cartridge | None" = None
    """The cartridge the model came from (manifest, tokenizer, program), if any."""
    written: dict[str, Any] = field(default_factory=dict)
    """The meta's `files` record: the size and sha256 of the weights and tokenizer written with it."""

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The quantized bytes of one tensor, shaped as the meta says."""
        t = self.spec.tensors[name]
        return self.weights.reshape(-1)[t.offset : t.offset + t.size].reshape(t.shape)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, checked against its vocabulary (text commands only: pixels in, pixels out
        never reads it)."""
        if self.cartridge is not None:
            return self.cartridge.tokenizer
        assert self.tokenizer_path is not None
        check_written(self.tokenizer_path, self.written, "tokenizer")
        tokenizer = Tokenizer.load(self.tokenizer_path)
        self.spec.check_vocabulary(tokenizer.vocab_size, str(self.tokenizer_path))
        return tokenizer


def read_weights(path: Path) -> Model:
    """`name.pxi` and `name.meta.json` beside it, checked against each other."""
    if path.suffix != WEIGHTS_SUFFIX:
        raise PxglError(f"{path}: weights are a {WEIGHTS_SUFFIX} file with its .meta.json beside it")
    meta = meta_path_for(path)
    document = read_meta_document(meta)
    spec = spec_from_meta(document, str(meta))
    written = document.get(WRITTEN, {})
    recorded = isinstance(written, dict) and "weights" in written and set(written) <= WRITTEN_LIMITS.keys()
    if WRITTEN in document and not recorded:
        raise PxglError(f"{meta}: {WRITTEN!r} must be an object recording the weights (and the tokenizer), §2.3")
    check_written(path, written, "weights")
    weights = read_rgb(path, expect=(spec.image_width, spec.image_height))  # the meta's size, before decoding
    spec.check_image(weights, str(path))
    return Model(spec, weights, str(path), tokenizer_path=path.with_name(spec.tokenizer), written=written)


def file_record(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


WRITTEN_LIMITS = {
    "weights": ("weights file", MAX_PIXEL_FILE_BYTES),
    "tokenizer": ("tokenizer file", TEXT_CAPS["tokenizer file"]),
}
"""Each recorded role: how messages name it and the size cap it is read under (§0.1)."""


def check_written(path: Path, written: dict[str, Any], role: str) -> None:
    """Refuse a file that is not the one its meta was written with (a write cut short between renames, or
    a file replaced by hand): FORMATS §2.3. Read through the bounded opener like every file (§0.1)."""
    if role not in written:
        return
    record = written[role]
    if not (
        isinstance(record, dict)
        and set(record) == {"bytes", "sha256"}
        and isinstance(record["bytes"], int)
        and not isinstance(record["bytes"], bool)
        and isinstance(record["sha256"], str)
    ):
        raise PxglError(f"{path}: its meta's '{WRITTEN}' record of the {role} must be {{bytes, sha256}}")
    what, limit = WRITTEN_LIMITS[role]
    if file_record(read_bounded(path, what, limit)) != record:
        raise PxglError(
            f"{path}: not the {role} file its meta was written with (an interrupted write, or a file replaced "
            "since): write the model again"
        )


def from_cartridge(cartridge: "Cartridge") -> Model:
    return Model(cartridge.spec, cartridge.weights, str(cartridge.path), cartridge=cartridge)


def save_model(path: str | Path, spec: ModelSpec, weight_bytes: bytes, tokenizer: Tokenizer | None = None) -> None:
    """Write the weight image, the tokenizer (if given) and the meta as one set (docs/FORMATS.md §2.3): the
    meta, renamed into place last, records the others' size and sha256."""
    path = Path(path)
    spec_from_meta(spec.to_meta(), str(meta_path_for(path)))  # never write a model no reader accepts
    if len(weight_bytes) > spec.image_bytes:
        raise ValueError("weight bytes do not fit the spec's image")
    contents = {path: encode_rgb(bytes_to_pixels(weight_bytes, spec.image_width, spec.image_height))}
    written = {"weights": file_record(contents[path])}
    if tokenizer is not None:
        tokenizer_path = path.with_name(spec.tokenizer)
        contents[tokenizer_path] = (json.dumps(tokenizer.to_json(), separators=(",", ":")) + "\n").encode()
        written["tokenizer"] = file_record(contents[tokenizer_path])
    meta = spec.to_meta() | {WRITTEN: written}
    contents[meta_path_for(path)] = (json.dumps(meta, indent=2) + "\n").encode()
    write_files({target: lambda tmp, data=data: tmp.write_bytes(data) for target, data in contents.items()})
