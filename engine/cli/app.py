"""The Typer application every command module registers its verbs on."""

import typer

app = typer.Typer(
    help="pxgl: run pixel-encoded models on the GPU. Prompts, weights, compute and answers are all pixels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
