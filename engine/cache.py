"""An on-disk cache of what an engine computes once at load, always the same way for the same inputs (the
fused executor's prepared weights: seconds of work on a CPU renderer). An entry is keyed by everything its
bytes depend on, read back only when whole and unchanged (its CRC-32 follows it), and never required: a
missing, damaged or unreadable entry is computed again, a folder that cannot be written is no error.

PXGL_CACHE_DIR names the folder (`off`: no cache); else $XDG_CACHE_HOME/pxgl, else ~/.cache/pxgl. The cache
holds at most PXGL_CACHE_MAX_MB megabytes (default DEFAULT_MAX_MB): each store evicts the least recently
used entries past it (an entry's mtime is when it was last written or read). Beside each entry, KEY.json
says what it is for `pxgl cache list`. pxgl touches only files named as it names them in that folder."""

import contextlib
import hashlib
import json
import os
import re
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import PxglError
from .outputs import TEMP_SUFFIX, atomic_write, remove_leftovers
from .reading import open_regular, parse_json, read_bounded

CHECK_BYTES = 4
"""An entry's CRC-32 follows it. It finds damage (a torn write, a flipped bit), all a check can do here: who
can write the folder could as well write a matching sha256, which cost 12 ms on a 13 MB entry (2 cores)."""
SUFFIX = ".bin"
ABOUT_SUFFIX = ".json"
CHUNK_BYTES = 1 << 20
DEFAULT_MAX_MB = 256
"""~19 prepared pixellm_v1s (13 MB each)."""
MB = 1 << 20
MAX_ABOUT_BYTES = 4096
ABOUT_KEYS = ("model", "architecture", "renderer")
"""What an entry's note says (pxgl cache list shows it); a note with any other key is not pxgl's."""
KEY = r"[0-9a-f]{64}"
ENTRY_NAME = re.compile(rf"({KEY}){re.escape(SUFFIX)}")
ABOUT_NAME = re.compile(rf"({KEY}){re.escape(ABOUT_SUFFIX)}")
TEMP_NAME = re.compile(rf"\.({KEY}(?:{re.escape(SUFFIX)}|{re.escape(ABOUT_SUFFIX)}))\.\d+{re.escape(TEMP_SUFFIX)}")


def cache_dir() -> Path | None:
    """The cache's folder, or None when it is off; a bad PXGL_CACHE_MAX_MB is refused here, before any work."""
    named = os.environ.get("PXGL_CACHE_DIR")
    if named == "off":
        return None
    max_bytes()
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pxgl"


def max_bytes() -> int:
    """The cache's bound from PXGL_CACHE_MAX_MB (megabytes, 0: keep nothing new), else DEFAULT_MAX_MB."""
    named = os.environ.get("PXGL_CACHE_MAX_MB")
    if named is None:
        return DEFAULT_MAX_MB * MB
    try:
        megabytes = float(named)
    except ValueError:
        megabytes = -1.0
    if not 0 <= megabytes < 1 << 40:  # also refuses nan and inf
        raise PxglError(
            f"PXGL_CACHE_MAX_MB={named[:40]!r}: give the cache's bound in megabytes, e.g. 256 (0: no new entries)"
        )
    return int(megabytes * MB)


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
            whole = handle.read(CHECK_BYTES + 1) == check.to_bytes(CHECK_BYTES, "little")
    except (OSError, PxglError):
        return False
    if whole:
        with contextlib.suppress(OSError):  # a folder pxgl may read but not write
            os.utime(folder / f"{key}{SUFFIX}")  # used now: the last to be evicted
    return whole


def store(key: str, data: bytes, about: dict[str, str]) -> None:
    """Keep `data` under `key` (written whole or not at all; any failure leaves no entry), with `about` (what
    it is, for `pxgl cache list`) beside it; then evict the least recently used entries past the bound."""
    bound = max_bytes()
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        about_text = json.dumps(about, ensure_ascii=False, sort_keys=True)
        if len(data) + CHECK_BYTES + len(about_text.encode()) <= bound:
            check = zlib.crc32(data).to_bytes(CHECK_BYTES, "little")
            atomic_write(folder / f"{key}{SUFFIX}", lambda tmp: Path(tmp).write_bytes(data + check))
            atomic_write(
                folder / f"{key}{ABOUT_SUFFIX}", lambda tmp: Path(tmp).write_text(about_text, encoding="utf-8")
            )
        evict(folder, bound)
    except (OSError, PxglError):
        return


@dataclass(frozen=True)
class Entry:
    key: str
    bytes: int
    """The entry's file and its about file."""
    last_used: float
    """When it was last written or read (its mtime, seconds since the epoch)."""
    about: dict[str, str]
    """What the engine said it is (model, architecture, renderer); empty where unknown."""


def entries(folder: Path) -> list[Entry]:
    """The folder's entries, least recently used first (files of other names are not pxgl's: left alone)."""
    found = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = ENTRY_NAME.fullmatch(path.name)
        if match is None:
            continue
        about_path = folder / f"{match[1]}{ABOUT_SUFFIX}"
        try:
            info = path.lstat()
            about = read_about(about_path)
            about_bytes = about_path.lstat().st_size if about else 0
        except OSError:  # removed meanwhile
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(Entry(match[1], info.st_size + about_bytes, info.st_mtime, about))
    return sorted(found, key=lambda e: (e.last_used, e.key))


def read_about(path: Path) -> dict[str, str]:
    """An entry's about file, or {} where it is missing or not what pxgl writes."""
    try:
        document = parse_json(read_bounded(path, "cache note", MAX_ABOUT_BYTES).decode("utf-8"), str(path))
    except (OSError, PxglError, UnicodeDecodeError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {str(k): str(v) for k, v in document.items() if isinstance(v, str)}


def is_note(path: Path) -> bool:
    """Whether a file named as an entry's note holds what pxgl writes there (a user's file of that name is kept)."""
    about = read_about(path)
    return bool(about) and set(about) <= set(ABOUT_KEYS)


def evict(folder: Path, bound: int) -> None:
    """Remove the least recently used entries until the rest hold at most `bound` bytes."""
    found = entries(folder)
    total = sum(e.bytes for e in found)
    for entry in found:
        if total <= bound:
            break
        remove(folder, entry.key)
        total -= entry.bytes


def remove(folder: Path, key: str) -> None:
    for suffix in (SUFFIX, ABOUT_SUFFIX):
        (folder / f"{key}{suffix}").unlink(missing_ok=True)


def clear(folder: Path) -> tuple[int, int]:
    """Remove every entry, about file without its entry and temporary a killed pxgl left; returns (entries,
    bytes) removed."""
    found = entries(folder)
    for entry in found:
        remove(folder, entry.key)
    for path in folder.iterdir() if folder.is_dir() else ():
        if ABOUT_NAME.fullmatch(path.name) and not path.is_symlink() and path.is_file() and is_note(path):
            path.unlink(missing_ok=True)
        elif match := TEMP_NAME.fullmatch(path.name):
            remove_leftovers(folder / match[1])
    return len(found), sum(e.bytes for e in found)
