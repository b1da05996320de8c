"""The `pxgl` command line: one command per verb, each parse → open → run → report; bad input is one red
line and exit status 2.

    app.py      the Typer app          options.py  options several verbs share
    report.py   JSON lines, answer lines, progress bars
    predict.py  infer, run             files.py    encode, decode, pack, inspect, info
    pxvm.py     compile, disasm, asm   see.py      viz          train.py  train
    score.py    eval           interchange.py  import, export
    generate.py generate       serve.py    serve          evolve.py   evolve"""

import typer

from ..errors import PxglError
from . import evolve, files, generate, interchange, predict, pxvm, score, see, serve, train
from .app import app

VERBS = (evolve, files, generate, interchange, predict, pxvm, score, see, serve, train)
"""The modules whose commands register on `app` when imported."""


def main() -> None:
    try:
        app()
    except PxglError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


__all__ = ["VERBS", "app", "main"]
