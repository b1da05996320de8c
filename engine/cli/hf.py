"""The Hugging Face side of `pxgl import` and `pxgl export` (docs/FORMATS.md §10.2): a folder in, a folder out.
engine/cli/interchange.py dispatches here; the work is engine/hf's."""

from pathlib import Path

import typer

from ..errors import PxglError
from .report import emit_json, stages_shown

SUFFIXES = (".pxi", ".pxa")


def import_folder(folder: Path, out: Path, quant: str | None, as_json: bool, force: bool):
    """Check the folder and every output, quantize, write a .pxi set or a version-2 cartridge; (per-tensor
    errors, the summary record, the summary line) for the caller to report."""
    from ..cartridge import MAX_NAME, is_valid_name
    from ..executors import DEFAULT_EXECUTOR
    from ..hf.importer import import_folder as quantize_folder
    from ..hf.importer import open_folder
    from ..output_kinds import CARTRIDGE, PIXELS, model_set
    from ..outputs import Output, check_writes
    from ..pack import write_transformer_cartridge
    from ..transformer.files import image_paths, image_sizes, save_transformer
    from ..transformer.interchange import stream_bytes

    if out.suffix not in SUFFIXES:
        raise PxglError(f"--out {out}: a folder imports to a weights .pxi (meta and tokenizer beside it) or a .pxa")
    folder_model = open_folder(folder, quant)
    model = folder_model.architecture
    tokenizer_out = out.with_name(out.name.removesuffix(".pxi") + ".tokenizer.json")
    if out.suffix == ".pxa":
        outputs = [Output(out, "--out", CARTRIDGE)]
    else:
        outputs = model_set(out, tokenizer_out if folder_model.tokenizer is not None else None)
        images = image_paths(out, len(image_sizes(stream_bytes(model, folder_model.kinds))))
        outputs += [Output(path, f"--out {out}: its image {k}", PIXELS) for k, path in enumerate(images) if k]
    check_writes(outputs, [folder], force)
    with stages_shown(not as_json):
        imported = quantize_folder(folder_model, tokenizer_out.name)
        if out.suffix == ".pxa":
            name = folder.resolve().name[:MAX_NAME]
            name = name if is_valid_name(name) else "model"
            write_transformer_cartridge(
                out, imported.spec, imported.stream, imported.tokenizer, name, DEFAULT_EXECUTOR, str(folder)
            )
        else:
            save_transformer(out, imported.spec, imported.stream, imported.tokenizer)
    quants = sorted({folder_model.kinds[n] for n, shape in model.shapes().items() if len(shape) == 2})
    chosen = f"matrices {', '.join(quants)}"
    if quant is None:
        chosen += " (the default: q8, unless the folder's pxgl.quantization says otherwise; --quant q8|q4|u8|f16)"
    capped = folder_model.declared_context != model.context_length
    what = (
        f"{folder_model.family}: version 2, {model.layers} layers x {model.width}, vocabulary {model.vocab_size}, "
        f"context {model.context_length}"
        + (f" (config.json's {folder_model.declared_context} capped at §14.1's largest)" if capped else "")
    )
    tokenizer = "tokenizer" if imported.tokenizer is not None else "no tokenizer: token pixels only"
    record = {"out": str(out), "architecture": what, "quantization": chosen, "tokenizer": tokenizer}
    return imported.errors, record, f"{out}: {what}; {chosen}; {tokenizer}"


def export_folder(model: Path, out: Path, as_json: bool) -> None:
    """`pxgl export -m MODEL --format hf -o DIR`."""
    from ..hf.export import export_folder as write_folder
    from ..transformer.files import transformer_files
    from ..transformer.interchange import open_transformer

    if transformer_files(model) is None:
        raise PxglError(f"-m {model}: --format hf exports a version-2 model (a .pxi whose meta says version 2)")
    spec, stream, tokenizer = open_transformer(model)
    with stages_shown(not as_json):
        family = write_folder(out, spec, stream, tokenizer)
    if as_json:
        emit_json({"out": str(out), "architecture": family})
        return
    typer.echo(f"{out}: a Hugging Face {family} folder (config.json, model.safetensors, generation_config.json)")
