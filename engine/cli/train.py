"""`pxgl train`: a model learned on the CPU (numpy), written as pixels."""

from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import JsonOption
from .report import emit_json


@app.command()
def train(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="UTF-8 text files; blank lines separate documents. Default: Python's own docs."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights .pxi to write (meta, tokenizer beside).")] = Path(
        "pixellm.pxi"
    ),
    seed: Annotated[int, typer.Option(help="Seeds the held-out split, the init and the batches.")] = 0,
    vocab: Annotated[int | None, typer.Option(help="Tokenizer vocabulary (default 1024).")] = None,
    embed: Annotated[int | None, typer.Option(help="Embedding width (default 128).")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden layer width (default 128).")] = None,
    context: Annotated[int | None, typer.Option(help="Context window in tokens (default 2).")] = None,
    steps: Annotated[int | None, typer.Option(help="Adam steps (default 15000).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a pixellm model on the CPU (numpy): BPE tokenizer, model, uint8 quantization, held-out eval."""
    from rich.console import Console
    from rich.progress import Progress

    from ..train import TrainConfig
    from ..train import train as run_training

    given = {"vocab_size": vocab, "embed_dim": embed, "hidden_dim": hidden, "context_window": context, "steps": steps}
    config = TrainConfig(
        out=out, files=tuple(files or ()), seed=seed, **{k: v for k, v in given.items() if v is not None}
    )
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=as_json or not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        evaluation = run_training(config, progress)
    if as_json:
        emit_json(evaluation)
        return
    typer.echo(
        f"{out}: vocab {config.vocab_size}, embed {config.embed_dim}, hidden {config.hidden_dim}, "
        f"context {config.context_window}; meta and {config.tokenizer_name} beside it"
    )
    typer.echo(f"held-out tokens: {evaluation['heldout_tokens']}  (train tokens: {evaluation['train_tokens']})")
    for name in ("float", "quantized", "unigram"):
        scores = evaluation[name]
        typer.echo(f"  {name:10} top-1 {scores['top1_accuracy']:7.2%}   perplexity {scores['perplexity']:9.2f}")
    typer.echo(f"trained {evaluation['steps']} steps in {evaluation['train_seconds']} s (seed {seed})")
