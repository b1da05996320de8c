"""The verbs that move models between pixels and float tensors: import, export (docs/FORMATS.md §10)."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import PxglError
from ..gguf import is_gguf
from .app import app
from .gguf import export_gguf, import_gguf
from .options import ForceOption, JsonOption, ModelOption, model_files
from .report import emit_json, stages_shown

if TYPE_CHECKING:
    from ..transformer.interchange import Header
    from ..transformer.meta import TransformerArchitecture

EXPORTING = "reading, converting, writing"


def renames(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise PxglError(f"--map {pair!r}: give OLD=NEW, e.g. --map fc1.weight=layer0.weight")
        if old in mapping:
            raise PxglError(f"--map {old}=…: the tensor {old!r} is renamed twice")
        mapping[old] = new
    return mapping


@app.command("import")
def import_tensors(
    file: Annotated[
        Path,
        typer.Argument(help="A Hugging Face model folder, a .gguf file, or float tensors (.safetensors or .npz)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Weights .pxi to write (meta, tokenizer beside), or a cartridge .pxa.")
    ],
    tokenizer: Annotated[
        Path | None, typer.Option(help="The model's tokenizer JSON. Default: the file's pxgl.tokenizer metadata.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Architecture JSON (vocab_size, embed_dim, context, hidden, residual). Default: metadata."),
    ] = None,
    mapping: Annotated[
        list[str] | None, typer.Option("--map", help="OLD=NEW: read the file's tensor OLD as pxgl's NEW (repeat).")
    ] = None,
    quant: Annotated[
        str | None,
        typer.Option(
            help="Version 2: every matrix as q8, q4, u8 or f16. Default: the file's pxgl.quantization, else q8."
        ),
    ] = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Bring a model trained elsewhere into pixels: each float tensor quantized by the documented rule (a
    version-2 transformer's matrices as --quant says), with its quantization error reported (docs/FORMATS.md
    §10 names the tensors)."""
    from ..interchange import architecture_document, import_model
    from ..model import save_model
    from ..output_kinds import model_set
    from ..outputs import check_writes
    from ..transformer.interchange import is_transformer, peek_header, transformer_architecture

    if not file.exists():
        raise PxglError(f"{file}: no such file or folder")
    if file.is_dir():
        if tokenizer or config or mapping:
            raise PxglError(
                f"{file}: a Hugging Face folder brings its own config and tokenizer; drop --tokenizer/--config/--map"
            )
        from .hf import import_folder

        errors, record, line = import_folder(file, out, quant, as_json, force)
        report_errors(errors, as_json)
        if as_json:
            emit_json(record)
            return
        typer.echo(line)
        return
    if is_gguf(file) or file.suffix == ".gguf":  # FORMATS §10.3: by content (a .gguf without its magic: refused)
        unused = {"--tokenizer": tokenizer, "--config": config, "--map": mapping}
        errors, record, line = import_gguf(file, out, quant, unused, as_json, force)
        report_errors(errors, as_json)
        emit_json(record) if as_json else typer.echo(line)
        return
    if out.suffix != ".pxi":
        raise PxglError(f"--out {out}: pxgl import writes a weights .pxi (its .meta.json and tokenizer beside it)")
    tokenizer_out = out.with_name(out.name.removesuffix(".pxi") + ".tokenizer.json")
    # A tokenizer already where the model's belongs is used in place, not rewritten.
    in_place = tokenizer is not None and tokenizer_out.exists() and tokenizer_out.samefile(tokenizer)
    header = peek_header(file) if file.suffix == ".safetensors" else None
    if header is not None or config is not None:
        document, source = architecture_document(config, header.metadata if header else {}, str(file))
        if is_transformer(document):
            options = ImportOptions(tokenizer, config, renames(mapping or []), quant, as_json, force)
            import_version_2(file, out, header, transformer_architecture(document, source), options)
            return
    if quant is not None:
        raise PxglError(
            f"--quant {quant}: version-1 models quantize every tensor to uint8 (§10); --quant is version 2's"
        )
    check_writes(model_set(out, None if in_place else tokenizer_out), [file, tokenizer, config], force)
    with stages_shown(not as_json):
        imported = import_model(file, tokenizer, config, renames(mapping or []), tokenizer_out.name)
        save_model(out, imported.spec, imported.weight_bytes, None if in_place else imported.tokenizer)
    report_errors(imported.errors, as_json)
    if as_json:
        emit_json({"out": str(out), "architecture": imported.spec.architecture.describe()})
        return
    typer.echo(f"{out}: {imported.spec.architecture.describe()}; meta and {tokenizer_out.name} beside it")


def report_errors(errors: dict[str, tuple[float, float]], as_json: bool) -> None:
    if as_json:
        for name, (largest, rms) in errors.items():
            emit_json({"tensor": name, "max_error": largest, "rms_error": rms})
        return
    width = max([16, *map(len, errors)])
    typer.echo(f"{'tensor':{width}} {'largest error':>14} {'RMS error':>12}")
    for name, (largest, rms) in errors.items():
        typer.echo(f"{name:{width}} {largest:14.3e} {rms:12.3e}")


@dataclass(frozen=True)
class ImportOptions:
    tokenizer: Path | None
    config: Path | None
    renames: dict[str, str]
    quant: str | None
    as_json: bool
    force: bool


def import_version_2(
    file: Path,
    out: Path,
    header: "Header | None",
    architecture: "tuple[TransformerArchitecture, int | None]",
    options: ImportOptions,
) -> None:
    """`pxgl import` of a version-2 transformer (§10, §14): every image of its weights (§14.7), the meta and,
    when the file or --tokenizer gives one, the tokenizer are checked as outputs before any tensor is read."""
    from ..output_kinds import PIXELS, model_set
    from ..outputs import Output, check_writes
    from ..transformer.files import image_paths, image_sizes, save_transformer
    from ..transformer.interchange import import_quants, import_transformer, stream_bytes

    model, bos = architecture
    tokenizer, as_json = options.tokenizer, options.as_json
    kinds = import_quants(model, options.quant, header.metadata if header else {}, str(file))
    has_tokenizer = tokenizer is not None or (header is not None and "pxgl.tokenizer" in header.metadata)
    tokenizer_out = out.with_name(out.name.removesuffix(".pxi") + ".tokenizer.json")
    in_place = tokenizer is not None and tokenizer_out.exists() and tokenizer_out.samefile(tokenizer)
    outputs = model_set(out, tokenizer_out if has_tokenizer and not in_place else None)
    images = image_paths(out, len(image_sizes(stream_bytes(model, kinds))))
    outputs += [Output(path, f"--out {out}: its image {k}", PIXELS) for k, path in enumerate(images) if k]
    check_writes(outputs, [file, tokenizer, options.config], options.force)
    with stages_shown(not as_json):
        imported = import_transformer(file, header, model, bos, kinds, options.renames, tokenizer, tokenizer_out.name)
        save_transformer(out, imported.spec, imported.stream, None if in_place else imported.tokenizer)
    report_errors(imported.errors, as_json)
    what = f"version 2, {model.layers} layers x {model.width}, {len(imported.spec.images)} image(s)"
    if as_json:
        emit_json({"out": str(out), "architecture": what, "images": [str(p) for p in images]})
        return
    beside = (
        f"meta and {tokenizer_out.name}" if imported.tokenizer is not None else "meta (no tokenizer: token pixels only)"
    )
    typer.echo(f"{out}: {what}; {beside} beside it")


@app.command()
def export(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="What to write: a .safetensors or .npz file, a new folder (hf) or a .gguf."),
    ],
    model: ModelOption = None,
    export_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="hf (a Hugging Face folder: config.json, model.safetensors, tokenizer), gguf (llama.cpp's file) "
            "or safetensors. Default: by --out's suffix.",
        ),
    ] = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Write a pixel model as float32 tensors (dequantized), its architecture, quantization and tokenizer in
    the metadata (safetensors): `pxgl import` brings it back to the same tensor bytes; an .npz needs --config.
    A version-2 model also as a Hugging Face folder (--format hf, docs/FORMATS.md §10.2) or a .gguf file (§10.3)."""
    if export_format not in (None, "hf", "gguf", "safetensors"):
        raise PxglError(f"--format {export_format}: give hf, gguf or safetensors")
    if export_format == "gguf" or (export_format is None and out.suffix == ".gguf"):
        export_gguf(out, Path(model) if model else None, as_json, force)
        return
    from ..interchange import export_tensors, write_tensors
    from ..loading import load_model
    from ..output_kinds import NPZ, SAFETENSORS
    from ..outputs import Output, check_outputs, check_replaceable
    from ..progress import report
    from ..transformer.files import transformer_files
    from ..transformer.interchange import export_transformer, open_transformer

    source = Path(model) if model is not None else None
    if export_format == "hf":
        if source is None:
            raise PxglError("--format hf: give -m MODEL (a version-2 .pxi or .pxa)")
        from .hf import export_folder

        export_folder(source, out, as_json)
        return
    version_2 = transformer_files(source) if source is not None and source.is_file() else None
    check_outputs([(out, "--out")], model_files(model) if version_2 is None else version_2)
    kinds = {".safetensors": SAFETENSORS, ".npz": NPZ}
    if out.suffix not in kinds:
        raise PxglError(
            f"--out {out}: pxgl exports .safetensors, .npz or .gguf files, or a Hugging Face folder with --format hf; "
            "give a name ending in one of them, or --format"
        )
    if not force:
        check_replaceable(Output(out, "--out", kinds[out.suffix]))
    if source is not None and version_2 is not None:
        spec, stream, tokenizer = open_transformer(source)
        with stages_shown(not as_json):
            export_transformer(out, spec, stream, tokenizer)
        if as_json:
            emit_json({"out": str(out), "tensors": {name: list(t.shape) for name, t in spec.tensors.items()}})
            return
        typer.echo(
            f"{out}: {len(spec.tensors)} float32 tensors of a version-2 model ({spec.architecture.layers} layers)"
        )
        return
    with stages_shown(not as_json):
        # each stage about a second on the largest model pxgl reads (a 201 MB weight image)
        report(EXPORTING, 0, 3)
        loaded = load_model(model)
        report(EXPORTING, 1, 3)
        tensors, metadata = export_tensors(loaded.spec, loaded.weights, loaded.tokenizer)
        report(EXPORTING, 2, 3)
        write_tensors(out, tensors, metadata)
        report(EXPORTING, 3, 3)
    if as_json:
        emit_json({"out": str(out), "tensors": {name: list(t.shape) for name, t in tensors.items()}})
        return
    typer.echo(f"{out}: {len(tensors)} float32 tensors of {loaded.spec.architecture.describe()}")
