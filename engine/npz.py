"""An untrusted `.npz` (numpy's zip of `.npy` members) read with bounds (docs/FORMATS.md §10): the zip's
end record bounds its central directory before zipfile parses it; the members' names and declared sizes
are checked against the tensors expected before anything is inflated; each `.npy` header is parsed from at
most MAX_HEADER_BYTES; a member is inflated only up to its declared size, which its header's shape fixes."""

import ast
import io
import math
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from .errors import PxglError

END_RECORD = struct.Struct("<4s4H2LH")
END_SIGNATURE = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_LOCATOR_BYTES = 20
ZIP_ENCRYPTED = 0x1
MAX_DIRECTORY_BYTES = 1 << 20
MAX_MEMBERS = 1024
MAGIC = b"\x93NUMPY"
HEADER_LENGTH = {1: struct.Struct("<H"), 2: struct.Struct("<I"), 3: struct.Struct("<I")}
"""The .npy format version → how its header's length is stored."""
MAX_HEADER_BYTES = 10_000
"""numpy's own cap on a header it parses without trusting the file."""
PREFIX_BYTES = len(MAGIC) + 2 + 4
FLOAT = re.compile(r"[<>|=]?f[248]")
ECHO = 60
"""Characters of an untrusted value quoted in an error."""


def read_npz(
    data: bytes, where: str, shapes: dict[str, tuple[int, ...]], renames: dict[str, str]
) -> dict[str, np.ndarray]:
    """Each tensor of `shapes` from the archive's member `NAME.npy` (`OLD.npy` for a rename OLD → NAME)."""
    check_end_record(data, where)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = named_members(archive.infolist(), where, shapes, renames)
            return {name: read_member(archive, info, where, shapes[name]) for name, info in members.items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as e:
        raise PxglError(f"{where}: not a readable .npz ({e})") from None
    except NotImplementedError as e:  # a zip feature zipfile lacks (encryption, a later method)
        raise PxglError(f"{where}: uses a zip feature pxgl does not read ({e}); save it with numpy.savez") from None


def check_end_record(data: bytes, where: str) -> None:
    """A plain zip end record (no comment, no zip64) whose central directory is small, checked before
    zipfile parses the directory (a 1 GiB file could list millions of entries)."""
    end = len(data) - END_RECORD.size
    locator = data[max(end - ZIP64_LOCATOR_BYTES, 0) : max(end - ZIP64_LOCATOR_BYTES, 0) + 4]
    if end < 0 or data[end : end + 4] != END_SIGNATURE or locator == ZIP64_LOCATOR:
        raise PxglError(f"{where}: not a zip archive ending in a plain end record (as numpy.savez writes)")
    *_, entries, directory_bytes, _, _ = END_RECORD.unpack(data[-END_RECORD.size :])
    if entries > MAX_MEMBERS or directory_bytes > MAX_DIRECTORY_BYTES:
        raise PxglError(
            f"{where}: a zip directory of {entries} entries in {directory_bytes} bytes, past the limits of "
            f"{MAX_MEMBERS} and {MAX_DIRECTORY_BYTES}"
        )


def named_members(
    infos: list[zipfile.ZipInfo], where: str, shapes: dict[str, tuple[int, ...]], renames: dict[str, str]
) -> dict[str, zipfile.ZipInfo]:
    """Tensor name → its member, every name and declared size checked from the central directory alone."""
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.flag_bits & ZIP_ENCRYPTED:
            raise PxglError(f"{where}: member {info.filename[:ECHO]!r} is encrypted")
        if not info.filename.endswith(".npy"):
            raise PxglError(f"{where}: member {info.filename[:ECHO]!r} is not a .npy array")
        name = info.filename.removesuffix(".npy")
        if name in by_name:
            raise PxglError(f"{where}: member {info.filename[:ECHO]!r} appears more than once")
        by_name[name] = info
    for old, new in renames.items():
        if old not in by_name:
            raise PxglError(f"{where}: --map {old}={new}: the file has no tensor {old!r}")
        by_name[new] = by_name.pop(old)
    if set(by_name) != set(shapes):
        missing, extra = sorted(set(shapes) - set(by_name)), sorted(set(by_name) - set(shapes))
        raise PxglError(
            f"{where}: the architecture needs {missing or 'no more'}; the file also has "
            f"{[name[:ECHO] for name in extra] or 'nothing else'} (--map OLD=NEW renames)"
        )
    for name, info in by_name.items():
        largest = PREFIX_BYTES + MAX_HEADER_BYTES + math.prod(shapes[name]) * 8
        if info.file_size > largest:
            raise PxglError(
                f"{where}: member {info.filename!r} declares {info.file_size:,} bytes; tensor {name!r} of shape "
                f"{list(shapes[name])} takes at most {largest:,} as a .npy"
            )
    return by_name


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """The member's array, of `shape` and a float dtype: its header parsed with a bound, its declared size
    the header's exactly, and never more than that inflated."""
    at = f"{where}: member {info.filename!r}"
    with archive.open(info) as member:
        dtype, fortran_order, stored_shape, header_end = npy_header(member, at)
        if stored_shape != shape:
            raise PxglError(f"{at}: shape {list(stored_shape)[:8]}, not the architecture's {list(shape)}")
        size = math.prod(shape) * dtype.itemsize
        if info.file_size != header_end + size:
            raise PxglError(
                f"{at}: declares {info.file_size:,} bytes; its header and {dtype} {list(shape)} "
                f"take {header_end + size:,}"
            )
        body = member.read(size)
    if len(body) != size:
        raise PxglError(f"{at}: ends after {len(body):,} of its {size:,} data bytes")
    return np.frombuffer(body, dtype).reshape(shape, order="F" if fortran_order else "C")


def npy_header(member: Any, at: str) -> tuple[np.dtype, bool, tuple[int, ...], int]:
    """(dtype, fortran_order, shape, bytes up to the data) from a .npy's first bytes, at most
    MAX_HEADER_BYTES of header read."""
    prefix = member.read(len(MAGIC) + 2)
    if len(prefix) < len(MAGIC) + 2 or prefix[: len(MAGIC)] != MAGIC or prefix[len(MAGIC)] not in HEADER_LENGTH:
        raise PxglError(f"{at}: not a .npy array of format version 1, 2 or 3")
    length_field = HEADER_LENGTH[prefix[len(MAGIC)]]
    (length,) = length_field.unpack(member.read(length_field.size).ljust(length_field.size, b"\0"))
    if length > MAX_HEADER_BYTES:
        raise PxglError(f"{at}: a {length:,}-byte .npy header, past the limit of {MAX_HEADER_BYTES:,}")
    text = member.read(length)
    try:
        header = ast.literal_eval(text.decode("latin-1" if prefix[len(MAGIC)] < 3 else "utf-8"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise PxglError(f"{at}: the .npy header is not a Python literal") from None
    if not (isinstance(header, dict) and set(header) == {"descr", "fortran_order", "shape"}):
        raise PxglError(f"{at}: the .npy header is not a dict of descr, fortran_order and shape")
    descr, fortran_order, shape = header["descr"], header["fortran_order"], header["shape"]
    if not (isinstance(descr, str) and FLOAT.fullmatch(descr)):
        raise PxglError(f"{at}: holds {str(descr)[:ECHO]!r}; pxgl imports float16, float32 or float64 arrays")
    if not isinstance(fortran_order, bool):
        raise PxglError(f"{at}: fortran_order {str(fortran_order)[:ECHO]!r} is not True or False")
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise PxglError(f"{at}: shape {str(shape)[:ECHO]!r} is not a tuple of sizes")
    return np.dtype(descr), fortran_order, shape, len(prefix) + length_field.size + length
