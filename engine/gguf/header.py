"""pxgl's own walk of a GGUF header (docs/FORMATS.md §10.3): every count, string, array and tensor extent checked
against the file's size and pxgl's caps before it is used, so a header that lies is one line, never a huge
allocation or a traceback; the values kept (arrays of strings as lists, numbers as numpy arrays) and each
tensor's place in the data, read later through a memory map."""

import itertools
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from ..reading import open_regular
from . import gguf_package

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_GGUF_BYTES = 16 << 30
"""A .gguf file (§0.1): read a tensor at a time through a memory map, as a version-2 .safetensors is."""
MAX_ENTRIES = 65536
MAX_NAME_BYTES = 256
MAX_STRING_BYTES = 16 << 20
MAX_ARRAY_ITEMS = 1 << 20
"""§6.1's most ids (Gemma's vocabulary has 262,144; Llama 3's merges 280,147): 2^20 two-byte strings, a 10 MB
file, peak at ~150 MB of Python objects (2^21 of them at 209 MB)."""
MAX_DIMS = 4
MAX_DIM = 1 << 32
MAX_ELEMENTS = 1 << 34
MAX_ALIGNMENT = 65536
DEFAULT_ALIGNMENT = 32
LEAST_KV_BYTES, LEAST_TENSOR_BYTES = 24, 32
"""A key/value: key length, one key byte, type, one value byte at least (rounded down); a tensor info: name
length, one name byte, dimension count, one dimension, type, offset."""
STRING, ARRAY = 8, 9
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
"""GGUF's value types by number (uint8 … float64), as struct formats; 8 is a string, 9 an array."""
INTEGER_TYPES = {0, 1, 2, 3, 4, 5, 10, 11}
FLOAT32 = 6
FLOAT_TYPES = {FLOAT32, 12}


@dataclass(frozen=True)
class Array:
    item_type: int
    items: list[str] | np.ndarray


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]
    """GGUF's order: the row length first."""
    type: int
    offset: int
    """From the start of the data."""
    nbytes: int


@dataclass(frozen=True)
class Header:
    version: int
    values: dict[str, tuple[int, Any]]
    """key → (GGUF type, value): a scalar or string itself, an Array for an array."""
    tensors: dict[str, TensorInfo]
    alignment: int
    data_start: int
    file_size: int


def quant_sizes() -> dict[int, tuple[int, int]]:
    """GGML type number → (block length, block bytes), from the gguf package itself."""
    return {int(kind): sizes for kind, sizes in gguf_package().GGML_QUANT_SIZES.items()}


class _Walk:
    """A cursor over the mapped header: each read is checked to end inside the file first."""

    def __init__(self, data: mmap.mmap, where: str):
        self.data, self.where, self.at = data, where, 0

    def fail(self, message: str) -> PxglError:
        return PxglError(f"{self.where}: {message} (at byte {self.at}): not a GGUF file pxgl reads")

    def take(self, n: int, what: str) -> int:
        if n > len(self.data) - self.at:
            raise self.fail(f"{what} of {n:,} bytes runs past the end of the file ({len(self.data):,} bytes)")
        start, self.at = self.at, self.at + n
        return start

    def scalar(self, fmt: str, what: str) -> Any:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)[0]

    def string(self, what: str, limit: int = MAX_STRING_BYTES, least: int = 0) -> str:
        n = self.scalar("<Q", f"{what}'s length")
        if not least <= n <= limit:
            raise self.fail(f"{what} is {n:,} bytes; {least}..{limit:,} are allowed")
        start = self.take(n, what)
        try:
            return self.data[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def value(self, kind: int, what: str) -> Any:
        if kind == STRING:
            return self.string(what)
        if kind == ARRAY:
            item = self.scalar("<I", f"{what}'s item type")
            count = self.scalar("<Q", f"{what}'s item count")
            if item == ARRAY or (item != STRING and item not in SCALARS):
                raise self.fail(f"{what} is an array of type {item}: pxgl reads arrays of scalars or strings")
            if count > MAX_ARRAY_ITEMS:
                raise self.fail(f"{what} claims {count:,} items; at most {MAX_ARRAY_ITEMS:,} are allowed")
            if item == STRING:
                if 8 * count > len(self.data) - self.at:
                    raise self.fail(f"{what} claims {count:,} strings, more than the file holds")
                return Array(item, [self.string(f"{what}[{k}]") for k in range(count)])
            dtype = np.dtype(SCALARS[item])
            start = self.take(count * dtype.itemsize, what)
            return Array(item, np.frombuffer(self.data, dtype, count, start).copy())
        if kind not in SCALARS:
            raise self.fail(f"{what} has the value type {kind}; GGUF's are 0..12")
        return self.scalar(SCALARS[kind], what)


def _count(walk: _Walk, what: str, least_bytes: int) -> int:
    n = walk.scalar("<Q", what)
    most = min(MAX_ENTRIES, (len(walk.data) - walk.at) // least_bytes)
    if n > most:
        raise walk.fail(f"the header claims {n:,} {what}s; this file holds at most {most:,}")
    return n


def _tensor_info(walk: _Walk, sizes: dict[int, tuple[int, int]]) -> TensorInfo:
    name = walk.string("a tensor name", MAX_NAME_BYTES, 1)
    what = f"tensor {name!r}"
    n_dims = walk.scalar("<I", f"{what}'s dimension count")
    if not 1 <= n_dims <= MAX_DIMS:
        raise walk.fail(f"{what} has {n_dims} dimensions; 1..{MAX_DIMS} are allowed")
    dims = tuple(walk.scalar("<Q", f"{what}'s dimensions") for _ in range(n_dims))
    elements = 1
    for d in dims:
        elements *= d
    if not all(1 <= d <= MAX_DIM for d in dims) or elements > MAX_ELEMENTS:
        raise walk.fail(f"{what} has the dimensions {list(dims)}: each 1..2^32, at most 2^34 elements in all")
    kind = walk.scalar("<I", f"{what}'s type")
    if kind not in sizes:
        raise walk.fail(f"{what} has the type {kind}, which llama.cpp's gguf package does not know")
    block, block_bytes = sizes[kind]
    if dims[0] % block:
        raise walk.fail(f"{what}'s rows of {dims[0]} are not whole blocks of {block} (its type {kind})")
    offset = walk.scalar("<Q", f"{what}'s offset")
    return TensorInfo(name, dims, kind, offset, elements // block * block_bytes)


def _alignment(values: dict[str, tuple[int, Any]], where: str) -> int:
    if "general.alignment" not in values:
        return DEFAULT_ALIGNMENT
    kind, alignment = values["general.alignment"]
    if kind != 4 or not 1 <= alignment <= MAX_ALIGNMENT or alignment & (alignment - 1):
        raise PxglError(f"{where}: general.alignment must be a uint32 power of two up to {MAX_ALIGNMENT}")
    return alignment


def _check_extents(tensors: dict[str, TensorInfo], alignment: int, data_size: int, where: str) -> None:
    for t in tensors.values():
        if t.offset % alignment:
            raise PxglError(f"{where}: tensor {t.name!r}'s offset {t.offset} is not a multiple of {alignment}")
        if t.offset + t.nbytes > data_size:
            raise PxglError(
                f"{where}: tensor {t.name!r} claims {t.nbytes:,} bytes at {t.offset:,}; the file's data holds "
                f"{data_size:,}: a truncated or lying file"
            )
    ordered = sorted(tensors.values(), key=lambda t: t.offset)
    for a, b in itertools.pairwise(ordered):
        if a.offset + a.nbytes > b.offset:
            raise PxglError(f"{where}: tensors {a.name!r} and {b.name!r} overlap")


def read_header(path: Path) -> Header:
    """The checked header of a .gguf file (FORMATS §10.3 steps 1-4): one PxglError for any problem."""
    where = str(path)
    with open_regular(path, "GGUF file", MAX_GGUF_BYTES) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 24:
            raise PxglError(f"{where}: {size} bytes, shorter than a GGUF header")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            walk = _Walk(data, where)
            if data[:4] != MAGIC:
                raise PxglError(f"{where}: does not begin with GGUF's magic bytes")
            walk.at = 4
            version = walk.scalar("<I", "the version")
            if int.from_bytes(version.to_bytes(4, "little"), "big") in VERSIONS:
                raise walk.fail("a big-endian GGUF file; pxgl reads little-endian ones (llama.cpp's usual)")
            if version not in VERSIONS:
                raise walk.fail(f"GGUF version {version}; pxgl reads versions 2 and 3 (little-endian)")
            tensor_count = _count(walk, "tensor", LEAST_TENSOR_BYTES)
            kv_count = _count(walk, "key/value", LEAST_KV_BYTES)
            values: dict[str, tuple[int, Any]] = {}
            for _ in range(kv_count):
                key = walk.string("a key", MAX_NAME_BYTES, 1)
                if key in values:
                    raise walk.fail(f"the key {key!r} appears twice")
                kind = walk.scalar("<I", f"{key}'s type")
                values[key] = (kind, walk.value(kind, key))
            sizes = quant_sizes()
            tensors: dict[str, TensorInfo] = {}
            for _ in range(tensor_count):
                info = _tensor_info(walk, sizes)
                if info.name in tensors:
                    raise walk.fail(f"the tensor {info.name!r} appears twice")
                tensors[info.name] = info
            header_end = walk.at
    alignment = _alignment(values, where)
    data_start = -(-header_end // alignment) * alignment
    _check_extents(tensors, alignment, max(0, size - data_start), where)
    return Header(version, values, tensors, alignment, data_start, size)
