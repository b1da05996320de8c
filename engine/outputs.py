"""Where pxgl writes (docs/FORMATS.md §0): one guard every writing command passes its outputs through before
any work starts, and writers that make a file, or a set of files, appear whole or not at all."""

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PxglError

TEMP_SUFFIX = ".pxgl-tmp"
"""Temporary files are `.NAME.PID.pxgl-tmp` beside the file NAME they become."""
PACKAGE_DIR = Path(__file__).resolve().parent
Writer = Callable[[Path], None]
"""Writes a file's content to the path it is given (a temporary beside the real one)."""
HEAD_BYTES = 256
"""How much of an existing output is read to tell what it is: never more."""


@dataclass(frozen=True)
class OutputKind:
    """A kind of file pxgl writes, told by the file's first HEAD_BYTES bytes (FORMATS §0.3; the kinds are
    in engine/output_kinds.py)."""

    name: str
    matches: Callable[[bytes], bool]


@dataclass(frozen=True)
class Output:
    """A file a command writes: where, the option that names it (for messages), the kind of file it is, and
    whether the path is the command's default (`default`) rather than one the user gave."""

    path: Path
    option: str
    kind: OutputKind
    default: bool = False


def installed_package() -> Path | None:
    """pxgl's own folder when it is installed as a copy (a wheel in site-packages): no output goes there. A
    source checkout or an editable install is the user's own tree, so None."""
    if {"site-packages", "dist-packages"} & set(PACKAGE_DIR.parts):
        return PACKAGE_DIR
    return None


def same_file(a: Path, b: Path) -> bool:
    """The same file by any name: equal resolved paths, or the same device and inode (links, hard links)."""
    try:
        if a.resolve() == b.resolve():
            return True
        sa, sb = a.stat(), b.stat()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (resolve, Python 3.11)
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_output(path: Path, option: str, inputs: Iterable[Path | None] = ()) -> None:
    """Fail, in one line, if `path` cannot be an output file: a folder, a device or other non-regular
    file, in a missing or unwritable folder, inside pxgl's installed package, or one of the inputs; or if
    the file system cannot say (a name too long, a folder that cannot be searched)."""
    try:
        _check_output(path, f"{option} {path}", inputs)
    except OSError as e:
        raise PxglError(f"{option} {path}: cannot check the output ({e.strerror or e})") from None


def _check_output(path: Path, where: str, inputs: Iterable[Path | None]) -> None:
    if path.name in ("", ".", "..") or path.is_dir():
        raise PxglError(f"{where}: is a folder; give a file name")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise PxglError(f"{where}: is a device or other special file, not a regular file; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise PxglError(f"{where}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PxglError(f"{where}: cannot write in folder {folder} (permission denied)")
    package = installed_package()
    if package is not None and path.resolve().is_relative_to(package):
        raise PxglError(f"{where}: is inside pxgl's installed package ({package}); give --out a path of your own")
    for source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise PxglError(f"{where}: is the input {source}; write the output somewhere else")


def check_outputs(outputs: Sequence[tuple[Path | None, str]], inputs: Iterable[Path | None] = ()) -> None:
    """Every output usable (check_output), none an input, and no two the same, before any work starts."""
    given = [(Path(path), option) for path, option in outputs if path is not None]
    sources = list(inputs)
    for i, (path, option) in enumerate(given):
        check_output(path, option, sources)
        for other, other_option in given[:i]:
            if same_file(path, other):
                raise PxglError(f"{other_option} and {option} are the same file {path}")


def check_writes(outputs: Sequence[Output | None], inputs: Iterable[Path | None] = (), force: bool = False) -> None:
    """check_outputs, then the rule for a file already there (FORMATS §0.3): without `force`, a default
    output is never written over an existing file, and a named one only over a file that is empty or of
    its kind (its first bytes tell)."""
    given = [output for output in outputs if output is not None]
    check_outputs([(output.path, output.option) for output in given], inputs)
    if not force:
        for output in given:
            check_replaceable(output)


def check_replaceable(output: Output) -> None:
    """Refuse, unless --force, to write `output` over an existing file it may not replace."""
    where = f"{output.option} {output.path}" + (" (the default)" if output.default else "")
    try:
        if not output.path.exists():
            return
        if output.default:
            raise PxglError(
                f"{where}: exists, and is not replaced by default; give --out NAME, or --force to replace it"
            )
        with open(output.path, "rb") as existing:  # a regular file: check_output said so
            head = existing.read(HEAD_BYTES)
    except OSError as e:
        raise PxglError(f"{where}: cannot read it to see what it is ({e.strerror or e}); --force replaces it") from None
    if head and not output.kind.matches(head):
        raise PxglError(f"{where}: exists and is not {output.kind.name}; give another name, or --force to replace it")


def check_output_dir(
    path: Path,
    option: str,
    inputs: Iterable[Path | None] = (),
    writes: dict[str, OutputKind] | None = None,
    force: bool = False,
    outputs: Iterable[Output | None] = (),
) -> None:
    """A folder to write files into: a folder or nothing yet, and not pxgl's installed package; of the
    files already in it, each one whose name matches a pattern of `writes` (what the command writes there,
    and the kind of each) must be usable as an output (check_output): a regular file, none of the inputs,
    and (unless `force`) empty or of its kind. None of the command's other `outputs` may be a file it
    writes there, whether or not that file exists yet."""
    try:
        _check_output_dir(path, option, inputs, writes or {}, force)
        for output in outputs:
            if output is None:
                continue
            folder = path.resolve()
            within = output.path.parent.resolve() == folder
            pattern = next((p for p in writes or {} if within and fnmatch.fnmatchcase(output.path.name, p)), None)
            if output.path.resolve() == folder or pattern is not None:
                raise PxglError(
                    f"{output.option} {output.path} and {option} {path}{f' ({pattern})' if pattern else ''} are the "
                    "same file; write one of them somewhere else"
                )
    except OSError as e:
        raise PxglError(f"{option} {path}: cannot check the folder ({e.strerror or e})") from None


def _check_output_dir(
    path: Path, option: str, inputs: Iterable[Path | None], writes: dict[str, OutputKind], force: bool
) -> None:
    try:
        mode = path.stat().st_mode  # a link loop: OSError
    except FileNotFoundError:
        mode = None
        if path.is_symlink():
            raise PxglError(f"{option} {path}: is a link to nothing; give a folder") from None
    if mode is not None and not stat.S_ISDIR(mode):
        raise PxglError(f"{option} {path}: exists and is not a folder; give a folder")
    package = installed_package()
    if package is not None and path.resolve().is_relative_to(package):
        raise PxglError(f"{option} {path}: is inside pxgl's installed package ({package}); give a folder of your own")
    sources = list(inputs)
    for pattern, kind in writes.items() if path.is_dir() else ():
        for existing in sorted(path.glob(pattern)):
            check_output(existing, f"{option} {path}: its file", sources)
            if not force:
                check_replaceable(Output(existing, f"{option} {path}: its file", kind))


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def remove_leftovers(path: Path) -> None:
    """Delete the temporaries a killed pxgl left for `path` (their process is gone)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+){re.escape(TEMP_SUFFIX)}")
    for candidate in path.parent.glob(f".*{TEMP_SUFFIX}"):
        match = pattern.fullmatch(candidate.name)
        if match and not _alive(int(match[1])):
            candidate.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_files(writers: dict[Path, Writer]) -> None:
    """Write every file to its temporary, then rename them into place in the dict's order, the last (a meta,
    an index) last: any failure while writing leaves none of them changed. Of a set, the last file's old
    version is removed before the first rename, so a crash between renames leaves new files without their
    meta (refused), never beside an old meta that would describe them wrongly, with or without a `files`
    record (FORMATS §2.3)."""
    temps: dict[Path, Path] = {}
    path = next(iter(writers))
    try:
        for path, write in writers.items():
            remove_leftovers(path)
            temps[path] = temp_path(path)
            write(temps[path])
            with open(temps[path], "rb") as written:
                os.fsync(written.fileno())
        if len(temps) > 1:
            list(temps)[-1].unlink(missing_ok=True)
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except OSError as e:
        raise PxglError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Writer) -> None:
    """Call write(temporary path) beside `path`, then rename it into place; clean up on any failure."""
    write_files({Path(path): write})
