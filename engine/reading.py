"""Reading untrusted files (docs/FORMATS.md §0): one bounded opener for every file pxgl reads, strict text
and strict, bounded JSON. Each problem is one PxglError naming the file."""

import json
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np

from .errors import PxglError

KiB, MiB = 1 << 10, 1 << 20
TEXT_CAPS = {
    "meta file": 1 * MiB,
    "architecture file": 1 * MiB,
    "tokenizer file": 16 * MiB,
    "chat template file": 1 * MiB,
    "prompts file": 16 * MiB,
    "assembly file": 4 * MiB,
    "text file": 256 * MiB,
}
"""A text file's size cap by its kind, the words that name it in messages (§0.1)."""
MAX_PIXEL_FILE_BYTES = 256 * MiB
MAX_JSON_DEPTH = 64
MAX_JSON_INT_DIGITS = 64
BRACKET_STEPS = np.zeros(256, np.int64)
BRACKET_STEPS[[ord("["), ord("{")]] = 1
BRACKET_STEPS[[ord("]"), ord("}")]] = -1
"""How each byte changes the nesting depth: one table lookup a byte (np.isin cost 0.1 ms a server request)."""
DEPTH_BLOCK = 1 << 18
FILE_TYPES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)
MAX_LINK_HOPS = 40
"""The most links a chain of them may pass through (Linux's own limit, ELOOP, is 40)."""
HUB_REPOSITORY_PREFIX = "models--"


def link_home(folder: Path) -> Path:
    """Where a link in a model folder may lead (docs/FORMATS.md §10.2): the folder (resolved), or, for a Hugging
    Face cache snapshot (R/snapshots/<revision>, R named models--… and holding blobs/), the repository folder R."""
    folder = folder.resolve()
    repository = folder.parent.parent
    hub = folder.parent.name == "snapshots" and repository.name.startswith(HUB_REPOSITORY_PREFIX)
    return repository if hub and (repository / "blobs").is_dir() else folder


def in_folder(folder: Path, path: Path) -> Path:
    """`path`, a file of `folder`, unless it is a link whose chain passes or ends outside the folder's home
    (link_home), each hop followed with the directories on its way resolved; whether it ends at a regular file
    is the opener's check."""
    home = link_home(folder)
    where, hops = Path(os.path.realpath(path.parent)) / path.name, 0
    while where.is_symlink():
        if hops == MAX_LINK_HOPS:
            raise PxglError(f"{path}: a chain of more than {MAX_LINK_HOPS} links; copy the file in instead")
        hop, hops = where.parent / os.readlink(where), hops + 1
        where = Path(os.path.realpath(hop.parent)) / hop.name if hop.name != ".." else Path(os.path.realpath(hop))
        if not where.is_relative_to(home):
            named = "the folder" if home == folder.resolve() else f"its Hugging Face cache repository {home}"
            raise PxglError(f"{path}: a link leading out of {named} ({where}); copy the file in instead")
    return path


@contextmanager
def open_regular(path: str | Path, what: str, limit: int, hint: str = "") -> Iterator[BinaryIO]:
    """A regular file opened for reading, after its size is checked against `limit`. Opened without blocking
    (a FIFO would otherwise wait forever for a writer) and checked on the open descriptor, so what is
    checked is what is read; a link is followed to what it names."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PxglError(f"{path}: no such {what}{hint}") from None
    except OSError as e:
        raise PxglError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in FILE_TYPES if test(info.st_mode)), "not a regular file")
            named = f" (a link to {path.resolve()})" if path.is_symlink() else ""
            raise PxglError(f"{path}: is {kind}{named}; the {what} must be a regular file")
        if info.st_size > limit:
            raise PxglError(f"{path}: {info.st_size} bytes, past the {what}'s limit of {limit} bytes")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        yield handle


def read_bounded(path: str | Path, what: str, limit: int, hint: str = "") -> bytes:
    """A regular file's bytes, at most `limit` of them (a file that grows while read is refused)."""
    try:
        with open_regular(path, what, limit, hint) as handle:
            data = handle.read(limit + 1)
    except OSError as e:
        raise PxglError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise PxglError(f"{path}: past the {what}'s limit of {limit} bytes")
    return data


def read_text(path: str | Path, what: str, hint: str = "") -> str:
    """A UTF-8 text file the user named (a meta, tokenizer, prompts file), capped by its kind `what`
    (TEXT_CAPS), or one PxglError saying why not. Line ends are kept as they are (no newline
    translation: a lone carriage return is not a line end)."""
    data = read_bounded(path, what, TEXT_CAPS.get(what, TEXT_CAPS["text file"]), hint)
    return decode_utf8(data, f"{path}: cannot read the {what} as UTF-8 text")


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PxglError(f"{where} ({e.reason} at byte {e.start})") from None


class Lines(Sequence[str]):
    """A prompts file's lines, each ended by "\n" or "\r\n" (only those: str.splitlines would also split on
    \f, \x1c-\x1e, U+2028 ... and misalign answers with the file's lines), held as the file's bytes and two
    offsets a line (8 bytes, not a str of ~50): a line is decoded when it is read."""

    def __init__(self, path: str | Path, what: str) -> None:
        data = read_bounded(path, what, TEXT_CAPS[what])
        decode_utf8(data, f"{path}: cannot read the {what} as UTF-8 text")  # the whole file, once
        if not data:
            raise PxglError(f"{path}: no prompts (the file is empty)")
        codes = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(codes == ord("\n"))
        if not data.endswith(b"\n"):
            ends = np.append(ends, len(data))
        starts = np.concatenate(([0], ends[:-1] + 1))
        carriage = (ends > starts) & (codes[np.maximum(ends - 1, 0)] == ord("\r"))
        offset = np.min_scalar_type(len(data))
        self._data, self._starts, self._ends = data, starts.astype(offset), (ends - carriage).astype(offset)
        empty = np.flatnonzero(self._starts == self._ends)
        if empty.size:
            raise PxglError(f"{path}: line {int(empty[0]) + 1} is empty; every line must be a prompt")

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, line: int) -> str: ...

    @overload
    def __getitem__(self, line: slice) -> list[str]: ...

    def __getitem__(self, line: int | slice) -> str | list[str]:
        if isinstance(line, slice):
            return [self[i] for i in range(len(self))[line]]
        line = range(len(self))[line]  # IndexError past the end (iteration stops there)
        return self._data[self._starts[line] : self._ends[line]].decode("utf-8")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, brackets inside strings not counted. A block
    of bytes at a time, carrying whether a string is open and the backslashes before the block: the whole
    text's steps at once, and a substitution of every string, took 30 times a 16 MiB file's size."""
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    depth = deepest = 0
    inside = False  # a string is open at the block's start
    backslashes = 0  # the run of backslashes the previous block ended with
    for start in range(0, len(data), DEPTH_BLOCK):
        block = data[start : start + DEPTH_BLOCK]
        positions = np.arange(len(block))
        plain = block != ord("\\")
        last_plain = np.maximum.accumulate(np.where(plain, positions, -1))
        # backslashes just before each byte: a quote after an odd number of them is escaped
        before = np.concatenate(([-1], last_plain[:-1]))
        run = positions - 1 - before + np.where(before < 0, backslashes, 0)
        quotes = np.cumsum((block == ord('"')) & (run % 2 == 0))
        outside = (quotes % 2 == 1) == inside
        levels = np.cumsum(BRACKET_STEPS[block] * outside) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        inside ^= bool(quotes[-1] % 2)
        backslashes = len(block) - 1 - int(last_plain[-1]) + (backslashes if last_plain[-1] < 0 else 0)
    return deepest


def parse_json(text: str, where: str) -> Any:
    """JSON from a file pxgl reads (meta, tokenizer, manifest), strictly: a key repeated in one object is
    an error (a second 'members' or 'scale' must not silently replace the first), as is malformed text,
    nesting past MAX_JSON_DEPTH or an integer past MAX_JSON_INT_DIGITS digits (checked before int() is
    asked to convert it)."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        joined = dict(pairs)  # no set of keys beside it: an object of a million keys is read in its size
        if len(joined) != len(pairs):
            seen: set[str] = set()
            key = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
            raise PxglError(f"{where}: key {key!r} appears twice in one object")
        return joined

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_JSON_INT_DIGITS:
            raise PxglError(f"{where}: an integer of {len(digits)} digits; at most {MAX_JSON_INT_DIGITS} are read")
        return int(digits)

    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise PxglError(f"{where}: JSON nested too deeply ({depth} levels; at most {MAX_JSON_DEPTH} are read)")
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_int=bounded_int)
    except json.JSONDecodeError as e:
        raise PxglError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise PxglError(f"{where}: JSON nested too deeply") from None
