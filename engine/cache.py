"""An on-disk cache of what an engine computes once at load, always the same way for the same inputs (the
fused executor's prepared weights: seconds of work on a CPU renderer). An entry is keyed by everything its
bytes depend on, read back only when whole and unchanged (its sha256 follows it), and never required: a
missing, damaged or unreadable entry is computed again, a folder that cannot be written is no error.

PXGL_CACHE_DIR names the folder (`off`: no cache); else $XDG_CACHE_HOME/pxgl, else ~/.cache/pxgl."""

import hashlib
import os
from pathlib import Path

from .errors import PxglError
from .outputs import atomic_write
from .reading import read_bounded

DIGEST_BYTES = 32
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


def load(key: str, size: int) -> bytes | None:
    """The entry's `size` bytes, or None if there is none whole and unchanged."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = read_bounded(folder / f"{key}{SUFFIX}", "cache entry", size + DIGEST_BYTES)
    except PxglError:
        return None
    if len(data) != size + DIGEST_BYTES or hashlib.sha256(data[:size]).digest() != data[size:]:
        return None
    return data[:size]


def store(key: str, data: bytes) -> None:
    """Keep `data` under `key` (written whole or not at all; any failure leaves no entry)."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{key}{SUFFIX}", lambda tmp: Path(tmp).write_bytes(data + hashlib.sha256(data).digest()))
    except (OSError, PxglError):
        return
