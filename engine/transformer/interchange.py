"""`pxgl import` / `pxgl export` of version 2 (docs/FORMATS.md §10, §14): pxgl's own tensor names (§14.2) as float
tensors in .safetensors or .npz files ↔ a version-2 model, its matrices quantized as `--quant` says. A
safetensors file is read a tensor at a time once its header is checked, and written a tensor at a time, so
2 B float weights never sit in memory whole: only the model's byte stream and one tensor's floats."""

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import PxglError
from ..interchange import (
    DTYPES,
    MAX_HEADER_BYTES,
    on_grid,
    read_tensor_file,
    read_tokenizer,
    safetensors_header,
    write_in_pieces,
)
from ..model import WRITTEN, check_written
from ..npz import read_npz
from ..progress import report
from ..reading import open_regular, parse_json
from ..spec import _echo, _int, is_float32_scale, meta_path_for, read_meta_document
from ..tokenizer import Tokenizer
from .files import read_transformer, tensor_offsets, tensor_quants
from .meta import MATRIX_QUANTS, TOP_LEVEL, TransformerArchitecture, TransformerSpec, architecture_from_meta, few
from .quant import dequantize, tensor_nbytes

FORMAT = "pixellm 2"
MAX_SAFETENSORS_BYTES = 16 << 30
"""A version-2 .safetensors file (§0.1): 2 B float32 weights are 8 GB; it is read a tensor at a time."""
ARCHITECTURE_KEYS = TOP_LEVEL - {"format", "version", "tensors"}
QUANTS = ("q8", "q4", "u8", "f16")
TENSOR_DTYPES: dict[str, type] = DTYPES | {"BF16": np.uint16}
"""Version 2 also reads bfloat16 (§10.1): its 16 bits are the top half of a float32's."""


def is_transformer(document: dict) -> bool:
    """An architecture object of version 2 (§10): `"version": 2` among its keys."""
    version = document.get("version")
    return type(version) is int and version == 2


def transformer_architecture(document: dict, source: str) -> tuple[TransformerArchitecture, int | None]:
    """The architecture and `bos` of a version-2 architecture object: §14.1's keys from `vocab_size` to
    `tied_head`, `version` 2, and optionally `bos`; nothing else."""
    missing = ARCHITECTURE_KEYS - document.keys()
    extra = document.keys() - ARCHITECTURE_KEYS - {"version", "bos"}
    if missing or extra:
        raise PxglError(
            f"{source}: a version-2 architecture has exactly {', '.join(sorted(ARCHITECTURE_KEYS))} (and optionally "
            f"bos): missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    architecture = architecture_from_meta(document, source)
    bos = _int(document, "bos", source, 0, architecture.vocab_size - 1) if "bos" in document else None
    return architecture, bos


def architecture_json(spec: TransformerSpec) -> dict[str, Any]:
    return {"version": 2, **spec.architecture.to_json()} | ({} if spec.bos is None else {"bos": spec.bos})


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: each tensor's entry, the metadata, where the data begins."""

    entries: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    data_start: int


def peek_header(path: Path) -> Header | None:
    """The header of a .safetensors file (read alone, at most 8 + 1 MiB bytes); None for an .npz."""
    if path.suffix != ".safetensors":
        return None
    with open_regular(path, "tensor file", MAX_SAFETENSORS_BYTES) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(8 + MAX_HEADER_BYTES)
    entries, metadata = safetensors_header(head, str(path), size, TENSOR_DTYPES)
    return Header(entries, metadata, 8 + int.from_bytes(head[:8], "little"))


def quantizations(metadata: dict[str, str], where: str) -> dict[str, dict[str, Any]]:
    """pxgl.quantization of a version-2 export: tensor name → {"quant"} ({"quant", "scale", "zero_point"} for
    u8), as the meta's tensor entries say them; anything else refuses the file."""
    if "pxgl.quantization" not in metadata:
        return {}
    at = f"{where}: pxgl.quantization"
    raw = parse_json(metadata["pxgl.quantization"], at)
    if not isinstance(raw, dict):
        raise PxglError(f"{at}: not a JSON object of tensor name → {{quant}}")
    for name, entry in raw.items():
        kind = entry.get("quant") if isinstance(entry, dict) else None
        keys = {"quant", "scale", "zero_point"} if kind == "u8" else {"quant"}
        valid = kind in QUANTS and set(entry) == keys
        if valid and kind == "u8":
            zero_point = entry["zero_point"]
            valid = is_float32_scale(entry["scale"]) and type(zero_point) is int and 0 <= zero_point <= 255
        if not valid:
            raise PxglError(
                f"{at}: tensor {name[:60]!r}: {_echo(entry)} is not {{quant}} of q8, q4, u8 or f16 (u8 with a "
                "scale > 0 that float32 holds and a zero point in 0..255)"
            )
    return raw


def import_quants(
    architecture: TransformerArchitecture, quant: str | None, metadata: dict[str, str], where: str
) -> dict[str, str]:
    """Each tensor's quantization: `--quant` for every matrix, else the file's pxgl.quantization, else q8."""
    if quant is not None and quant not in MATRIX_QUANTS:
        raise PxglError(f"--quant {quant}: give one of {', '.join(MATRIX_QUANTS)}")
    known = quantizations(metadata, where)
    shapes = architecture.shapes()
    matrices = {
        name: quant or known.get(name, {}).get("quant", "q8") for name, shape in shapes.items() if len(shape) == 2
    }
    kinds = tensor_quants(architecture, matrices)
    tensor_offsets(architecture, kinds)  # a q8/q4 matrix whose rows are not whole blocks: refused before reading
    return kinds


def stream_bytes(architecture: TransformerArchitecture, kinds: dict[str, str]) -> int:
    """The weight byte stream's length, before any weight is read (for the images the outputs will be)."""
    offsets = tensor_offsets(architecture, kinds)
    return max(offsets[name] + tensor_nbytes(shape, kinds[name]) for name, shape in architecture.shapes().items())


@dataclass(frozen=True)
class ImportedTransformer:
    spec: TransformerSpec
    stream: np.ndarray
    tokenizer: Tokenizer | None
    errors: dict[str, tuple[float, float]]
    """Tensor → (largest, RMS) quantization error."""


def float32_tensor(w: np.ndarray, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if w.dtype.kind != "f" or tuple(w.shape) != shape:
        raise PxglError(f"{where}: tensor {name!r} is {w.dtype} {list(w.shape)}, not float {list(shape)}")
    with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf, refused below
        w = w.astype(np.float32)
    if not np.isfinite(w).all():
        raise PxglError(
            f"{where}: tensor {name!r} holds NaN or infinite values, or values past float32's range "
            f"(±{np.finfo(np.float32).max:.4g})"
        )
    return w


def _safetensors_reader(
    handle: BinaryIO, header: Header, shapes: dict[str, tuple[int, ...]], renames: dict[str, str], where: str
) -> Callable[[str], np.ndarray]:
    """name → the tensor's array, read from the file when asked (little-endian, row-major: safetensors')."""
    entries = dict(header.entries)
    for old, new in renames.items():
        if old not in entries:
            raise PxglError(f"{where}: --map {old}={new}: the file has no tensor {old!r}")
        entries[new] = entries.pop(old)
    if set(entries) != set(shapes):
        missing, extra = set(shapes) - set(entries), set(entries) - set(shapes)
        raise PxglError(
            f"{where}: the architecture needs {few(missing) if missing else 'no more'}; the file also has "
            f"{few(extra) if extra else 'nothing else'}"
            " (--map OLD=NEW renames)"
        )

    return lambda name: read_tensor(handle, header.data_start, entries[name], name, where)


def read_tensor(handle: BinaryIO, data_start: int, entry: dict[str, Any], name: str, where: str) -> np.ndarray:
    """One tensor of a checked safetensors header, read from the file (little-endian, row-major: safetensors');
    bfloat16 widened to float32 exactly."""
    begin, end = entry["data_offsets"]
    handle.seek(data_start + begin)
    data = handle.read(end - begin)
    if len(data) != end - begin:
        raise PxglError(f"{where}: the file ends inside tensor {name!r} (it changed while read)")
    values = np.frombuffer(data, np.dtype(TENSOR_DTYPES[entry["dtype"]]).newbyteorder("<")).reshape(entry["shape"])
    if entry["dtype"] == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values


def import_transformer(
    path: Path,
    header: Header | None,
    architecture: TransformerArchitecture,
    bos: int | None,
    kinds: dict[str, str],
    renames: dict[str, str],
    tokenizer_path: Path | None,
    tokenizer_name: str,
) -> ImportedTransformer:
    """A version-2 model from a tensor file (FORMATS §10), quantized into its byte stream; nothing is written."""
    where, shapes = str(path), architecture.shapes()
    metadata = header.metadata if header is not None else {}
    has_tokenizer = tokenizer_path is not None or "pxgl.tokenizer" in metadata
    tokenizer = read_tokenizer(tokenizer_path, metadata, where) if has_tokenizer else None
    if tokenizer is not None and tokenizer.vocab_size != architecture.vocab_size:
        raise PxglError(
            f"the tokenizer has {tokenizer.vocab_size} tokens; the model's vocabulary is {architecture.vocab_size}"
        )
    with open_regular(path, "tensor file", MAX_SAFETENSORS_BYTES) as handle:
        if header is None:
            arrays = read_npz(read_tensor_file(path), where, shapes, renames)
            raw: Callable[[str], np.ndarray] = arrays.__getitem__
        else:
            raw = _safetensors_reader(handle, header, shapes, renames, where)
        name = tokenizer_name if tokenizer else None
        return quantize_tensors(architecture, raw, kinds, bos, metadata, where, tokenizer, name)


def quantize_tensors(
    architecture: TransformerArchitecture,
    raw: Callable[[str], np.ndarray],
    kinds: dict[str, str],
    bos: int | None,
    metadata: dict[str, str],
    where: str,
    tokenizer: Tokenizer | None = None,
    tokenizer_name: str | None = None,
) -> ImportedTransformer:
    """The model of float tensors `raw(name)` gives (each read twice: laid out, then its error measured):
    checked, quantized as `kinds` says, a u8 tensor on its exported grid (pxgl.quantization) kept on it."""
    from .files import lay_out

    shapes = architecture.shapes()
    known = quantizations(metadata, where)
    grids: dict[str, tuple[float, int]] = {}
    total, done = sum(math.prod(shape) for shape in shapes.values()), 0

    def values(name: str) -> np.ndarray:
        """The tensor as float32, checked; a u8 tensor on its exported grid keeps it (lay_out reads `grids`
        after asking for the values)."""
        nonlocal done
        w = float32_tensor(raw(name), name, shapes[name], where)
        entry = known.get(name, {})
        grid = (entry["scale"], entry["zero_point"]) if entry.get("quant") == "u8" else None
        if kinds[name] == "u8" and grid is not None and on_grid(w, grid) is not None:
            grids[name] = (float(grid[0]), grid[1])
        done += w.size
        report("quantizing weights", done, 2 * total)
        return w

    spec, stream = lay_out(architecture, values, kinds, bos, tokenizer_name, grids)
    errors = {}
    for name, t in spec.tensors.items():
        w = float32_tensor(raw(name), name, shapes[name], where)
        got = dequantize(stream[t.offset : t.offset + t.nbytes], t.shape, t.quant, t.scale, t.zero_point)
        error = np.abs(got - w).reshape(-1).astype(np.float64)
        errors[name] = (float(error.max(initial=0)), float(np.sqrt(np.dot(error, error) / max(1, error.size))))
        done += w.size
        report("measuring the error", done, 2 * total)
    return ImportedTransformer(spec, stream, tokenizer, errors)


def export_metadata(spec: TransformerSpec, tokenizer: Tokenizer | None) -> dict[str, str]:
    quantization = {
        name: {k: v for k, v in t.to_json().items() if k not in ("offset", "shape")} for name, t in spec.tensors.items()
    }
    metadata = {
        "pxgl.format": FORMAT,
        "pxgl.architecture": json.dumps(architecture_json(spec)),
        "pxgl.quantization": json.dumps(quantization),
    }
    if tokenizer is not None:
        metadata["pxgl.tokenizer"] = json.dumps(tokenizer.to_json(), separators=(",", ":"))
    return metadata


def dequantized(spec: TransformerSpec, stream: np.ndarray, name: str) -> np.ndarray:
    t = spec.tensors[name]
    return dequantize(stream[t.offset : t.offset + t.nbytes], t.shape, t.quant, t.scale, t.zero_point)


def write_safetensors(path: Path, spec: TransformerSpec, stream: np.ndarray, metadata: dict[str, str]) -> None:
    """Every tensor as float32 in safetensors' layout (8-byte little-endian header length, the JSON header
    padded with spaces to a multiple of 8, then each tensor's bytes in table order), written a tensor at a
    time: the file is never held in memory."""
    from ..outputs import atomic_write

    entries: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, t in spec.tensors.items():
        size = 4 * math.prod(t.shape)
        entries[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            out.write(len(header).to_bytes(8, "little") + header)
            for k, name in enumerate(spec.tensors):
                out.write(dequantized(spec, stream, name).astype("<f4").tobytes())
                report("writing tensors", k + 1, len(spec.tensors))

    atomic_write(path, write)


def export_transformer(path: Path, spec: TransformerSpec, stream: np.ndarray, tokenizer: Tokenizer | None) -> None:
    """`pxgl export` of a version-2 model: .safetensors a tensor at a time; .npz (no metadata) whole."""
    if path.suffix == ".safetensors":
        write_safetensors(path, spec, stream, export_metadata(spec, tokenizer))
        return
    import io

    from ..outputs import atomic_write

    buffer = io.BytesIO()
    np.savez(buffer, **{name: dequantized(spec, stream, name) for name in spec.tensors})
    atomic_write(path, lambda tmp: write_in_pieces(tmp, buffer.getbuffer()))


def open_transformer(path: Path) -> tuple[TransformerSpec, np.ndarray, Tokenizer | None]:
    """A version-2 weights .pxi read whole: its spec, stream and the tokenizer it names, if any."""
    spec, stream = read_transformer(path)
    if spec.tokenizer is None:
        return spec, stream, None
    written = read_meta_document(meta_path_for(path)).get(WRITTEN, {})
    check_written(path.with_name(spec.tokenizer), written if isinstance(written, dict) else {}, "tokenizer")
    tokenizer = Tokenizer.load(path.with_name(spec.tokenizer))
    if tokenizer.vocab_size != spec.architecture.vocab_size:
        raise PxglError(
            f"{path.with_name(spec.tokenizer)}: {tokenizer.vocab_size} tokens; the model has "
            f"{spec.architecture.vocab_size}"
        )
    return spec, stream, tokenizer
