"""The `pxgl` command line: one command per verb; bad input is one red line and exit status 2."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from engine.errors import PxglError
from engine.resources import bundled_model

app = typer.Typer(
    help="pxgl: run pixel-encoded models on the GPU. Prompts, weights, compute and answers are all pixels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ModelOption = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="Weights .pxi (meta beside it). Default: the bundled pixellm_v0."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def model_path(model: Path | None) -> Path:
    return model if model is not None else bundled_model()


def emit_json(record: dict) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    try:
        app()
    except PxglError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


@app.command()
def encode(
    texts: Annotated[list[str], typer.Argument(help="Prompt text; several texts make several rows.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Token texture to write.")] = Path("input_tokens.pxi"),
    model: ModelOption = None,
) -> None:
    """Tokenize text into a token texture (.pxi): one row per prompt, one pixel per token."""
    from engine.model import load_model, load_tokenizer
    from engine.pxi import encode_tokens, write_rgb

    loaded = load_model(model_path(model))
    tokenizer = load_tokenizer(loaded)
    rows = [tokenizer.encode(text) for text in texts]
    write_rgb(out, encode_tokens(rows, loaded.spec.vocab_size))
    typer.echo(f"{out}: {len(rows)} row(s), {max(len(r) for r in rows)} pixel(s) wide")


@app.command()
def decode(
    file: Annotated[Path, typer.Argument(help="A token texture or prediction pixels (.pxi).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn a token texture or prediction pixels back into text, one line per row."""
    from engine.model import load_model, load_tokenizer
    from engine.pxi import decode_predictions, decode_tokens, is_prediction_image, read_rgb

    loaded = load_model(model_path(model))
    tokenizer = load_tokenizer(loaded)
    pixels = read_rgb(file)
    if is_prediction_image(pixels):
        ids, confidence = decode_predictions(pixels, str(file))
        for row, (token, conf) in enumerate(zip(ids.tolist(), confidence.tolist(), strict=True)):
            if token >= loaded.spec.vocab_size:
                raise PxglError(f"{file}: row {row}: token id {token} ≥ vocab size {loaded.spec.vocab_size}")
            text = tokenizer.decode([token])
            if as_json:
                emit_json({"row": row, "id": token, "text": text, "confidence": round(conf / 255, 4)})
            else:
                typer.echo(f"{text!r}  (id {token}, confidence {conf / 255:.0%})")
        return
    for row, ids in enumerate(decode_tokens(pixels, loaded.spec.vocab_size, str(file))):
        text = tokenizer.decode(ids.tolist())
        if as_json:
            emit_json({"row": row, "ids": ids.tolist(), "text": text})
        else:
            typer.echo(text)


if __name__ == "__main__":
    main()
