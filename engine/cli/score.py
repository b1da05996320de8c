"""`pxgl eval`: how well a model predicts text, scored on the GPU (docs/FORMATS.md §9)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import DeviceOption, ExecutorOption, JsonOption, ModelOption
from .report import emit_json, progress_bar
from .transformer import evaluate_transformer, is_transformer


@app.command("eval")
def evaluate(
    text: Annotated[
        list[Path] | None,
        typer.Option(
            "--text",
            "-t",
            help="UTF-8 text files to score (blank lines separate documents). Default: the model's own "
            "held-out split of the corpus it was trained on.",
        ),
    ] = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a model on text with the GPU: top-1 accuracy, perplexity and bits per byte over every token
    of every document (the first from an empty context). The GPU computes each position's log-probability;
    the host only adds them up. With several --device numbers each chunk of positions is split across one
    engine per number."""
    from ..corpus import paragraphs
    from ..devices import parse_devices
    from ..evaluate import heldout_documents, score
    from ..loading import open_model
    from ..parallel import open_engines, renderer_of
    from ..reading import read_text

    runnable = open_model(model, executor)
    devices = parse_devices(device)
    if is_transformer(runnable):
        evaluate_transformer(runnable, text, devices, as_json)
        return
    if text:
        # Each file's text is held once; its documents are cut from it as they are scored.
        texts = [read_text(path, "text file") for path in text]

        def documents() -> Iterator[str]:
            return (document for content in texts for document in paragraphs(content))

        about = f"{sum(1 for _ in documents())} documents of {', '.join(path.name for path in text)}"
    else:
        heldout, about = heldout_documents(runnable.model)

        def documents() -> Iterator[str]:
            return iter(heldout)

    total = 0 if as_json else sum(len(document.encode("utf-8")) for document in documents())
    with open_engines(runnable, devices) as engine:
        with progress_bar(total) as bar:
            task = bar.add_task("scoring", total=total)
            scores = score(engine, runnable.model.tokenizer, documents(), lambda n: bar.advance(task, n))
        executor_name, renderer = engine.executor_name, renderer_of(engine)
    record = {"model": runnable.model.source, "text": about, "executor": executor_name, **scores.record()}
    if as_json:
        emit_json(record)
        return
    typer.echo(f"{runnable.model.source} on {about}")
    typer.echo(f"  positions      {scores.positions:,} ({scores.bytes:,} bytes)")
    typer.echo(f"  top-1          {scores.top1:.2%}")
    typer.echo(f"  perplexity     {scores.perplexity:.2f}")
    typer.echo(f"  bits per byte  {scores.bits_per_byte:.4f}")
    typer.echo(f"  scored by the {executor_name} executor on {renderer}")
