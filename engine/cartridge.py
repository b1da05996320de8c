"""Cartridges (.pxa, docs/FORMATS.md §8): a whole model in one zip file, mounted like a game cart. This module
reads them; engine/pack.py writes them.

A cartridge is untrusted input. Opening one extracts nothing and writes nothing: the zip's end record and
central directory are checked first (names, links, duplicates, sizes, compression ratios), then the
manifest and its format versions, then each member is read straight from the archive with a size cap and
its sha256 checked against the manifest, then the meta, weights, tokenizer and program are validated in
memory. All of it happens before any GPU work. Compatibility is by format versions: the engine's own
shaders never enter into it."""

import hashlib
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .executors import NAMES
from .pxi import decode_rgb
from .pxvm.opcodes import MAX_PROGRAM_PIXELS
from .pxvm.opcodes import VERSION as PXVM_VERSION
from .pxvm.program import Program
from .pxvm.validator import validate_program
from .reading import decode_utf8, open_regular, parse_json
from .resources import CARTRIDGE_SUFFIX as SUFFIX
from .spec import VERSION as WEIGHTS_VERSION
from .spec import ModelSpec, spec_from_meta
from .tokenizer import Tokenizer

FORMAT = "pxgl-cartridge"
VERSION = 1
"""The cartridge version `pxgl pack` writes."""
TRANSFORMER_VERSION = 2
"""The cartridge version of a version-2 (transformer) model: formats {"weights": 2}, no program (§8.5)."""
READS = {"cartridge": (0, TRANSFORMER_VERSION), "weights": (0, 2), "pxvm": (0, PXVM_VERSION)}
"""Format → (oldest, newest) version this engine reads (docs/FORMATS.md §8); cartridge 2 holds weights 2."""
MANIFEST = "manifest.json"
WEIGHTS = "weights.pxi"
META = "weights.meta.json"
TOKENIZER = "tokenizer.json"
PROGRAM = "program.pxi"
REQUIRED = (WEIGHTS, META, TOKENIZER, PROGRAM)
TRANSFORMER_REQUIRED = (WEIGHTS, META)
IMAGE_MEMBER = re.compile(r"weights\.([1-9][0-9]?)\.pxi")
"""Image k ≥ 1 of a version-2 model's weights (§14.7), as a cartridge names it."""
SHADER_DIR = "shaders"
SHADER_SUFFIXES = (".comp", ".glsl")
MODEL_KEYS = ("vocab_size", "embed_dim", "hidden_dim", "context_window")
"""A version-0 manifest's `model`: the dimensions, equal to the meta's."""
FORMAT_KEYS = ("weights", "pxvm")
EXECUTOR_NAME = re.compile(r"[a-z0-9_]{1,32}")

MAX_MEMBERS = 64
MAX_TOTAL_BYTES = 256 << 20
"""All members together, uncompressed: room for the largest weight image a pixel file may hold."""
MAX_TRANSFORMER_BYTES = (2 << 30) - (2 << 20)
"""All members of a version-2 cartridge (§8.5): its archive stays under 2^31 bytes, so a plain zip (Python's
zipfile turns to zip64, which cartridges never use, at 2^31 - 1)."""
MAX_RATIO = 100
"""Uncompressed over compressed size, per member: JSON and GLSL deflate about 3-10:1, PNGs about 1:1."""
MAX_MANIFEST_BYTES = 1 << 20
MAX_CARTRIDGE_BYTES = MAX_TRANSFORMER_BYTES + (1 << 20)
"""The archive file: its members (stored PNGs barely shrink) plus room for headers and directory."""
MAX_DIRECTORY_BYTES = 1 << 20
"""The central directory, checked from the end record before zipfile parses it."""
MAX_NAME = 128
MAX_ECHO = 80
"""Characters of an untrusted value quoted in an error message."""

END_RECORD = struct.Struct("<4s4H2LH")
END_SIGNATURE = b"PK\x05\x06"
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
ZIP_ENCRYPTED = 0x1
SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    version: int
    name: str
    formats: dict[str, int]
    """Format versions of the members: `weights` (the meta's version) and `pxvm` (the program's)."""
    executor: str
    """The executor `pxgl run` / `ask` / `infer` use unless told otherwise."""
    members: tuple[Member, ...]
    model: dict[str, int] | None = None
    """Version 0 only: vocab_size, embed_dim, hidden_dim, context_window."""
    about: dict[str, Any] | None = None
    """Version 1 only, informational: who packed it, eval figures, lineage. Never run."""

    def to_json(self) -> dict[str, Any]:
        """The manifest as `pxgl pack` writes it (version 1)."""
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "name": self.name,
            "formats": self.formats,
            "executor": self.executor,
            "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in self.members],
        }
        if self.about is not None:
            document["about"] = self.about
        return document


@dataclass(frozen=True)
class Cartridge:
    """A cartridge opened and validated in memory."""

    path: Path
    manifest: Manifest
    spec: ModelSpec
    weights: np.ndarray
    tokenizer: Tokenizer
    program: Program
    """The pxVM program, validated against this model: what the pxvm executor runs for this cartridge."""
    shaders: tuple[str, ...]
    """The shader members it carries for the record (version 0 carries the packing engine's): never run."""


# --- reading -------------------------------------------------------------------------------------


def open_cartridge(path: str | Path) -> Cartridge:
    """Check and read a .pxa without extracting it; every problem is one PxglError naming it. A version-2
    (transformer) cartridge is opened by pxgl.transformer_cartridge (cartridge_version tells them apart)."""
    path = Path(path)
    with open_archive(path) as (archive, entries, manifest):
        if manifest.version == TRANSFORMER_VERSION:
            raise PxglError(f"{path}: a version-2 (transformer) cartridge; this command runs versions 0 and 1")
        contents = {m.name: read_member(archive, entries[m.name], m, path) for m in manifest.members}
    return _validate_contents(path, manifest, contents)


def cartridge_version(path: str | Path) -> int:
    """The cartridge format version of a .pxa (§8.1), its archive and manifest checked as opening it does."""
    with open_archive(Path(path)) as (_, _, manifest):
        return manifest.version


@contextmanager
def open_archive(path: Path) -> Iterator[tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo], Manifest]]:
    """The archive (§8.3 steps 1 to 4 done: end record, entries, manifest, listing) while its members are
    read; every zip or file problem is one PxglError naming it."""
    if path.suffix != SUFFIX:
        raise PxglError(f"{path}: a cartridge is a {SUFFIX} file")
    try:
        with open_regular(path, "cartridge", MAX_CARTRIDGE_BYTES) as handle:
            listed_entries = _check_end_record(handle, path)
            with zipfile.ZipFile(handle) as archive:
                entries = _checked_entries(archive, path, listed_entries)
                document = _read(archive, entries[MANIFEST], MANIFEST, path, MAX_MANIFEST_BYTES)
                manifest = parse_manifest(document, f"{path}:{MANIFEST}")
                total = sum(info.file_size for info in entries.values())
                if manifest.version < TRANSFORMER_VERSION and total > MAX_TOTAL_BYTES:
                    raise PxglError(
                        f"{path}: members total {total} bytes uncompressed, past the limit of {MAX_TOTAL_BYTES} "
                        "(a zip bomb?)"
                    )
                _check_listing(manifest, entries, path)
                yield archive, entries, manifest
    except (zipfile.BadZipFile, UnicodeDecodeError) as e:  # a name flagged UTF-8 that is not
        raise PxglError(f"{path}: not a readable zip archive ({e})") from None
    except NotImplementedError as e:  # zipfile's word for a feature it lacks (a later zip version, encryption)
        raise PxglError(f"{path}: uses a zip feature pxgl does not read ({e}); pack it with pxgl pack") from None
    except OSError as e:
        raise PxglError(f"{path}: cannot read ({e.strerror or e})") from None


def _check_end_record(handle, path: Path) -> int:
    """Bound the central directory before zipfile parses it: a cartridge ends in a plain end record (no
    comment, no zip64, one disk) whose directory is small. zipfile looks at the same record first.
    Returns the record's count of entries, which zipfile does not compare with its directory."""
    size = handle.seek(0, 2)
    if size < END_RECORD.size:
        raise PxglError(f"{path}: not a zip archive ({size} bytes); a cartridge is a zip file")
    handle.seek(size - END_RECORD.size)
    record = END_RECORD.unpack(handle.read(END_RECORD.size))
    signature, disk, directory_disk, disk_entries, entries, directory_bytes, directory_offset, comment = record
    if signature != END_SIGNATURE:
        raise PxglError(f"{path}: not a zip archive, or one with an archive comment (a cartridge has none)")
    if comment:
        raise PxglError(f"{path}: the zip has an archive comment; a cartridge has none")
    if size >= END_RECORD.size + ZIP64_LOCATOR.size:
        handle.seek(size - END_RECORD.size - ZIP64_LOCATOR.size)
        if handle.read(4) == ZIP64_LOCATOR_SIGNATURE:
            raise PxglError(
                f"{path}: a zip64 archive; cartridges are plain zip files under {MAX_CARTRIDGE_BYTES} bytes"
            )
    if disk or directory_disk or disk_entries != entries:
        raise PxglError(
            f"{path}: the zip end record describes a multi-disk archive (disk {disk}, {disk_entries} of "
            f"{entries} entries here); a cartridge is one plain zip file"
        )
    if entries > MAX_MEMBERS:
        raise PxglError(f"{path}: {entries} members, past the limit of {MAX_MEMBERS}")
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise PxglError(f"{path}: a {directory_bytes}-byte zip directory, past the limit of {MAX_DIRECTORY_BYTES}")
    if directory_offset + directory_bytes != size - END_RECORD.size:
        raise PxglError(
            f"{path}: the zip's central directory does not end where its end record starts (bytes added "
            "before or inside the archive?); a cartridge is one plain zip file"
        )
    return entries


def _checked_entries(archive: zipfile.ZipFile, path: Path, listed_entries: int) -> dict[str, zipfile.ZipInfo]:
    """Every zip entry checked from the central directory alone, before any content is read."""
    infos = archive.infolist()
    if len(infos) != listed_entries:
        raise PxglError(
            f"{path}: the zip end record counts {listed_entries} entries but the central directory holds "
            f"{len(infos)}; the archive is corrupt or forged"
        )
    for info in infos:
        if not info.filename:  # zipfile's own is_dir() indexes the name's last character
            raise PxglError(f"{path}: a member has an empty name; the archive is corrupt or forged")
        name, mode = short(info.filename), info.external_attr >> 16
        parts = info.filename.replace("\\", "/").split("/")
        if ".." in parts:
            raise PxglError(f"{path}: member {name} climbs out of the archive with '..'")
        if info.filename.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", info.filename):
            raise PxglError(f"{path}: member {name} is an absolute path; members are relative")
        if stat.S_ISLNK(mode):
            raise PxglError(f"{path}: member {name} is a symbolic link; cartridges hold only plain files")
        if info.is_dir() or stat.S_ISDIR(mode):
            raise PxglError(f"{path}: member {name} is a directory entry; cartridges hold only files")
        if not all(SEGMENT.fullmatch(part) for part in info.filename.split("/")):
            raise PxglError(f"{path}: member {name} is not a plain name (letters, digits, '_-.', '/' between)")
        if info.flag_bits & ZIP_ENCRYPTED:
            raise PxglError(f"{path}: member {name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PxglError(
                f"{path}: member {name} uses zip compression method {info.compress_type}; "
                "cartridges use stored or deflated members"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_RATIO:
            raise PxglError(
                f"{path}: member {name} inflates {ratio:.0f}:1 ({info.compress_size} → {info.file_size} bytes), "
                f"past the limit of {MAX_RATIO}:1 (a zip bomb?)"
            )
    duplicated = [name for name, n in Counter(i.filename for i in infos).items() if n > 1]
    if duplicated:
        raise PxglError(f"{path}: member {short(duplicated[0])} appears more than once in the zip")
    total = sum(info.file_size for info in infos)
    if total > MAX_TRANSFORMER_BYTES:  # versions 0 and 1: MAX_TOTAL_BYTES, once the manifest says which
        raise PxglError(
            f"{path}: members total {total} bytes uncompressed, past the limit of {MAX_TRANSFORMER_BYTES} (a zip bomb?)"
        )
    entries = {info.filename: info for info in infos}
    if MANIFEST not in entries:
        raise PxglError(f"{path}: no {MANIFEST}; a cartridge's manifest lists every member")
    return entries


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, path: Path, limit: int) -> bytes:
    """A member's bytes, never more than `limit` + 1 of them inflated, whatever the zip claims."""
    if info.file_size > limit:
        raise PxglError(f"{path}: member {name!r} is {info.file_size} bytes, past its limit of {limit}")
    try:
        with archive.open(info) as member:
            return member.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise PxglError(f"{path}: member {name!r} is corrupt ({e})") from None


def _check_listing(manifest: Manifest, entries: dict[str, zipfile.ZipInfo], path: Path) -> None:
    listed = {m.name for m in manifest.members}
    unlisted = sorted(set(entries) - listed - {MANIFEST})
    if unlisted:
        raise PxglError(f"{path}: member {unlisted[0]!r} is not listed in {MANIFEST}")
    for member in manifest.members:
        if member.name not in entries:
            raise PxglError(f"{path}: {MANIFEST} lists {member.name!r} but the zip has no such member")
        if entries[member.name].file_size != member.size:
            raise PxglError(
                f"{path}: member {member.name!r} is {entries[member.name].file_size} bytes but {MANIFEST} "
                f"says {member.size}"
            )


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member, path: Path) -> bytes:
    """A listed member's bytes, inflated no further than its listed size, its size and sha256 the listed ones."""
    data = _read(archive, info, member.name, path, member.size)
    if len(data) != member.size:
        raise PxglError(f"{path}: member {member.name!r} holds {len(data)} bytes but {MANIFEST} says {member.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != member.sha256:
        raise PxglError(
            f"{path}: member {member.name!r} fails its sha256 check ({MANIFEST} says {member.sha256[:12]}…, "
            f"the member is {digest[:12]}…)"
        )
    return data


def _validate_contents(path: Path, manifest: Manifest, contents: dict[str, bytes]) -> Cartridge:
    meta = _parse_json(contents[META], f"{path}:{META}")
    if manifest.version >= 1 and isinstance(meta, dict) and meta.get("version") != manifest.formats["weights"]:
        raise PxglError(
            f"{path}:{META}: meta version {short(meta.get('version'))}, but {MANIFEST} says weights format "
            f"{manifest.formats['weights']}"
        )
    spec = spec_from_meta(meta, f"{path}:{META}")
    if spec.tokenizer != TOKENIZER:
        raise PxglError(f"{path}:{META}: names tokenizer {spec.tokenizer!r}; in a cartridge it is {TOKENIZER!r}")
    if manifest.model is not None:
        dimensions = v0_dimensions(spec)
        for key in MODEL_KEYS:
            if manifest.model[key] != dimensions.get(key):
                raise PxglError(
                    f"{path}: {MANIFEST} says {key} {manifest.model[key]} but {META} says {dimensions.get(key)}"
                )
    weights = decode_rgb(contents[WEIGHTS], f"{path}:{WEIGHTS}", expect=(spec.image_width, spec.image_height))
    spec.check_image(weights, f"{path}:{WEIGHTS}")
    tokenizer = Tokenizer.loads(
        decode_utf8(contents[TOKENIZER], f"{path}:{TOKENIZER}: not UTF-8 text"), f"{path}:{TOKENIZER}"
    )
    spec.check_vocabulary(tokenizer.vocab_size, f"{path}:{TOKENIZER}")
    program_pixels = decode_rgb(contents[PROGRAM], f"{path}:{PROGRAM}", MAX_PROGRAM_PIXELS, kind="pxVM program")
    program = validate_program(program_pixels, spec, f"{path}:{PROGRAM}")
    if program.version != manifest.formats["pxvm"]:
        raise PxglError(
            f"{path}:{PROGRAM}: a version-{program.version} program, but {MANIFEST} says pxvm format "
            f"{manifest.formats['pxvm']}"
        )
    shaders = tuple(sorted(name for name in contents if name.startswith(f"{SHADER_DIR}/")))
    return Cartridge(path, manifest, spec, weights, tokenizer, program, shaders)


def v0_dimensions(spec: ModelSpec) -> dict[str, int]:
    """What a version-0 manifest's `model` says of a model (its hidden_dim only for one hidden layer)."""
    dims = {"vocab_size": spec.vocab_size, "embed_dim": spec.embed_dim, "context_window": spec.context_window}
    return dims | ({"hidden_dim": spec.hidden[0]} if len(spec.hidden) == 1 else {})


# --- the manifest --------------------------------------------------------------------------------


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Validate a manifest document (docs/FORMATS.md §8.1), format versions first; every problem is one
    PxglError naming it."""
    doc = _parse_json(data, where)
    if not isinstance(doc, dict):
        raise PxglError(f"{where}: must be a JSON object")
    if "format" not in doc or "version" not in doc:
        raise PxglError(f"{where}: missing key(s) {', '.join(sorted({'format', 'version'} - doc.keys()))}")
    version = doc["version"]
    if doc["format"] != FORMAT or type(version) is not int or version < 0:
        raise PxglError(f"{where}: format {short(doc['format'])} version {short(version)}; pxgl reads {FORMAT!r}")
    if version > TRANSFORMER_VERSION:
        raise PxglError(f"{where}: cartridge format version {version}; this pxgl reads {reads()}: upgrade pxgl")
    keys = {"name", "executor", "members", *(("formats",) if version >= 1 else ("model",))}
    missing = keys - doc.keys()
    if missing:
        raise PxglError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    formats = _formats(doc["formats"], where, version) if version >= 1 else {"weights": 0, "pxvm": 0}
    name = doc["name"]
    if not is_valid_name(name):
        raise PxglError(f"{where}: 'name' must be 1..{MAX_NAME} printable characters, got {short(name)}")
    model = None
    if version == 0:
        model = doc["model"]
        counts = isinstance(model, dict) and all(_is_count(v) for v in model.values())
        if not counts or set(model) != set(MODEL_KEYS):
            raise PxglError(
                f"{where}: 'model' must give {', '.join(MODEL_KEYS)} as positive integers, got {short(model)}"
            )
        model = {k: model[k] for k in MODEL_KEYS}
    executor = doc["executor"]
    if not isinstance(executor, str) or not EXECUTOR_NAME.fullmatch(executor):
        raise PxglError(f"{where}: 'executor' must be an executor's name ([a-z0-9_], 1..32), got {short(executor)}")
    if executor not in NAMES:  # §8.3 step 7: an engine refuses a cartridge naming an executor it lacks
        raise PxglError(f"{where}: unknown executor {executor!r}; this pxgl has {', '.join(NAMES)}")
    about = doc.get("about") if version >= 1 else None
    if version >= 1 and "about" in doc and not isinstance(about, dict):
        raise PxglError(f"{where}: 'about' must be a JSON object, got {short(about)}")
    members = _members(doc["members"], where, version)
    return Manifest(version, name, formats, executor, members, model, about)


def reads() -> str:
    """The format versions this engine reads, for messages."""
    return ", ".join(f"{name} {lo} to {hi}" if lo != hi else f"{name} {lo}" for name, (lo, hi) in READS.items())


def _formats(raw: Any, where: str, version: int) -> dict[str, int]:
    if version == TRANSFORMER_VERSION:
        if raw != {"weights": 2} or not _is_count(raw["weights"]):
            raise PxglError(f"{where}: a version-2 cartridge's 'formats' is {{\"weights\": 2}}, got {short(raw)}")
        return {"weights": 2}
    if not isinstance(raw, dict) or set(raw) != set(FORMAT_KEYS) or not all(_is_count(v, 0) for v in raw.values()):
        raise PxglError(
            f"{where}: 'formats' must give {', '.join(FORMAT_KEYS)} as non-negative integers, got {short(raw)}"
        )
    if raw["weights"] == 2:
        raise PxglError(f"{where}: version-2 weights come in a version-2 cartridge (§8.5), not version {version}")
    newest = {"weights": WEIGHTS_VERSION, "pxvm": PXVM_VERSION}
    newer = [f"{name} {raw[name]}" for name in FORMAT_KEYS if raw[name] > newest[name]]
    if newer:
        raise PxglError(
            f"{where}: this cartridge needs {', '.join(newer)}; this pxgl reads {reads()}: upgrade pxgl to run it"
        )
    return {name: raw[name] for name in FORMAT_KEYS}


def is_valid_name(name: Any) -> bool:
    """A manifest's `name`: shown to people, so printable and bounded."""
    return isinstance(name, str) and 1 <= len(name) <= MAX_NAME and name.isprintable()


def _members(raw: Any, where: str, version: int) -> tuple[Member, ...]:
    if not isinstance(raw, list):
        raise PxglError(f"{where}: 'members' must be a list of {{name, size, sha256}} objects")
    members = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != {"name", "size", "sha256"}:
            raise PxglError(f"{where}: member {i} must be an object with exactly name, size, sha256")
        name, size, digest = entry["name"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or not name:
            raise PxglError(f"{where}: member {i}: 'name' must be a non-empty string, got {short(name)}")
        if not _is_count(size, minimum=0) or size > MAX_TRANSFORMER_BYTES:
            raise PxglError(f"{where}: member {short(name)}: 'size' must be an integer in 0..{MAX_TRANSFORMER_BYTES}")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise PxglError(f"{where}: member {short(name)}: 'sha256' must be 64 lowercase hex digits")
        members.append(Member(name, size, digest))
    names = [m.name for m in members]
    duplicated = [n for n, count in Counter(names).items() if count > 1]
    if duplicated:
        raise PxglError(f"{where}: member {short(duplicated[0])} is listed more than once")
    transformer = version == TRANSFORMER_VERSION
    required_members = TRANSFORMER_REQUIRED if transformer else REQUIRED
    for name in names:
        if transformer and not (name in (*TRANSFORMER_REQUIRED, TOKENIZER) or IMAGE_MEMBER.fullmatch(name)):
            raise PxglError(
                f"{where}: member {short(name)} has no role in a version-2 cartridge (expected {WEIGHTS}, "
                f"weights.K.pxi, {META} and {TOKENIZER})"
            )
        if not transformer and not _has_role(name):
            raise PxglError(
                f"{where}: member {short(name)} has no role in a cartridge (expected {', '.join(REQUIRED)} "
                f"and {SHADER_DIR}/*{'|*'.join(SHADER_SUFFIXES)})"
            )
    for required in required_members:
        if required not in names:
            raise PxglError(f"{where}: does not list {required!r}; every cartridge carries it")
    return tuple(members)


def _has_role(name: str) -> bool:
    if name in REQUIRED:
        return True
    folder, _, file = name.partition("/")
    return folder == SHADER_DIR and SEGMENT.fullmatch(file) is not None and file.endswith(SHADER_SUFFIXES)


def short(value: Any) -> str:
    """An untrusted value for an error message: its repr, cut short (one line, bounded length)."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def _is_count(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _parse_json(data: bytes, where: str) -> Any:
    return parse_json(decode_utf8(data, f"{where}: not UTF-8 text"), where)
