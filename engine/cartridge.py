"""Cartridges (.pxa, docs/FORMATS.md §8): a whole model in one zip file, mounted like a game cart.

A cartridge is untrusted input. Opening one extracts nothing and writes nothing: the zip's end record and
central directory are checked first (names, links, duplicates, sizes, compression ratios), then each member
is read straight from the archive with a size cap and its sha256 checked against the manifest, then the
meta, weights, tokenizer and shaders are validated in memory. All of it happens before any GPU work."""

import hashlib
import json
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .model import CARTRIDGE_SUFFIX, Model, check_tokenizer, check_weight_image, load_model, load_tokenizer
from .pxi import atomic_write, decode_rgb, encode_rgb, parse_json
from .pxvm.compiler import compile_program
from .pxvm.files import program_for
from .pxvm.program import Program
from .pxvm.validator import validate_program
from .resources import resource_dir
from .spec import ModelSpec, spec_from_meta
from .tokenizer import Tokenizer

FORMAT = "pxgl-cartridge"
VERSION = 0
MANIFEST = "manifest.json"
WEIGHTS = "weights.pxi"
META = "weights.meta.json"
TOKENIZER = "tokenizer.json"
PROGRAM = "program.pxi"
REQUIRED = (WEIGHTS, META, TOKENIZER, PROGRAM)
SHADER_DIR = "shaders"
SHADER_SUFFIXES = (".comp", ".glsl")
MODEL_KEYS = ("vocab_size", "embed_dim", "hidden_dim", "context_window")

MAX_MEMBERS = 64
MAX_TOTAL_BYTES = 256 << 20
"""All members together, uncompressed: room for the largest weight image a pixel file may hold."""
MAX_RATIO = 100
"""Uncompressed over compressed size, per member: JSON and GLSL deflate about 3-10:1, PNGs about 1:1."""
MAX_MANIFEST_BYTES = 1 << 20
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
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Every member's timestamp, so that packing the same model twice gives the same bytes."""
UNIX = 3
REGULAR_FILE = stat.S_IFREG | 0o644
SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    model: dict[str, int]
    """vocab_size, embed_dim, hidden_dim, context_window."""
    executor: str
    """The executor `pxgl run` / `ask` / `infer` use unless told otherwise."""
    members: tuple[Member, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "model": self.model,
            "executor": self.executor,
            "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in self.members],
        }


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
    foreign_shaders: tuple[str, ...]
    """Shader members that are not byte-identical to the engine's own (empty: the cartridge may run)."""
    absent_shaders: tuple[str, ...]
    """Engine shaders the cartridge does not carry (informational: the engine runs its own shaders)."""


# --- reading -------------------------------------------------------------------------------------


def load_cartridge(path: str | Path, trust_shaders: bool = False) -> Model:
    """Open a cartridge as a Model; refuse it if its shaders are foreign and the user did not trust them."""
    cart = open_cartridge(path)
    if cart.foreign_shaders and not trust_shaders:
        raise PxglError(
            f"{cart.path}: its shaders differ from this engine's ({', '.join(cart.foreign_shaders)}); pxgl only "
            "runs cartridges whose shaders are its own: pass --trust-shaders to run it with the engine's own "
            "shaders (`pxgl pack` it with --trust-shaders to adopt them for good)"
        )
    return Model(cart.spec, cart.weights, cart.path / TOKENIZER, str(cart.path), cart)


def open_cartridge(path: str | Path) -> Cartridge:
    """Check and read a .pxa without extracting it; every problem is one PxglError naming it."""
    path = Path(path)
    if path.suffix != CARTRIDGE_SUFFIX:
        raise PxglError(f"{path}: a cartridge is a {CARTRIDGE_SUFFIX} file")
    try:
        with open(path, "rb") as handle:
            _check_end_record(handle, path)
            with zipfile.ZipFile(handle) as archive:
                entries = _checked_entries(archive, path)
                document = _read(archive, entries[MANIFEST], MANIFEST, path, MAX_MANIFEST_BYTES)
                manifest = parse_manifest(document, f"{path}:{MANIFEST}")
                _check_listing(manifest, entries, path)
                contents = {m.name: _read_verified(archive, entries[m.name], m, path) for m in manifest.members}
    except FileNotFoundError:
        raise PxglError(f"{path}: no such cartridge") from None
    except IsADirectoryError:
        raise PxglError(f"{path}: is a directory, not a cartridge") from None
    except (zipfile.BadZipFile, UnicodeDecodeError) as e:  # a name flagged UTF-8 that is not
        raise PxglError(f"{path}: not a readable zip archive ({e})") from None
    except OSError as e:
        raise PxglError(f"{path}: cannot read ({e.strerror or e})") from None
    return _validate_contents(path, manifest, contents)


def _check_end_record(handle, path: Path) -> None:
    """Bound the central directory before zipfile parses it: a cartridge ends in a plain end record (no
    comment, no zip64) whose directory is small. zipfile looks at the same record first."""
    size = handle.seek(0, 2)
    if size < END_RECORD.size:
        raise PxglError(f"{path}: not a zip archive ({size} bytes); a cartridge is a zip file")
    handle.seek(size - END_RECORD.size)
    signature, _, _, _, entries, directory_bytes, _, comment = END_RECORD.unpack(handle.read(END_RECORD.size))
    if signature != END_SIGNATURE:
        raise PxglError(f"{path}: not a zip archive, or one with an archive comment (a cartridge has none)")
    if comment:
        raise PxglError(f"{path}: the zip has an archive comment; a cartridge has none")
    if size >= END_RECORD.size + ZIP64_LOCATOR.size:
        handle.seek(size - END_RECORD.size - ZIP64_LOCATOR.size)
        if handle.read(4) == ZIP64_LOCATOR_SIGNATURE:
            raise PxglError(f"{path}: a zip64 archive; cartridges are plain zip files under {MAX_TOTAL_BYTES} bytes")
    if entries > MAX_MEMBERS:
        raise PxglError(f"{path}: {entries} members, past the limit of {MAX_MEMBERS}")
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise PxglError(f"{path}: a {directory_bytes}-byte zip directory, past the limit of {MAX_DIRECTORY_BYTES}")


def _checked_entries(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """Every zip entry checked from the central directory alone, before any content is read."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise PxglError(f"{path}: {len(infos)} members, past the limit of {MAX_MEMBERS}")
    for info in infos:
        name, mode = _short(info.filename), info.external_attr >> 16
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
        raise PxglError(f"{path}: member {_short(duplicated[0])} appears more than once in the zip")
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        raise PxglError(
            f"{path}: members total {total} bytes uncompressed, past the limit of {MAX_TOTAL_BYTES} (a zip bomb?)"
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


def _read_verified(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member, path: Path) -> bytes:
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
    spec = spec_from_meta(meta, f"{path}:{META}")
    if spec.tokenizer != TOKENIZER:
        raise PxglError(f"{path}:{META}: names tokenizer {spec.tokenizer!r}; in a cartridge it is {TOKENIZER!r}")
    for key in MODEL_KEYS:
        if manifest.model[key] != getattr(spec, key):
            raise PxglError(f"{path}: {MANIFEST} says {key} {manifest.model[key]} but {META} says {getattr(spec, key)}")
    weights = decode_rgb(contents[WEIGHTS], f"{path}:{WEIGHTS}")
    check_weight_image(spec, weights, f"{path}:{WEIGHTS}")
    tokenizer = Tokenizer.loads(_text(contents[TOKENIZER], f"{path}:{TOKENIZER}"), f"{path}:{TOKENIZER}")
    check_tokenizer(spec, tokenizer, f"{path}:{TOKENIZER}")
    program = validate_program(decode_rgb(contents[PROGRAM], f"{path}:{PROGRAM}"), spec, f"{path}:{PROGRAM}")
    engine_shaders = own_shaders()
    carried = {name: data for name, data in contents.items() if name.startswith(f"{SHADER_DIR}/")}
    foreign = tuple(sorted(name for name, data in carried.items() if engine_shaders.get(name) != data))
    absent = tuple(sorted(set(engine_shaders) - set(carried)))
    return Cartridge(path, manifest, spec, weights, tokenizer, program, foreign, absent)


def model_dimensions(spec: ModelSpec) -> dict[str, int]:
    return {key: getattr(spec, key) for key in MODEL_KEYS}


def own_shaders() -> dict[str, bytes]:
    """The engine's shader files as cartridge members: `shaders/<file>` → bytes."""
    directory = resource_dir("glsl")
    return {
        f"{SHADER_DIR}/{f.name}": f.read_bytes()
        for f in sorted(directory.iterdir())
        if f.suffix in SHADER_SUFFIXES and f.is_file()
    }


# --- the manifest --------------------------------------------------------------------------------


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Validate a manifest document (docs/FORMATS.md §8); every problem is one PxglError naming it."""
    doc = _parse_json(data, where)
    if not isinstance(doc, dict):
        raise PxglError(f"{where}: must be a JSON object")
    missing = {"format", "version", "name", "model", "executor", "members"} - doc.keys()
    if missing:
        raise PxglError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    if doc["format"] != FORMAT or type(doc["version"]) is not int or doc["version"] != VERSION:
        raise PxglError(
            f"{where}: format {_short(doc['format'])} version {_short(doc['version'])}; pxgl reads {FORMAT!r} "
            f"version {VERSION}"
        )
    name = doc["name"]
    if not is_valid_name(name):
        raise PxglError(f"{where}: 'name' must be 1..{MAX_NAME} printable characters, got {_short(name)}")
    model = doc["model"]
    if not isinstance(model, dict) or set(model) != set(MODEL_KEYS) or not all(_is_count(v) for v in model.values()):
        raise PxglError(f"{where}: 'model' must give {', '.join(MODEL_KEYS)} as positive integers, got {_short(model)}")
    executor = doc["executor"]
    executors = _executor_names()
    if executor not in executors:
        raise PxglError(f"{where}: executor {_short(executor)} is not one of this engine's ({', '.join(executors)})")
    members = _members(doc["members"], where)
    return Manifest(name, {k: model[k] for k in MODEL_KEYS}, executor, members)


def is_valid_name(name: Any) -> bool:
    """A manifest's `name`: shown to people, so printable and bounded."""
    return isinstance(name, str) and 1 <= len(name) <= MAX_NAME and name.isprintable()


def _members(raw: Any, where: str) -> tuple[Member, ...]:
    if not isinstance(raw, list):
        raise PxglError(f"{where}: 'members' must be a list of {{name, size, sha256}} objects")
    members = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != {"name", "size", "sha256"}:
            raise PxglError(f"{where}: member {i} must be an object with exactly name, size, sha256")
        name, size, digest = entry["name"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or not name:
            raise PxglError(f"{where}: member {i}: 'name' must be a non-empty string, got {_short(name)}")
        if not _is_count(size, minimum=0) or size > MAX_TOTAL_BYTES:
            raise PxglError(f"{where}: member {_short(name)}: 'size' must be an integer in 0..{MAX_TOTAL_BYTES}")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise PxglError(f"{where}: member {_short(name)}: 'sha256' must be 64 lowercase hex digits")
        members.append(Member(name, size, digest))
    names = [m.name for m in members]
    duplicated = [n for n, count in Counter(names).items() if count > 1]
    if duplicated:
        raise PxglError(f"{where}: member {_short(duplicated[0])} is listed more than once")
    for name in names:
        if not _has_role(name):
            raise PxglError(
                f"{where}: member {_short(name)} has no role in a cartridge (expected {', '.join(REQUIRED)} "
                f"and {SHADER_DIR}/*{'|*'.join(SHADER_SUFFIXES)})"
            )
    for required in REQUIRED:
        if required not in names:
            raise PxglError(f"{where}: does not list {required!r}; every cartridge carries it")
    return tuple(members)


def _has_role(name: str) -> bool:
    if name in REQUIRED:
        return True
    folder, _, file = name.partition("/")
    return folder == SHADER_DIR and SEGMENT.fullmatch(file) is not None and file.endswith(SHADER_SUFFIXES)


def _executor_names() -> tuple[str, ...]:
    from .engine import EXECUTORS

    return tuple(EXECUTORS)


def _short(value: Any) -> str:
    """An untrusted value for an error message: its repr, cut short (one line, bounded length)."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def _is_count(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PxglError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _parse_json(data: bytes, where: str) -> Any:
    return parse_json(_text(data, where), where)


# --- packing -------------------------------------------------------------------------------------


def pack(
    model_path: str | Path,
    out: str | Path,
    executor: str | None = None,
    trust_shaders: bool = False,
    program_path: Path | None = None,
    name: str | None = None,
) -> Manifest:
    """Write a cartridge for a model (a weights .pxi with its meta and tokenizer beside it, or another
    cartridge, repacked with this engine's shaders), atomically; returns its manifest. The pxVM program is
    `program_path`, else the repacked cartridge's, else the program file beside the weights, else the
    model's compiled program: validated against the model in every case. The executor and name are the
    ones given, else the repacked cartridge's, else "passes" and the weights file's stem."""
    out = Path(out)
    if out.suffix != CARTRIDGE_SUFFIX:
        raise PxglError(f"{out}: a cartridge's name ends in {CARTRIDGE_SUFFIX}")
    if executor is not None and executor not in _executor_names():
        raise PxglError(f"unknown executor {executor!r}; choose one of {', '.join(_executor_names())}")
    if name is not None and not is_valid_name(name):
        raise PxglError(f"cartridge name {_short(name)}: a name is 1..{MAX_NAME} printable characters")
    model = load_model(model_path, trust_shaders)
    repacked = model.cartridge.manifest if model.cartridge is not None else None
    if executor is None:
        executor = repacked.executor if repacked is not None else "passes"
    if name is None:
        name = repacked.name if repacked is not None else Path(model.source).stem[:MAX_NAME]
        if not is_valid_name(name):
            raise PxglError(
                f"{_short(model.source)}: its file name is not printable, so it cannot name the cartridge; "
                "give a name with --name"
            )
    tokenizer = load_tokenizer(model)
    program = program_for(model, program_path)
    if program is None:
        program = (
            model.cartridge.program
            if model.cartridge is not None
            else validate_program(compile_program(model.spec), model.spec, "compiled program")
        )
    meta = replace(model.spec, tokenizer=TOKENIZER).to_meta()
    contents = {
        WEIGHTS: encode_rgb(model.weights),
        META: (json.dumps(meta, indent=2) + "\n").encode(),
        TOKENIZER: (json.dumps(tokenizer.to_json(), separators=(",", ":")) + "\n").encode(),
        PROGRAM: encode_rgb(program.pixels),
        **own_shaders(),
    }
    manifest = Manifest(
        name=name,
        model=model_dimensions(model.spec),
        executor=executor,
        members=tuple(Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in contents.items()),
    )
    document = (json.dumps(manifest.to_json(), indent=2) + "\n").encode()
    atomic_write(out, _zip_writer({MANIFEST: document, **contents}))
    return manifest


def _zip_writer(contents: dict[str, bytes]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name, data in contents.items():
                info = zipfile.ZipInfo(name, ZIP_EPOCH)
                info.create_system = UNIX
                info.external_attr = REGULAR_FILE << 16
                # PNGs are deflated already; deflating them again gains nothing
                info.compress_type = zipfile.ZIP_STORED if name.endswith(".pxi") else zipfile.ZIP_DEFLATED
                archive.writestr(info, data)

    return write
