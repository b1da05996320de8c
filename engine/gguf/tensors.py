"""A GGUF file's tensors as a version-2 weight byte stream (docs/FORMATS.md §10.3): Q8_0 and Q4_0 blocks and F16
values kept byte for byte where the kind is q8/q4/f16, everything else dequantized as `gguf.quants.dequantize`
does and then quantized, a piece of rows at a time; gpt2's fused q/k/v split and Llama's query/key rows
un-permuted by choosing which GGUF rows make each pxgl row."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import PxglError
from ..interchange import on_grid
from ..transformer.files import image_sizes, tensor_offsets
from ..transformer.meta import QuantizedTensor, TransformerArchitecture
from ..transformer.quant import dequantize, first_nonfinite, quantize, tensor_nbytes
from . import gguf_package
from .architecture import Layout, gguf_name
from .header import Header

Q8_0, Q4_0, F32, F16, BF16 = 8, 2, 0, 1, 30
KEPT = {"q8": Q8_0, "q4": Q4_0, "f16": F16}
"""pxgl's kinds whose bytes are a GGUF type's (§14.3): copied, row by row."""
FLOATS = (F32, F16, BF16)
PIECE = 1 << 20
"""Weights converted at a time: the temporaries of one piece, never of a whole embedding table."""


@dataclass(frozen=True)
class Source:
    """Where a pxgl tensor's rows (elements, for a vector) come from: a GGUF tensor and its row indices."""

    gguf: str
    rows: np.ndarray


def qk_permutation(heads: int, head_dim: int) -> np.ndarray:
    """pxgl (halves) row → GGUF row: row c·D/2 + k of a head is GGUF row 2k + c (§10.3)."""
    return np.arange(heads * head_dim).reshape(heads, head_dim // 2, 2).transpose(0, 2, 1).reshape(-1)


def sources(architecture: TransformerArchitecture, layout: Layout) -> dict[str, Source]:
    """Every pxgl tensor's Source, table order."""
    hd, kd = architecture.heads * architecture.head_dim, architecture.kv_heads * architecture.head_dim
    found = {}
    for name, shape in architecture.shapes().items():
        gguf = gguf_name(name)
        rows = np.arange(shape[0])
        part = next((p for p in ("q", "k", "v") if f".attn.{p}." in name), None)
        if layout.fused_qkv and part is not None:
            gguf = gguf.replace(f".attn_{part}.", ".attn_qkv.")
            rows = rows + {"q": 0, "k": hd, "v": hd + kd}[part]
        elif layout.permuted_qk and part in ("q", "k"):
            rows = qk_permutation(architecture.heads if part == "q" else architecture.kv_heads, architecture.head_dim)
        found[name] = Source(gguf, rows)
    return found


def default_kind(gguf_type: int) -> str:
    """§10.3's table: Q8_0 → q8, Q4_0 → q4, floats → f16, every other type → q8."""
    return {Q8_0: "q8", Q4_0: "q4"}.get(gguf_type, "f16" if gguf_type in FLOATS else "q8")


@dataclass(frozen=True)
class Converted:
    tensors: dict[str, QuantizedTensor]
    stream: np.ndarray
    errors: dict[str, tuple[float, float]]


def _float_rows(raw: np.ndarray, gguf_type: int, name: str, where: str) -> np.ndarray:
    gguf = gguf_package()
    kind = gguf.GGMLQuantizationType(gguf_type)
    try:
        values = gguf.quants.dequantize(raw, kind)
    except NotImplementedError:
        raise PxglError(
            f"{where}: tensor {name!r} is of type {kind.name}, which llama.cpp's gguf "
            "package cannot dequantize: requantize the file (llama-quantize) to Q8_0, Q4_K or F16"
        ) from None
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise PxglError(f"{where}: tensor {name!r} holds NaN or infinite values")
    return values


def convert(
    header: Header,
    mapped: np.ndarray,
    architecture: TransformerArchitecture,
    layout: Layout,
    kinds: dict[str, str],
    grids: dict[str, tuple[float, int]],
    progress: Callable[[int, int], None],
    where: str,
) -> Converted:
    """The weight stream of the file's tensors, each as `kinds` says (u8 on `grids` where its values lie), laid out in
    table order (§14.2), and each tensor's (largest, RMS) difference from the GGUF's dequantized values.
    `mapped` is the file's bytes (a read-only memory map)."""
    shapes = architecture.shapes()
    offsets = tensor_offsets(architecture, kinds)
    end = max(offsets[name] + tensor_nbytes(shape, kinds[name]) for name, shape in shapes.items())
    image_sizes(end)  # past 32 images: refused before the stream is made
    stream = np.zeros(end, np.uint8)
    tensors, errors = {}, {}
    total, done = sum(int(np.prod(shape)) for shape in shapes.values()), 0
    for name, source in sources(architecture, layout).items():
        info, shape, kind = header.tensors[source.gguf], shapes[name], kinds[name]
        start = header.data_start + info.offset
        raw = mapped[start : start + info.nbytes].reshape(-1, info.nbytes // int(np.prod(info.dims[1:])))
        out = stream[offsets[name] : offsets[name] + tensor_nbytes(shape, kind)]
        if len(shape) == 1:
            values = _float_rows(raw, info.type, source.gguf, where).reshape(-1)[source.rows]
            data, scale, zero_point = quantize(values, kind, name)
            out[:] = data
            errors[name] = _error(dequantize(data, shape, kind), values)
        elif kind in KEPT and info.type == KEPT[kind]:
            rows = max(1, PIECE // shape[1])  # a piece of rows at a time: no copy of the whole tensor
            for r in range(0, shape[0], rows):
                out[r * raw.shape[1] : (r + rows) * raw.shape[1]] = raw[source.rows[r : r + rows]].reshape(-1)
            scale, zero_point = 0.0, 0
            if first_nonfinite(out, kind) is not None:
                what = "value" if kind == "f16" else "block scale"
                raise PxglError(f"{where}: tensor {source.gguf!r} has a {what} that is NaN or infinite")
            errors[name] = (0.0, 0.0)
        elif kind == "u8":
            values = _float_rows(raw[source.rows], info.type, source.gguf, where)
            kept = on_grid(values, grids.get(name))  # an export's own grid, kept when every value lies on it (§10.1)
            if kept is None:
                data, scale, zero_point = quantize(values, kind, name)
            else:
                q, scale, zero_point = kept
                data = q.reshape(-1)
            out[:] = data
            errors[name] = _error(dequantize(data, shape, kind, scale, zero_point), values)
        else:
            scale, zero_point = 0.0, 0
            errors[name] = _convert_rows(raw, source, info.type, shape[1], kind, out, name, where)
        tensors[name] = QuantizedTensor(name, offsets[name], shape, kind, scale, zero_point)
        done += int(np.prod(shape))
        progress(done, total)
    return Converted(tensors, stream, errors)


def _convert_rows(
    raw: np.ndarray,
    source: Source,
    gguf_type: int,
    width: int,
    kind: str,
    out: np.ndarray,
    name: str,
    where: str,
) -> tuple[float, float]:
    """A matrix dequantized and quantized a piece of rows at a time into `out`; its (largest, RMS) error."""
    rows = max(1, PIECE // width)
    row_bytes = tensor_nbytes((1, width), kind)
    largest, squares = 0.0, 0.0
    for r in range(0, len(source.rows), rows):
        values = _float_rows(raw[source.rows[r : r + rows]], gguf_type, source.gguf, where)
        data, _, _ = quantize(values, kind, name)
        out[r * row_bytes : r * row_bytes + len(data)] = data
        error = np.abs(dequantize(data, values.shape, kind) - values).astype(np.float64)
        largest = max(largest, float(error.max(initial=0)))
        squares += float(np.dot(error.ravel(), error.ravel()))
    return largest, float(np.sqrt(squares / max(1, len(source.rows) * width)))


def _error(got: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    error = np.abs(got.reshape(-1) - values.reshape(-1)).astype(np.float64)
    return float(error.max(initial=0)), float(np.sqrt(np.dot(error, error) / max(1, error.size)))
