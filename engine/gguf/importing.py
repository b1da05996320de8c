"""`pxgl import FILE.gguf` (docs/FORMATS.md §10.3): the header walked and checked by pxgl, then the file's
architecture, tensors (through a memory map, dequantized by llama.cpp's `gguf.quants`) and tokenizer turned into
a version-2 model — nothing written here; the caller checks its outputs first and writes the set."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PxglError
from ..progress import report
from ..transformer.files import image_sizes, tensor_quants
from ..transformer.interchange import ImportedTransformer, quantizations, stream_bytes
from ..transformer.meta import MATRIX_QUANTS, TransformerArchitecture, TransformerSpec
from .architecture import ROPE_FREQS, Layout, gguf_architecture, text
from .header import Header, read_header
from .tensors import convert, default_kind, sources
from .vocabulary import gguf_tokenizer


@dataclass(frozen=True)
class Planned:
    """What an import will write, known from the header alone: checked as outputs before a tensor is read."""

    header: Header
    architecture: TransformerArchitecture
    layout: Layout
    kinds: dict[str, str]
    grids: dict[str, tuple[float, int]]
    has_tokenizer: bool
    stream_bytes: int


def _mapped(path: Path, header: Header) -> np.ndarray:
    """The file's bytes through a read-only memory map, once the walk has passed its header: tensors are read
    from it a piece at a time, never the whole file into memory."""
    try:
        mapped = np.memmap(path, np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise PxglError(f"{path}: cannot map the GGUF file ({e})") from None
    if len(mapped) != header.file_size:
        raise PxglError(f"{path}: the file changed while it was read")
    return mapped


def _rope_divisors(header: Header, mapped: np.ndarray, where: str) -> np.ndarray | None:
    info = header.tensors.get(ROPE_FREQS)
    if info is None:
        return None
    if info.type != 0 or len(info.dims) != 1:
        raise PxglError(f"{where}: {ROPE_FREQS} must be one row of F32")
    start = header.data_start + info.offset
    values = mapped[start : start + info.nbytes].view(np.float32).astype(np.float64)
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise PxglError(f"{where}: {ROPE_FREQS} holds a value that is not a finite positive number")
    return values


def plan(path: Path, quant: str | None) -> tuple[Planned, np.ndarray]:
    """What the model will be, and the file's memory map."""
    where = str(path)
    if quant is not None and quant not in MATRIX_QUANTS:
        raise PxglError(f"--quant {quant}: give one of {', '.join(MATRIX_QUANTS)}")
    header = read_header(path)
    mapped = _mapped(path, header)
    architecture, layout = gguf_architecture(header, where, _rope_divisors(header, mapped, where))
    known = {}
    if "pxgl.quantization" in header.values:
        known = quantizations({"pxgl.quantization": text(header, "pxgl.quantization", where)}, where)
    found = sources(architecture, layout)
    matrices = {
        name: quant or known.get(name, {}).get("quant") or default_kind(header.tensors[found[name].gguf].type)
        for name, shape in architecture.shapes().items()
        if len(shape) == 2
    }
    kinds = tensor_quants(architecture, matrices)
    grids = {
        name: (float(entry["scale"]), entry["zero_point"])
        for name, entry in known.items()
        if entry.get("quant") == "u8" and kinds.get(name) == "u8"
    }
    size = stream_bytes(architecture, kinds)
    image_sizes(size)
    has_tokenizer = "tokenizer.ggml.model" in header.values
    return Planned(header, architecture, layout, kinds, grids, has_tokenizer, size), mapped


def import_gguf(path: Path, planned: Planned, mapped: np.ndarray, tokenizer_name: str) -> ImportedTransformer:
    """The model of a planned import (nothing written): its tokenizer, when the file has one, then its tensors."""
    where = str(path)
    tokenizer, bos = gguf_tokenizer(planned.header, planned.architecture.vocab_size, where)
    converted = convert(
        planned.header,
        mapped,
        planned.architecture,
        planned.layout,
        planned.kinds,
        planned.grids,
        lambda done, total: report("converting tensors", done, total),
        where,
    )
    name = tokenizer_name if tokenizer is not None else None
    spec = TransformerSpec(planned.architecture, image_sizes(len(converted.stream)), converted.tensors, bos, name)
    return ImportedTransformer(spec, converted.stream, tokenizer, converted.errors)
