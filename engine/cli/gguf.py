"""`pxgl import FILE.gguf` and `pxgl export --format gguf` (docs/FORMATS.md §10.3): the command-line side of
engine/gguf/ — outputs checked before a tensor is read, progress shown, the set (or a cartridge) written."""

import tempfile
from pathlib import Path
from typing import Any

import typer

from ..errors import PxglError
from .report import emit_json, stages_shown


def import_gguf(
    file: Path, out: Path, quant: str | None, unused: dict[str, Any], as_json: bool, force: bool
) -> tuple[dict[str, tuple[float, float]], dict[str, Any], str]:
    """Import a .gguf file as a version-2 model written to `out` (.pxi set or .pxa cartridge); (each tensor's
    (largest, RMS) error, the summary record, the summary line) for the caller to report."""
    from ..gguf.importing import import_gguf as convert
    from ..gguf.importing import plan
    from ..output_kinds import PIXELS, model_set
    from ..outputs import Output, check_writes
    from ..transformer.files import image_paths, image_sizes, save_transformer

    given = [option for option, value in unused.items() if value]
    if given:
        raise PxglError(f"{file}: a GGUF file carries its architecture and tokenizer; {', '.join(given)} is not used")
    if out.suffix not in (".pxi", ".pxa"):
        raise PxglError(f"--out {out}: pxgl import writes a weights .pxi (meta, tokenizer beside it) or a .pxa")
    planned, mapped = plan(file, quant)
    tokenizer_out = out.with_name(out.stem + ".tokenizer.json")
    if out.suffix == ".pxa":
        from ..output_kinds import CARTRIDGE

        check_writes([Output(out, "--out", CARTRIDGE)], [file], force)
    else:
        outputs = model_set(out, tokenizer_out if planned.has_tokenizer else None)
        images = image_paths(out, len(image_sizes(planned.stream_bytes)))
        outputs += [Output(path, f"--out {out}: its image {k}", PIXELS) for k, path in enumerate(images) if k]
        check_writes(outputs, [file], force)
    with stages_shown(not as_json):
        imported = convert(file, planned, mapped, tokenizer_out.name)
        if out.suffix == ".pxi":
            save_transformer(out, imported.spec, imported.stream, imported.tokenizer)
        else:
            from ..pack import pack_transformer

            with tempfile.TemporaryDirectory() as folder:
                staged = Path(folder) / (out.stem + ".pxi")
                save_transformer(staged, imported.spec, imported.stream, imported.tokenizer)
                pack_transformer(staged, out, None, None)
    model = planned.architecture
    what = f"{planned.layout.name}: version 2, {model.layers} layers x {model.width}, vocabulary {model.vocab_size}"
    kinds = sorted({kind for name, kind in planned.kinds.items() if len(model.shapes()[name]) == 2})
    chosen = f"matrices {', '.join(kinds)}" + ("" if quant else " (by their GGUF types; --quant q8|q4|u8|f16)")
    tokenizer = "tokenizer" if imported.tokenizer is not None else "no tokenizer: token pixels only"
    record = {"out": str(out), "architecture": what, "quantization": chosen, "tokenizer": tokenizer}
    return imported.errors, record, f"{out}: {what}; {chosen}; {tokenizer}"


def export_gguf(out: Path, source: Path | None, as_json: bool, force: bool) -> None:
    """Write a version-2 model (its .pxi set or cartridge) as a .gguf file (FORMATS §10.3)."""
    from ..gguf.exporting import GGUF_FILE
    from ..gguf.exporting import export_gguf as write
    from ..outputs import Output, check_outputs, check_replaceable
    from ..pack import is_transformer
    from ..transformer.cartridge import open_transformer_cartridge
    from ..transformer.files import transformer_files
    from ..transformer.interchange import open_transformer

    if source is None or not is_transformer(source):
        raise PxglError(f"-m {source or '…'}: a GGUF export takes a version-2 model, its .pxi or .pxa (FORMATS §14)")
    cartridge = source.suffix == ".pxa"
    check_outputs([(out, "--out")], [source] if cartridge else transformer_files(source) or [source])
    if not force:
        check_replaceable(Output(out, "--out", GGUF_FILE))
    if cartridge:
        opened = open_transformer_cartridge(source)
        spec, stream, tokenizer = opened.spec, opened.stream, opened.tokenizer
    else:
        spec, stream, tokenizer = open_transformer(source)
    with stages_shown(not as_json):
        architecture = write(out, spec, stream, tokenizer)
    if as_json:
        emit_json({"out": str(out), "architecture": architecture, "tensors": len(spec.tensors)})
        return
    typer.echo(f"{out}: a GGUF {architecture} model, {len(spec.tensors)} pxgl tensors")
