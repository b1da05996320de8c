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
        code = app(standalone_mode=False)
    except PxglError as e:
        fail(str(e))
    except Exception as e:
        if not is_usage_error(e):
            raise
        message = e.format_message()  # type: ignore[attr-defined]
        if not message:  # no arguments at all: the help was the answer
            raise SystemExit(2) from None
        command = getattr(getattr(e, "ctx", None), "command_path", "pxgl")
        fail(f"{message} (see {command} --help)")
    raise SystemExit(code if isinstance(code, int) else 0)


def fail(message: str) -> None:
    """Bad input: one red line, exit status 2."""
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)
    raise SystemExit(2) from None


def is_usage_error(error: Exception) -> bool:
    """A command line click could not parse (click's own UsageError, or the copy a typer release carries)."""
    return any(cls.__name__ == "UsageError" for cls in type(error).__mro__) and hasattr(error, "format_message")


__all__ = ["VERBS", "app", "main"]
