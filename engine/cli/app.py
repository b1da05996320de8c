"""The Typer application every command module registers its verbs on, and its global options."""

from typing import Annotated

import typer

from .. import __version__

app = typer.Typer(
    help="pxgl: run pixel-encoded models on the GPU. Prompts, weights, compute and answers are all pixels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"pxgl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help="Print pxgl's version and exit.")
    ] = False,
) -> None:
    """pxgl: run pixel-encoded models on the GPU. Prompts, weights, compute and answers are all pixels."""
