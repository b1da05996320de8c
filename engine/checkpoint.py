"""Training checkpoints' container (docs/FORMATS.md §15): a `.npz` file, i.e. a ZIP of stored (not compressed)
`.npy` arrays, whose first member `manifest.json` describes the run and every array with its dtype, shape and
sha256. Written atomically (§0.3); read as untrusted input: every member's size is checked against what the
manifest declares before any of its bytes is read, and every array's hash is checked."""

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .outputs import atomic_write
from .reading import decode_utf8, open_regular, parse_json

FORMAT = "pxgl-train-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_CHECKPOINT_BYTES = 8 << 30
"""A model at the pixel file's cap (2^26 pixels, 3 weights each) takes four float32 copies (weights, Adam's
two moments, the best weights): 3 GiB; the rest is the text's positions."""
MAX_ARRAYS = 4096
DTYPES = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}


def write_checkpoint(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The manifest (format, version and `arrays` added) and the arrays, each as `NAME.npy`, atomically."""
    stored = {name: np.ascontiguousarray(array, DTYPES[str(array.dtype)]) for name, array in arrays.items()}
    described = {name: describe(array) for name, array in stored.items()}
    text = json.dumps({"format": FORMAT, "version": VERSION, **manifest, "arrays": described}, indent=1)

    def write(temporary: Path) -> None:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.writestr(MANIFEST, text)
            for name, array in stored.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    atomic_write(path, write)


def describe(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape), "sha256": hashlib.sha256(array.data).hexdigest()}


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(manifest, arrays) of a checkpoint, or one PxglError naming what is wrong with it."""
    with open_regular(path, "training checkpoint", MAX_CHECKPOINT_BYTES) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                return read_members(archive, f"{path}: checkpoint", os.fstat(handle.fileno()).st_size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
            raise PxglError(f"{path}: not a readable training checkpoint ({e}); it may be truncated") from None


def read_members(archive: zipfile.ZipFile, where: str, file_size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and the arrays of an archive of `file_size` bytes."""
    infos = archive.infolist()
    members = {info.filename: info for info in infos}
    if len(infos) > MAX_ARRAYS + 1 or len(members) != len(infos):
        raise PxglError(f"{where}: {len(infos)} members, or a name repeated; not a checkpoint pxgl wrote")
    compressed = next((info.filename for info in infos if info.compress_type != zipfile.ZIP_STORED), None)
    if compressed is not None:
        raise PxglError(f"{where}: member {compressed} is compressed; a checkpoint's members are stored")
    for info in infos:  # the zip's directory is as untrusted as the rest: its sizes bound what is allocated
        if info.file_size != info.compress_size or info.header_offset + info.compress_size > file_size:
            name = f"array {info.filename.removesuffix('.npy')}" if info.filename != MANIFEST else MANIFEST
            raise PxglError(f"{where}: {name}: its member claims {info.file_size} bytes; the file holds {file_size}")
    if MANIFEST not in members or members[MANIFEST].file_size > MAX_MANIFEST_BYTES:
        raise PxglError(f"{where}: no {MANIFEST} of at most {MAX_MANIFEST_BYTES} bytes")
    manifest = parse_json(decode_utf8(archive.read(MANIFEST), f"{where}: {MANIFEST}"), f"{where}: {MANIFEST}")
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
        raise PxglError(f"{where}: not a {FORMAT} version {VERSION} manifest")
    declared = manifest.get("arrays")
    if not isinstance(declared, dict) or set(members) != {MANIFEST, *(f"{name}.npy" for name in declared)}:
        raise PxglError(f"{where}: its members are not the arrays its manifest lists")
    arrays = {name: read_array(archive, members[f"{name}.npy"], entry, f"{where}: array {name}")
              for name, entry in declared.items()}  # fmt: skip
    return manifest, arrays


def read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, entry: Any, where: str) -> np.ndarray:
    """One member, after its declared dtype and shape, its .npy header and its size all agree."""
    if not (
        isinstance(entry, dict)
        and entry.get("dtype") in DTYPES
        and isinstance(entry.get("shape"), list)
        and len(entry["shape"]) <= 4
        and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 40 for n in entry["shape"])
        and isinstance(entry.get("sha256"), str)
    ):
        raise PxglError(f"{where}: its entry must give a dtype (float32, int64), a shape and a sha256")
    dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
    size = math.prod(shape) * dtype.itemsize
    if size > info.file_size:
        raise PxglError(f"{where}: declares {size} bytes; its member holds {info.file_size}")
    with archive.open(info) as member:
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        read_header = readers.get(np.lib.format.read_magic(member))
        if read_header is None:
            raise PxglError(f"{where}: not a .npy array of format 1.0 or 2.0")
        header = read_header(member)
        if header != (shape, False, dtype) or member.tell() + size != info.file_size:
            raise PxglError(f"{where}: its .npy header or size is not the manifest's {entry['dtype']} {list(shape)}")
        data = bytearray(size)
        if member.readinto(data) != size:
            raise PxglError(f"{where}: truncated")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise PxglError(f"{where}: its bytes do not match their sha256; the checkpoint is corrupt")
    return np.frombuffer(data, dtype).reshape(shape)
