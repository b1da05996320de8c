"""`pxgl import` / `pxgl export` (docs/FORMATS.md §10): float tensors in safetensors or npz files ↔ pixel models.

A safetensors file is untrusted: its header is read and checked here, with bounds, before the safetensors
library parses the file; an npz is read by pxgl's own bounded reader (npz.py), which checks its members
against the architecture's tensors before inflating any. Quantization is the trainer's rule, so an
exported model imports back to the same pixels."""

import io
import itertools
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .extras import install_command
from .npz import read_npz
from .progress import report
from .pxi import atomic_write, parse_json
from .reading import open_regular
from .spec import Architecture, ModelSpec, architecture_from_meta, is_float32_scale, layout
from .tokenizer import Tokenizer
from .train import dequantize, quantize

MAX_FILE_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 20
DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
FORMAT = "pixellm 1"
GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Imported:
    spec: ModelSpec
    weight_bytes: bytes
    tokenizer: Tokenizer
    errors: dict[str, tuple[float, float]]
    """Tensor → (largest, RMS) quantization error."""


READ_PIECE = 64 << 20
"""Bytes of a tensor file read at a time: progress moves while a file of up to 1 GiB is read."""


def read_tensor_file(path: Path) -> bytes:
    """The file's bytes (at most MAX_FILE_BYTES), read a piece at a time with progress."""
    try:
        with open_regular(path, "tensor file", MAX_FILE_BYTES) as handle:
            size = os.fstat(handle.fileno()).st_size
            data = bytearray()
            while piece := handle.read(min(READ_PIECE, MAX_FILE_BYTES + 1 - len(data))):
                data += piece
                report("reading the tensor file", min(len(data), size), max(size, 1))
                if len(data) > MAX_FILE_BYTES:
                    raise PxglError(f"{path}: past the tensor file's limit of {MAX_FILE_BYTES} bytes")
    except OSError as e:
        raise PxglError(f"{path}: cannot read the tensor file ({e.strerror or e})") from None
    return bytes(data)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def safetensors_header(
    data: bytes, where: str, size: int | None = None, dtypes: dict[str, type] = DTYPES
) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensor entries, metadata) of a safetensors file, every field checked (FORMATS §10). `data` is the file,
    or (given its `size`) at least its first 8 + MAX_HEADER_BYTES bytes; `dtypes` the element types taken."""
    size = len(data) if size is None else size
    if size < 8:
        raise PxglError(f"{where}: {size} bytes: too short for a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES:
        raise PxglError(f"{where}: a {length:,}-byte header, past the limit of {MAX_HEADER_BYTES:,}")
    if 8 + length > size:
        raise PxglError(f"{where}: the header's {length:,} bytes run past the end of the file")
    try:
        text = data[8 : 8 + length].decode("utf-8")
    except UnicodeDecodeError as e:
        raise PxglError(f"{where}: the header is not UTF-8 ({e.reason})") from None
    header = parse_json(text, f"{where}: header")
    if not isinstance(header, dict):
        raise PxglError(f"{where}: the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise PxglError(f"{where}: __metadata__ must map names to strings")
    body = size - 8 - length
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise PxglError(f"{where}: tensor {name!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in dtypes:
            raise PxglError(f"{where}: tensor {name!r} is {dtype!r}; pxgl imports {', '.join(dtypes)}")
        if not isinstance(shape, list) or not all(is_count(s) for s in shape):
            raise PxglError(f"{where}: tensor {name!r} has shape {shape!r}, not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_count(o) for o in offsets)):
            raise PxglError(f"{where}: tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= body:
            raise PxglError(f"{where}: tensor {name!r} spans bytes {begin}..{end}, outside the {body:,} data bytes")
        if end - begin != math.prod(shape) * np.dtype(dtypes[dtype]).itemsize:
            raise PxglError(f"{where}: tensor {name!r} spans {end - begin} bytes, not its shape {shape}'s")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end, a), (begin, _, b) in itertools.pairwise(spans):
        if begin < end:
            raise PxglError(f"{where}: tensors {a!r} and {b!r} overlap")
    return header, metadata


def read_safetensors(data: bytes, where: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name → float array, metadata) of a safetensors file, its header checked before the library reads it."""
    _, metadata = safetensors_header(data, where)
    try:
        from safetensors.numpy import load
    except ImportError:
        raise PxglError(
            f"reading .safetensors needs the safetensors package: {install_command('safetensors')}"
        ) from None
    try:
        tensors = load(data)
    except Exception as e:  # the library raises its own error types; the header was checked already
        raise PxglError(f"{where}: not a readable safetensors file ({e})") from None
    return tensors, metadata


def read_model_tensors(
    path: Path, config_path: Path | None, renames: dict[str, str]
) -> tuple[dict[str, np.ndarray], dict[str, str], Architecture]:
    """(pxgl name → float array, metadata, architecture) of a .safetensors or .npz file: exactly the
    architecture's tensors, renamed. An .npz's members are checked against them before any is inflated."""
    where = str(path)
    if path.suffix not in (".safetensors", ".npz"):
        raise PxglError(
            f"{path}: pxgl imports a Hugging Face model folder, a .gguf file, or .safetensors or .npz files"
        )
    data = read_tensor_file(path)
    if path.suffix == ".npz":
        architecture = read_architecture(config_path, {}, where)
        return read_npz(data, where, architecture.shapes(), renames), {}, architecture
    tensors, metadata = read_safetensors(data, where)
    for old, new in renames.items():
        if old not in tensors:
            raise PxglError(f"{where}: --map {old}={new}: the file has no tensor {old!r}")
        tensors[new] = tensors.pop(old)
    architecture = read_architecture(config_path, metadata, where)
    shapes = architecture.shapes()
    if set(tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise PxglError(
            f"{where}: the architecture needs {missing or 'no more'}; the file also has {extra or 'nothing else'}"
            " (--map OLD=NEW renames)"
        )
    return tensors, metadata, architecture


def import_model(
    path: Path,
    tokenizer_path: Path | None,
    config_path: Path | None,
    renames: dict[str, str],
    out_name: str,
) -> Imported:
    """A model from a tensor file (FORMATS §10), quantized to pixels; nothing is written here."""
    where = str(path)
    tensors, metadata, architecture = read_model_tensors(path, config_path, renames)
    grids = known_grids(metadata, where)
    quantized, errors = {}, {}
    shapes = architecture.shapes()
    # progress in passes over a tensor's values (checked, quantized, measured): a pass over the largest
    # tensor pxgl takes (~95 M values) is about a second
    done, total = 0, 3 * sum(math.prod(shape) for shape in shapes.values())
    for name, shape in shapes.items():
        w = tensors[name]
        if w.dtype.kind != "f" or tuple(w.shape) != shape:
            raise PxglError(f"{where}: tensor {name!r} is {w.dtype} {list(w.shape)}, not float {list(shape)}")
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf, refused below
            w = w.astype(np.float32)
        if not np.isfinite(w).all():
            raise PxglError(
                f"{where}: tensor {name!r} holds NaN or infinite values, or values past float32's range "
                f"(±{np.finfo(np.float32).max:.4g})"
            )
        done += w.size
        report("quantizing weights", done, total)
        q = on_grid(w, grids.get(name)) or quantize(w)
        quantized[name] = q
        done += w.size
        report("quantizing weights", done, total)
        largest, squares = 0.0, 0.0
        for start in range(0, w.size, GRID_BLOCK):  # a block at a time: progress moves on the largest tensors
            block = slice(start, start + GRID_BLOCK)
            error = np.abs(dequantize(q[0].reshape(-1)[block], q[1], q[2]) - w.reshape(-1)[block]).astype(np.float64)
            largest, squares = max(largest, float(error.max(initial=0))), squares + float(np.dot(error, error))
            report("quantizing weights", done + min(start + GRID_BLOCK, w.size), total)
        errors[name] = (largest, float(np.sqrt(squares / w.size)) if w.size else 0.0)
        done += w.size
    tokenizer = read_tokenizer(tokenizer_path, metadata, where)
    grid = {name: (scale, zero_point) for name, (_, scale, zero_point) in quantized.items()}
    spec = layout(architecture, grid, out_name, {"imported_from": path.name})
    spec.check_vocabulary(tokenizer.vocab_size, "the tokenizer")
    return Imported(spec, b"".join(quantized[n][0].tobytes() for n in spec.tensors), tokenizer, errors)


def architecture_document(config_path: Path | None, metadata: dict[str, str], where: str) -> tuple[dict, str]:
    """The architecture object (--config, else the metadata's pxgl.architecture) and where it came from."""
    if config_path is not None:
        from .pxi import read_text

        document, source = parse_json(read_text(config_path, "architecture file"), str(config_path)), str(config_path)
    elif "pxgl.architecture" in metadata:
        document, source = parse_json(metadata["pxgl.architecture"], f"{where}: pxgl.architecture"), where
    else:
        raise PxglError(
            f"{where}: no architecture: give --config FILE.json (vocab_size, embed_dim, context, hidden, residual; "
            "a version-2 transformer's: docs/FORMATS.md §10)"
        )
    if not isinstance(document, dict):
        raise PxglError(f"{source}: the architecture must be a JSON object")
    return document, source


def read_architecture(config_path: Path | None, metadata: dict[str, str], where: str) -> Architecture:
    document, source = architecture_document(config_path, metadata, where)
    return architecture_from_meta(document | {"version": 1}, source)


def known_grids(metadata: dict[str, str], where: str) -> dict[str, tuple[float, int]]:
    """pxgl.quantization: tensor name → [scale, zero_point], each scale one float32 holds (> 0) and each
    zero point in 0..255, as a meta's (§2); anything else is refused naming the file."""
    if "pxgl.quantization" not in metadata:
        return {}
    at = f"{where}: pxgl.quantization"
    raw = parse_json(metadata["pxgl.quantization"], at)
    if not isinstance(raw, dict):
        raise PxglError(f"{at}: not a JSON object of tensor name → [scale, zero_point]")
    grids = {}
    for name, value in raw.items():
        valid = isinstance(value, list) and len(value) == 2 and isinstance(value[0], float)
        if not (valid and is_float32_scale(value[0]) and is_count(value[1]) and value[1] <= 255):
            raise PxglError(
                f"{at}: tensor {name[:60]!r}: {str(value)[:60]} is not [scale, zero_point] with a scale > 0 that "
                "float32 holds and a zero point in 0..255"
            )
        grids[name] = (value[0], value[1])
    return grids


GRID_BLOCK = 1 << 22
"""Values checked against their grid at a time: progress moves, and the float64 temporaries stay small."""


def on_grid(w: np.ndarray, grid: tuple[float, int] | None) -> tuple[np.ndarray, float, int] | None:
    """The given quantization, if every value lies on its grid (an exported pixel model's tensor)."""
    if grid is None:
        return None
    scale, zero_point = grid
    values, q = w.reshape(-1), np.empty(w.size, np.uint8)
    for start in range(0, values.size, GRID_BLOCK):
        steps = values[start : start + GRID_BLOCK].astype(np.float64) / np.float32(scale) + zero_point
        rounded = np.round(steps)
        if np.abs(steps - rounded).max() > GRID_TOLERANCE or rounded.min() < 0 or rounded.max() > 255:
            return None
        q[start : start + GRID_BLOCK] = rounded
        report("checking the grid", min(start + GRID_BLOCK, values.size), values.size)
    return q.reshape(w.shape), scale, zero_point


def read_tokenizer(path: Path | None, metadata: dict[str, str], where: str) -> Tokenizer:
    if path is not None:
        return Tokenizer.load(path)
    if "pxgl.tokenizer" in metadata:
        return Tokenizer.loads(metadata["pxgl.tokenizer"], f"{where}: pxgl.tokenizer")
    raise PxglError(f"{where}: no tokenizer: give --tokenizer FILE.json (docs/FORMATS.md §6)")


def export_tensors(
    spec: ModelSpec, weights: np.ndarray, tokenizer: Tokenizer
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor dequantized to float32, and the metadata that brings the model back (FORMATS §10)."""
    stream, tensors = weights.reshape(-1), {}
    done, total = 0, sum(t.size for t in spec.tensors.values())
    for name, t in spec.tensors.items():
        tensors[name] = dequantize(stream[t.offset : t.offset + t.size].reshape(t.shape), t.scale, t.zero_point)
        done += t.size
        report("converting tensors", done, total)
    architecture = spec.architecture.to_json()
    metadata = {
        "pxgl.format": FORMAT,
        "pxgl.architecture": json.dumps(architecture),
        "pxgl.quantization": json.dumps({name: [t.scale, t.zero_point] for name, t in spec.tensors.items()}),
        "pxgl.tokenizer": json.dumps(tokenizer.to_json(), separators=(",", ":")),
    }
    return tensors, metadata


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import save
        except ImportError:
            raise PxglError(
                f"writing .safetensors needs the safetensors package: {install_command('safetensors')}"
            ) from None
        data = save({n: np.ascontiguousarray(t) for n, t in tensors.items()}, metadata=metadata)
    elif path.suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **tensors)
        data = buffer.getvalue()
    else:
        raise PxglError(f"{path}: pxgl exports .safetensors or .npz files")
    atomic_write(path, lambda tmp: write_in_pieces(tmp, data))


WRITE_PIECE = 16 << 20
"""Bytes written between progress reports."""


def write_in_pieces(path: Path, data: bytes) -> None:
    view = memoryview(data)
    with open(path, "wb") as out:
        for start in range(0, len(view), WRITE_PIECE):
            out.write(view[start : start + WRITE_PIECE])
            report("writing", min(start + WRITE_PIECE, len(view)), len(view))
