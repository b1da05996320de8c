"""The verbs that move models between pixels and float tensors: import, export (docs/FORMATS.md §10)."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from .app import app
from .options import ForceOption, JsonOption, ModelOption, model_files
from .report import emit_json, stages_shown

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
    file: Annotated[Path, typer.Argument(help="Float tensors: a .safetensors or .npz file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights .pxi to write (meta, tokenizer beside).")],
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
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Bring a model trained elsewhere into pixels: each float tensor quantized to uint8 by the documented rule,
    with its quantization error reported (docs/FORMATS.md §10 names the tensors)."""
    from ..interchange import import_model
    from ..model import save_model
    from ..output_kinds import model_set
    from ..outputs import check_writes

    if out.suffix != ".pxi":
        raise PxglError(f"--out {out}: pxgl import writes a weights .pxi (its .meta.json and tokenizer beside it)")
    tokenizer_out = out.with_name(out.name.removesuffix(".pxi") + ".tokenizer.json")
    # A tokenizer already where the model's belongs is used in place, not rewritten.
    in_place = tokenizer is not None and tokenizer_out.exists() and tokenizer_out.samefile(tokenizer)
    check_writes(model_set(out, None if in_place else tokenizer_out), [file, tokenizer, config], force)
    with stages_shown(not as_json):
        imported = import_model(file, tokenizer, config, renames(mapping or []), tokenizer_out.name)
        save_model(out, imported.spec, imported.weight_bytes, None if in_place else imported.tokenizer)
    if as_json:
        for name, (largest, rms) in imported.errors.items():
            emit_json({"tensor": name, "max_error": largest, "rms_error": rms})
        emit_json({"out": str(out), "architecture": imported.spec.architecture.describe()})
        return
    typer.echo(f"{'tensor':16} {'largest error':>14} {'RMS error':>12}")
    for name, (largest, rms) in imported.errors.items():
        typer.echo(f"{name:16} {largest:14.3e} {rms:12.3e}")
    typer.echo(f"{out}: {imported.spec.architecture.describe()}; meta and {tokenizer_out.name} beside it")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Tensor file to write: .safetensors or .npz.")],
    model: ModelOption = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Write a pixel model as float32 tensors (dequantized), its architecture, quantization and tokenizer in
    the metadata (safetensors): `pxgl import` brings it back to the same tensor bytes; an .npz needs --config."""
    from ..interchange import export_tensors, write_tensors
    from ..loading import load_model
    from ..output_kinds import NPZ, SAFETENSORS
    from ..outputs import Output, check_outputs, check_replaceable
    from ..progress import report

    check_outputs([(out, "--out")], model_files(model))
    kinds = {".safetensors": SAFETENSORS, ".npz": NPZ}
    if out.suffix not in kinds:
        raise PxglError(f"--out {out}: pxgl exports .safetensors or .npz files; give a name ending in one of them")
    if not force:
        check_replaceable(Output(out, "--out", kinds[out.suffix]))
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
