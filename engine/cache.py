"""An on-disk cache of what an engine computes once at load, always the same way for the same inputs (the
fused executor's prepared weights: seconds of work on a CPU renderer). An entry is keyed by everything its
bytes depend on, read back only when whole and unchanged (its CRC-32 follows it), and never required: a
missing, damaged or unreadable entry is computed again, a folder that cannot be written is no error.

PXGL_CACHE_DIR names the folder (`off`: no cache); else $XDG_CACHE_HOME/pxgl, else ~/.cache/pxgl."""

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import PxglError
from .outputs import atomic_write
from .reading import open_regular

CHECK_BYTES = 4
"""An entry's CRC-32 follows it. It finds damage (a torn write, a flipped bit), all a check can do here: who
can write the folder could as well write a matching sha256, which cost 12 ms on a 13 MB entry (2 cores)."""
SUFFIX = ".bin"


def cache_dir() -> Path | None:
    named = os.environ.get("PXGL_CACHE_DIR")
    if named == "off":
        return None
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pxgl"


def entry_key(*parts: bytes | str) -> str:
    """The key of an entry: a hash of its parts, each length-prefixed (no two lists of parts collide)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def load(key: str, size: int) -> np.ndarray | None:
    """The entry's `size` bytes (uint8), or None if there is none whole and unchanged. Read into one buffer
    and handed out as a view of it: every copy of a 13 MB entry cost ~8 ms on 2 cores."""
    folder = cache_dir()
    if folder is None:
        return None
    data = bytearray(size + CHECK_BYTES + 1)  # a byte more than an entry: a longer file is no entry
    try:
        with open_regular(folder / f"{key}{SUFFIX}", "cache entry", size + CHECK_BYTES) as handle:
            read = handle.readinto(data)
    except (OSError, PxglError):
        return None
    entry = np.frombuffer(data, np.uint8, size)
    if read != size + CHECK_BYTES or zlib.crc32(entry) != int.from_bytes(data[size:read], "little"):
        return None
    return entry


def store(key: str, data: bytes) -> None:
    """Keep `data` under `key` (written whole or not at all; any failure leaves no entry)."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        check = zlib.crc32(data).to_bytes(CHECK_BYTES, "little")
        atomic_write(folder / f"{key}{SUFFIX}", lambda tmp: Path(tmp).write_bytes(data + check))
    except (OSError, PxglError):
        return
