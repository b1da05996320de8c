"""`pxgl pack`: write a model as a version-1 cartridge (docs/FORMATS.md §8), deterministically and atomically.
The model comes through the front door (engine/loading.py), so a cartridge can be repacked too."""

import hashlib
import json
import stat
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .cartridge import (
    MANIFEST,
    MAX_NAME,
    MAX_TRANSFORMER_BYTES,
    META,
    PROGRAM,
    SUFFIX,
    TOKENIZER,
    TRANSFORMER_VERSION,
    WEIGHTS,
    Manifest,
    Member,
    cartridge_version,
    is_valid_name,
    short,
)
from .errors import PxglError
from .executors import DEFAULT_EXECUTOR
from .loading import check_executor, choose_executor, load_model, model_program
from .loading import model_path as resolve_model
from .pxi import atomic_write, encode_rgb

if TYPE_CHECKING:
    import numpy as np

    from .tokenizer import Tokenizer
    from .transformer.meta import TransformerSpec

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Every member's timestamp, so that packing the same model twice gives the same bytes."""
UNIX = 3
REGULAR_FILE = stat.S_IFREG | 0o644


def pack(
    model_path: str | Path | None,
    out: str | Path,
    executor: str | None = None,
    program_path: Path | None = None,
    name: str | None = None,
) -> Manifest:
    """Write a cartridge for a model (a weights .pxi with its meta and tokenizer beside it, or another
    cartridge), atomically; returns its manifest. The pxVM program is loading.model_program's choice; the
    executor and name are the ones given, else the repacked cartridge's, else the engine's default and the
    weights file's stem."""
    out = Path(out)
    if out.suffix != SUFFIX:
        raise PxglError(f"{out}: a cartridge's name ends in {SUFFIX}")
    if executor is not None:
        check_executor(executor)
    if name is not None and not is_valid_name(name):
        raise PxglError(f"cartridge name {short(name)}: a name is 1..{MAX_NAME} printable characters")
    source = resolve_model(model_path)
    if is_transformer(source):
        if program_path is not None:
            raise PxglError("--program: a version-2 (transformer) cartridge carries no pxVM program (§8.5)")
        return pack_transformer(source, out, executor, name)
    model = load_model(model_path)
    repacked = model.cartridge.manifest if model.cartridge is not None else None
    executor = choose_executor(model, executor)
    if name is None:
        name = repacked.name if repacked is not None else Path(model.source).stem[:MAX_NAME]
        if not is_valid_name(name):
            raise PxglError(
                f"{short(model.source)}: its file name is not printable, so it cannot name the cartridge; "
                "give a name with --name"
            )
    program = model_program(model, program_path)
    meta = replace(model.spec, tokenizer=TOKENIZER).to_meta()
    contents = {
        WEIGHTS: encode_rgb(model.weights),
        META: (json.dumps(meta, indent=2) + "\n").encode(),
        TOKENIZER: (json.dumps(model.tokenizer.to_json(), separators=(",", ":")) + "\n").encode(),
        PROGRAM: encode_rgb(program.pixels),
    }
    manifest = Manifest(
        version=1,
        name=name,
        formats={"weights": model.spec.version, "pxvm": program.version},
        executor=executor,
        members=tuple(Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in contents.items()),
        about={"packed_by": f"pxgl {__version__}"},
    )
    document = (json.dumps(manifest.to_json(), indent=2) + "\n").encode()
    atomic_write(out, _zip_writer({MANIFEST: document, **contents}))
    return manifest


def is_transformer(source: Path) -> bool:
    """A version-2 weights .pxi, or a version-2 cartridge (§8.5)."""
    from .transformer.files import transformer_files

    if source.suffix == SUFFIX:
        return source.is_file() and cartridge_version(source) == TRANSFORMER_VERSION
    return source.is_file() and transformer_files(source) is not None


def pack_transformer(source: Path, out: Path, executor: str | None, name: str | None) -> Manifest:
    """A version-2 cartridge (§8.5) of a version-2 .pxi set or cartridge: its images, meta and tokenizer;
    no program. Refused before anything is written when its members would pass the cartridge's bound."""
    from .transformer.cartridge import open_transformer_cartridge
    from .transformer.interchange import open_transformer

    repacked = None
    if source.suffix == SUFFIX:
        opened = open_transformer_cartridge(source)
        repacked, spec, stream, tokenizer = opened.manifest, opened.spec, opened.stream, opened.tokenizer
    else:
        spec, stream, tokenizer = open_transformer(source)
    executor = executor or (repacked.executor if repacked is not None else DEFAULT_EXECUTOR)
    name = name or (repacked.name if repacked is not None else source.stem[:MAX_NAME])
    if not is_valid_name(name):
        raise PxglError(f"{short(str(source))}: its file name cannot name the cartridge; give a name with --name")
    return write_transformer_cartridge(out, spec, stream, tokenizer, name, executor, str(source))


def write_transformer_cartridge(
    out: Path,
    spec: "TransformerSpec",
    stream: "np.ndarray",
    tokenizer: "Tokenizer | None",
    name: str,
    executor: str,
    source: str,
) -> Manifest:
    """A version-2 cartridge (§8.5) of a model in memory (what pack and `pxgl import -o X.pxa` write), refused
    before anything is written when its members would pass the cartridge's bound."""
    from .transformer.cartridge import transformer_members

    contents = transformer_members(spec, stream, tokenizer)
    total = sum(len(data) for data in contents.values())
    if total > MAX_TRANSFORMER_BYTES:
        raise PxglError(
            f"{source}: its members come to {total:,} bytes, past a cartridge's {MAX_TRANSFORMER_BYTES:,} (§8.5): "
            "keep the .pxi set, or quantize to fewer bytes (q8, q4)"
        )
    manifest = Manifest(
        version=TRANSFORMER_VERSION,
        name=name,
        formats={"weights": 2},
        executor=executor,
        members=tuple(Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in contents.items()),
        about={"packed_by": f"pxgl {__version__}"},
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
