"""An on-disk cache of what an engine computes once at load, always the same way for the same inputs (the
fused executor's prepared weights: seconds of work on a CPU renderer). An entry is keyed by everything its
bytes depend on, read back only when whole and unchanged (its CRC-32 follows it), and never required: a
missing, damaged or unreadable entry is computed again, a folder that cannot be written is no error.

PXGL_CACHE_DIR names the folder (`off`: no cache); else $XDG_CACHE_HOME/pxgl, else ~/.cache/pxgl."""

import hashlib
import os
import zlib
from collections.abc import Callable
from pathlib import Path

from .errors import PxglError
from .outputs import atomic_write
from .reading import open_regular

CHECK_BYTES = 4
"""An entry's CRC-32 follows it. It finds damage (a torn write, a flipped bit), all a check can do here: who
can write the folder could as well write a matching sha256, which cost 12 ms on a 13 MB entry (2 cores)."""
SUFFIX = ".bin"
CHUNK_BYTES = 1 << 20


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


def load(key: str, size: int, write: Callable[[int, memoryview], None]) -> bool:
    """Hand the entry's `size` bytes to write(offset, chunk) through one buffer of CHUNK_BYTES and say whether
    the entry was there, whole and unchanged. Its check is known once every byte is read: after False, what
    was written is to be thrown away. (Reading a 13 MB entry whole took ~10 ms longer on 2 cores, most of it
    the first touch of fresh memory.)"""
    folder = cache_dir()
    if folder is None:
        return False
    buffer = memoryview(bytearray(min(size, CHUNK_BYTES)))
    check = done = 0
    try:
        with open_regular(folder / f"{key}{SUFFIX}", "cache entry", size + CHECK_BYTES) as handle:
            while done < size:
                chunk = buffer[: handle.readinto(buffer[: size - done])]
                if not chunk:  # a shorter file
                    return False
                check = zlib.crc32(chunk, check)
                write(done, chunk)
                done += len(chunk)
            return handle.read(CHECK_BYTES + 1) == check.to_bytes(CHECK_BYTES, "little")
    except (OSError, PxglError):
        return False


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
