"""The verbs about files and the machine: encode, decode, pack, inspect, info. None of them runs a model."""

from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import (
    DeviceOption,
    ExecutorOption,
    ForceOption,
    JsonOption,
    ModelOption,
    ProgramOption,
    model_files,
    one_device,
)
from .report import emit_json, percent, stages_shown

DEFAULT_TOKENS = Path("input_tokens.pxi")


@app.command()
def encode(
    texts: Annotated[list[str], typer.Argument(help="Prompt text; several texts make several rows.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help=f"Token texture to write. Default: {DEFAULT_TOKENS}.")
    ] = None,
    model: ModelOption = None,
    force: ForceOption = False,
) -> None:
    """Tokenize text into a token texture (.pxi): one row per prompt, one pixel per token."""
    from ..loading import load_model
    from ..output_kinds import PIXELS
    from ..outputs import Output, check_writes
    from ..pxi import encode_tokens, write_rgb
    from ..transformer.model import TransformerModel

    target = out if out is not None else DEFAULT_TOKENS
    check_writes([Output(target, "--out", PIXELS, default=out is None)], model_files(model), force)
    loaded = load_model(model)
    rows = [loaded.tokenizer.encode(text) for text in texts]
    if isinstance(loaded, TransformerModel):  # §14.5: ids past 65,535 take the blue byte
        from ..transformer.pixels import encode_rows

        write_rgb(target, encode_rows(rows, loaded.spec.architecture.vocab_size))
    else:
        write_rgb(target, encode_tokens(rows, loaded.spec.vocab_size))
    typer.echo(f"{target}: {len(rows)} row(s), {max(len(r) for r in rows)} pixel(s) wide")


@app.command()
def decode(
    file: Annotated[Path, typer.Argument(help="A token texture or prediction pixels (.pxi).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn a token texture or prediction pixels back into text, one line per row."""
    from ..loading import load_model
    from ..pxi import decode_predictions, decode_tokens, is_prediction_image, read_prompt_pixels
    from ..transformer.model import TransformerModel

    loaded = load_model(model)
    tokenizer = loaded.tokenizer
    if isinstance(loaded, TransformerModel):
        from .transformer import decode_transformer_pixels

        decode_transformer_pixels(file, loaded, as_json)
        return
    pixels = read_prompt_pixels(file, loaded.spec.vocab_size)
    if is_prediction_image(pixels):
        ids, confidence = decode_predictions(pixels, str(file), loaded.spec.vocab_size)
        for row, (token, conf) in enumerate(zip(ids.tolist(), confidence.tolist(), strict=True)):
            text = tokenizer.decode([token])
            if as_json:
                emit_json({"row": row, "id": token, "text": text, "confidence": round(conf / 255, 4)})
            else:
                typer.echo(f"{text!r}  id {token}  confidence {percent(conf)}")
        return
    for row, ids in enumerate(decode_tokens(pixels, loaded.spec.vocab_size, str(file))):
        text = tokenizer.decode(ids.tolist())
        if as_json:
            emit_json({"row": row, "ids": ids.tolist(), "text": text})
        else:
            typer.echo(text)


@app.command()
def pack(
    model: ModelOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Cartridge to write. Default: the model's name with .pxa.")
    ] = None,
    executor: ExecutorOption = None,
    program_file: ProgramOption = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The cartridge's name. Default: the repacked cartridge's, else the weights' stem."),
    ] = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Pack a model into a cartridge (.pxa): weights, meta, tokenizer and pxVM program in one zip, with a
    manifest of format versions and every member's size and sha256 (docs/FORMATS.md §8)."""
    from ..loading import model_path
    from ..output_kinds import CARTRIDGE
    from ..outputs import Output, check_writes
    from ..pack import pack as pack_cartridge
    from ..transformer.files import transformer_files

    source = model_path(model)
    target = out if out is not None else Path(source.name).with_suffix(".pxa")
    inputs = transformer_files(source) if source.suffix == ".pxi" and source.is_file() else None
    inputs = model_files(model) if inputs is None else inputs
    check_writes([Output(target, "--out", CARTRIDGE, default=out is None)], [*inputs, program_file], force)
    with stages_shown(not as_json):
        manifest = pack_cartridge(source, target, executor, program_file, name)
    if as_json:
        emit_json({"out": str(target), **manifest.to_json()})
        return
    size = sum(m.size for m in manifest.members)
    typer.echo(f"{target}: cartridge {manifest.name!r}, {len(manifest.members)} members, {size} bytes unpacked")


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A cartridge (.pxa) or a pixel file (.pxi).")],
    as_json: JsonOption = False,
) -> None:
    """What a file is and whether pxgl would run it: a cartridge's manifest, format versions, members and
    hashes; a weights file's dimensions and tensors; a token texture, prediction pixels or pxVM program."""
    from ..describe import describe

    record = describe(file)
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        if isinstance(value, list):
            typer.echo(f"{key}:")
            for item in value:
                typer.echo(
                    "  " + ("  ".join(f"{k} {v}" for k, v in item.items()) if isinstance(item, dict) else str(item))
                )
        elif isinstance(value, dict):
            typer.echo(f"{key:14} " + "  ".join(f"{k} {v}" for k, v in value.items()))
        else:
            typer.echo(f"{key:14} {value}")


@app.command()
def models(as_json: JsonOption = False) -> None:
    """The bundled models, by the names every verb's -m takes (pixellm_v1, pixellm_v0; name.pxa for the
    cartridge), with their architecture and the scores recorded when they were trained."""
    from ..describe import bundled_records

    records = bundled_records()
    if as_json:
        for record in records:
            emit_json(record)
        return
    for record in records:
        default = "  (default)" if record["default"] else ""
        typer.echo(f"{record['name']}{default}: {record['architecture']}, {record['weights']:,} weights")
        typer.echo(f"  files   {record['weights_file']}  {record['cartridge']}")
        typer.echo(f"  scores  {record['scores']}")


@app.command()
def info(
    device: DeviceOption = None,
    as_json: JsonOption = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Also tell what this model needs of the GPU: a version-2 model's weights, its KV cache a slot "
            "and the slots one storage block holds.",
        ),
    ] = None,
) -> None:
    """Show the GPU pxgl runs on: renderer, GL version and the limits the engine relies on."""
    from dataclasses import asdict

    from ..gl import GLBackend
    from ..loading import load_model

    loaded = load_model(model) if model is not None else None  # a bad model refused before the GPU starts
    gpu = GLBackend(one_device(device))
    record = {"renderer": gpu.renderer, "gl_version": gpu.version, **asdict(gpu.limits)}
    gpu.release()
    if loaded is not None:
        from ..transformer.describe import gpu_record

        record |= gpu_record(loaded, gpu.limits.max_storage_block_size)
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        typer.echo(f"{key:28} {value}")
