"""`pxgl train`: a member of the pixellm family learned on the CPU (numpy), written as pixels."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from .app import app
from .options import ForceOption, JsonOption
from .report import emit_json


def widths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise PxglError(f"--hidden {text!r}: give the layer widths as integers, e.g. 256,256") from None
    return values


@app.command()
def train(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="UTF-8 text files; blank lines separate documents. Default: pxgl's frozen corpus."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Weights .pxi to write (meta, tokenizer beside) [pixellm.pxi].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds the splits, the initial weights, the batches and dropout.")] = 0,
    split_seed: Annotated[
        int | None, typer.Option(help="Seeds the splits instead of --seed: compare training seeds on one text.")
    ] = None,
    vocab: Annotated[int | None, typer.Option(help="Tokenizer vocabulary (256..65536).")] = None,
    context: Annotated[
        str | None, typer.Option(help="How the last tokens become the first layer's input: mean, concat, attention.")
    ] = None,
    window: Annotated[int | None, typer.Option(help="Tokens of context (1..16384).")] = None,
    concat: Annotated[int | None, typer.Option(help="attention: the last embeddings set beside the head.")] = None,
    head: Annotated[int | None, typer.Option(help="attention: the head's width.")] = None,
    embed: Annotated[int | None, typer.Option(help="Embedding width.")] = None,
    hidden: Annotated[
        str | None, typer.Option(help="Hidden layer widths, first to last, e.g. 256,256 (1 to 4).")
    ] = None,
    residual: Annotated[
        bool | None, typer.Option("--residual/--no-residual", help="Equal-width layers add their input.")
    ] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout on every hidden layer's output.")] = None,
    input_dropout: Annotated[float | None, typer.Option(help="Dropout on the first layer's input.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Decoupled weight decay (AdamW).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the training positions.")] = None,
    steps: Annotated[int | None, typer.Option(help="Exactly this many Adam steps (overrides --epochs).")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after this many validations without a new best.")] = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            min=1, help="Save the run's state beside --out every this many steps (and on Ctrl-C); removed at the end."
        ),
    ] = 500,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run a checkpoint saved (NAME.checkpoint.npz), with that run's own options."),
    ] = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Train a pixellm model on the CPU (numpy): BPE tokenizer, model, uint8 quantization, and its scores on
    the held-out split (docs/FORMATS.md §9). Options left out take the bundled pixellm_v1's recipe."""
    from rich.console import Console
    from rich.progress import Progress

    from ..output_kinds import model_set
    from ..outputs import check_writes
    from ..train import TrainConfig, TrainingInterrupted, checkpoint_path
    from ..train import resume as resume_training
    from ..train import train as run_training

    if context is not None and context.isdigit():
        raise PxglError(
            f"--context {context}: the context is a mode (mean, concat, attention); its number of tokens is "
            f"--window {context}"
        )
    given = {
        "vocab_size": vocab, "context": context, "window": window, "concat": concat, "head_dim": head,
        "embed_dim": embed, "hidden": widths(hidden) if hidden is not None else None, "residual": residual,
        "dropout": dropout, "input_dropout": input_dropout, "weight_decay": weight_decay, "lr": lr,
        "epochs": epochs, "steps": steps, "patience": patience,
    }  # fmt: skip
    if resume is not None:
        options = [name for name, value in given.items() if value is not None]
        options += ["files"] if files else []
        options += ["seed"] if seed != 0 else []  # its default: a --seed 0 given cannot be told from none
        options += ["split_seed"] if split_seed is not None else []
        options += ["out"] if out is not None else []
        if options:
            others = ", ".join(options)
            raise PxglError(f"--resume {resume}: the run continues with its own options; leave out {others}")
    weights = out if out is not None else Path("pixellm.pxi")
    config = TrainConfig(
        out=weights,
        files=tuple(files or ()),
        seed=seed,
        split_seed=split_seed,
        **{k: v for k, v in given.items() if v is not None},
    )
    if resume is None:  # a resumed run's outputs are its checkpoint's, checked when it is read
        written = model_set(weights, weights.with_name(config.tokenizer_name), default=out is None)
        check_writes(written, config.files, force)
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=as_json or not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            if resume is not None:
                config, evaluation = resume_training(resume, progress, checkpoint_every, force)
            else:
                evaluation = run_training(config, progress, checkpoint_every)
        except TrainingInterrupted as stop:
            bar.stop()
            typer.echo(f"{stop}; its state is saved in {stop.path}", err=True)
            typer.echo(f"continue with: pxgl train --resume {stop.path}", err=True)
            raise SystemExit(130) from None
        except KeyboardInterrupt:
            bar.stop()
            saved = resume or checkpoint_path(config.out)
            if saved.exists():
                typer.echo(f"interrupted; continue from the last checkpoint: pxgl train --resume {saved}", err=True)
            else:
                typer.echo("interrupted before any checkpoint; no model was written", err=True)
            raise SystemExit(130) from None
    if as_json:
        emit_json(evaluation)
        return
    typer.echo(f"{config.out}: {config.architecture().describe()}; meta and {config.tokenizer_name} beside it")
    positions = evaluation["positions"]
    counts = {"train": positions["train"], "validation": positions["validation"], "held-out": positions["heldout"]}
    typer.echo("positions: " + "  ".join(f"{name} {count:,}" for name, count in counts.items()))
    for name, scores in (
        ("held-out", evaluation["heldout"]["quantized"]),
        ("  float", evaluation["heldout"]["float"]),
        ("unigram", evaluation["unigram"]),
    ):
        typer.echo(
            f"  {name:9} top-1 {scores['top1']:7.2%}   bits/byte {scores['bits_per_byte']:.4f}   "
            f"perplexity {scores['perplexity']:9.2f}"
        )
    run = evaluation["training"]
    typer.echo(
        f"trained {run['steps']} steps (best at {run['best_step']}) in {evaluation['train_seconds']} s, "
        f"seed {config.seed}"
    )
