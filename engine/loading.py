"""The front door: open a model by name or path, and decide how it runs.

    open_model(name or path, executor?, program?) → Runnable(model, executor, program)

It owns the `.pxi` / `.pxa` dispatch, the default executor (asked for, else the cartridge's, else the
engine's default) and the pxVM program the pxvm executor runs (`--program`, else the cartridge's, else
`name.program.pxi` beside the weights, else the model's compiled program). Nothing here touches the GPU:
a Runnable is checked and ready before any GPU work starts."""

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PxglError
from .executors import DEFAULT_EXECUTOR, NAMES
from .model import WEIGHTS_SUFFIX, Model, from_cartridge, read_weights
from .pxvm.compiler import compile_program
from .pxvm.files import load_program, program_path_for
from .pxvm.program import Program
from .pxvm.validator import validate_program
from .resources import CARTRIDGE_SUFFIX, bundled_model, bundled_models, is_bundled_name
from .spec import meta_path_for, read_meta, read_meta_document
from .transformer.executors import check_transformer_executor
from .transformer.files import transformer_files

if TYPE_CHECKING:
    from .transformer.pxvm.program import TransformerProgram
from .transformer.model import TransformerModel, is_version_2, read_transformer_model, transformer_from_cartridge

PXVM = "pxvm"
CLOSE_NAME = 0.75
"""How alike (difflib's ratio) a missing model's name and a bundled one must be to suggest it: pixelm_v1 is
0.95 from pixellm_v1, pixellm_v2 0.9, pixellm 0.82, mymodel 0.24."""


@dataclass(frozen=True)
class Runnable:
    """What to run: the model (a version-2 transformer's a TransformerModel, §14), the executor that computes
    it and, for the pxvm executor, the validated program it interprets (None for the others)."""

    model: Model | TransformerModel
    executor: str
    program: "Program | TransformerProgram | None" = None


def model_path(name_or_path: str | Path | None) -> Path:
    """The file a model argument names: a bundled model by its name (`pixellm_v1`, or `pixellm_v1.pxa` for
    its cartridge) from any folder, else a path; the default bundled model when none is given. A file of
    the bundled name in the current folder is no path: give it as ./name."""
    if name_or_path is None:
        return bundled_model()
    if isinstance(name_or_path, str) and is_bundled_name(name_or_path):
        return bundled_model(name_or_path)
    return Path(name_or_path)


def load_model(name_or_path: str | Path | None = None) -> Model | TransformerModel:
    """A weights .pxi (its meta and tokenizer beside it) or a cartridge .pxa, read and checked; a .pxi whose
    meta is version 2 opens as the transformer it describes (§14)."""
    path = model_path(name_or_path)
    if not path.exists() and path.suffix in ("", WEIGHTS_SUFFIX, CARTRIDGE_SUFFIX):  # else: what a model is, below
        raise PxglError(no_such_model(str(name_or_path)))
    if path.suffix == CARTRIDGE_SUFFIX:
        from .cartridge import TRANSFORMER_VERSION, cartridge_version, open_cartridge

        if cartridge_version(path) == TRANSFORMER_VERSION:
            return transformer_from_cartridge(path)
        return from_cartridge(open_cartridge(path))
    if path.suffix != WEIGHTS_SUFFIX:
        raise PxglError(
            f"{path}: a model is a weights {WEIGHTS_SUFFIX} (with its .meta.json beside it) or a cartridge "
            f"{CARTRIDGE_SUFFIX}" + (f"; import it first: pxgl import {path} -o NAME.pxi" if importable(path) else "")
        )
    if path.is_file() and is_version_2(read_meta_document(meta_path_for(path))):
        return read_transformer_model(path)
    return read_weights(path)


def importable(path: Path) -> bool:
    """A file or folder `pxgl import` reads (FORMATS §10): a .gguf, or a Hugging Face folder."""
    return path.suffix == ".gguf" or (path / "config.json").is_file()


def no_such_model(name: str) -> str:
    """The error for a model argument that names no file: the bundled models, and the closest of them to a
    name that looks like a mistyped one."""
    bundled = list(bundled_models())
    stem = name.removesuffix(CARTRIDGE_SUFFIX).removesuffix(WEIGHTS_SUFFIX)
    closest = difflib.get_close_matches(stem, bundled, n=1, cutoff=CLOSE_NAME)
    suffix = CARTRIDGE_SUFFIX if name.endswith(CARTRIDGE_SUFFIX) else ""  # a bundled name takes no .pxi
    guess = f"did you mean {closest[0]}{suffix}? " if closest else ""
    return (
        f"{name}: no such model file, nor a bundled model; {guess}the bundled models are {', '.join(bundled)} "
        f"(NAME{CARTRIDGE_SUFFIX} for a cartridge; pxgl models lists them)"
    )


def model_files(name_or_path: str | Path | None, program: bool = True) -> list[Path]:
    """Every file a model argument may read, so no output overwrites one: a cartridge; or the weights, the
    meta beside them, the tokenizer that meta names and (unless `program` is False: compile writes it) the
    pxVM program beside them. A meta that cannot be read is refused here as load_model would refuse it."""
    path = model_path(name_or_path)
    if path.suffix != WEIGHTS_SUFFIX:
        return [path]
    version_2 = transformer_files(path)  # every image, the meta and the tokenizer it names
    if version_2 is not None:
        return [*version_2, *([program_path_for(path)] if program else [])]
    meta = meta_path_for(path)
    files = [path, meta, *([program_path_for(path)] if program else [])]
    if meta.is_file():
        files.append(path.with_name(read_meta(meta).tokenizer))
    return files


def check_executor(name: str, where: str = "") -> str:
    if name not in NAMES:
        prefix = f"{where}: " if where else ""
        raise PxglError(f"{prefix}unknown executor {name!r}; this pxgl has {', '.join(NAMES)}")
    return name


def choose_executor(model: Model | TransformerModel, asked: str | None) -> str:
    """The executor asked for, else the cartridge's own choice, else the engine's default."""
    if asked is not None:
        check_executor(asked)
        return check_transformer_executor(asked, model.source) if isinstance(model, TransformerModel) else asked
    if isinstance(model, TransformerModel):
        return DEFAULT_EXECUTOR
    if model.cartridge is not None:
        return check_executor(model.cartridge.manifest.executor, f"{model.source}: its manifest names")
    return DEFAULT_EXECUTOR


def model_program(model: Model, path: Path | None = None) -> Program:
    """The model's pxVM program, validated against it: `path`, else the cartridge's, else the file beside
    the weights, else the model's compiled program."""
    if path is not None:
        return load_program(path, model.spec)
    if model.cartridge is not None:
        return model.cartridge.program
    beside = program_path_for(Path(model.source))
    if beside.is_file():
        return load_program(beside, model.spec)
    return validate_program(compile_program(model.spec), model.spec, "compiled program")


def plan(
    model: Model | TransformerModel, executor: str | None = None, program: Path | Program | None = None
) -> Runnable:
    """How `model` runs: the executor (choose_executor) and, for pxvm, its program (model_program). A
    program implies the pxvm executor; given with another executor it is an error."""
    if isinstance(model, TransformerModel):
        if program is not None and executor not in (None, PXVM):
            raise PxglError(f"a pxVM program runs on the {PXVM} executor, not {executor!r}")
        name = PXVM if program is not None else choose_executor(model, executor)
        if name != PXVM:
            return Runnable(model, name)
        return Runnable(model, name, transformer_program(model, program))
    if program is not None and executor not in (None, PXVM):
        raise PxglError(f"a pxVM program runs on the {PXVM} executor, not {executor!r}")
    name = PXVM if program is not None else choose_executor(model, executor)
    if name != PXVM:
        return Runnable(model, name)
    if isinstance(program, Program):
        if program.spec != model.spec:
            raise PxglError(f"{program.source}: the program was not validated for this model")
        return Runnable(model, name, program)
    return Runnable(model, name, model_program(model, program))


def transformer_program(model: TransformerModel, path: "Path | Program | None") -> "TransformerProgram | None":
    """A version-2 model's pxVM program (§7.7), validated against it: `path`, else `name.program.pxi` beside
    the weights; None: the pxvm executor compiles the model's own."""
    from .pxi import read_rgb
    from .transformer.pxvm.files import check_transformer_program

    if path is not None and not isinstance(path, Path):
        raise PxglError(f"{model.source}: a version-2 model runs a version-2 program file, not a version-1 Program")
    beside = program_path_for(Path(model.source))
    chosen = path if path is not None else beside if model.cartridge is None and beside.is_file() else None
    if chosen is None:
        return None
    return check_transformer_program(read_rgb(chosen), str(chosen), model.spec)


def open_model(
    name_or_path: str | Path | None = None, executor: str | None = None, program: Path | None = None
) -> Runnable:
    """load_model, then plan: everything checked, nothing on the GPU yet."""
    return plan(load_model(name_or_path), executor, program)
