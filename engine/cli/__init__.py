"""The `pxgl` command line: one command per verb, each parse → open → run → report; bad input is one red
line and exit status 2.

    app.py      the Typer app          options.py  options several verbs share
    report.py   JSON lines, answer lines, progress bars
    predict.py  infer, run             files.py    encode, decode, pack, inspect, info
    pxvm.py     compile, disasm, asm   see.py      viz          train.py  train
    score.py    eval           interchange.py  import, export
    generate.py generate       serve.py    serve          evolve.py   evolve
    chat.py     chat
    cache.py    cache list, cache clear"""

import atexit
import os
import sys
import threading

import typer

from ..errors import PxglError
from . import cache, chat, evolve, files, generate, interchange, predict, pxvm, score, see, serve, train
from .app import app

VERBS = (cache, chat, evolve, files, generate, interchange, predict, pxvm, score, see, serve, train)
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


def console() -> None:
    """The `pxgl` console script and `python -m pxgl.cli`: main(), then the process ends without tearing the
    interpreter down. That teardown (every module freed, the GL driver's libraries finalized) took ~50 ms of
    a cold `pxgl infer` on 2 cores. atexit handlers still run and output is flushed first; the usual exit is
    kept while other threads run (they would be joined) or where flushing fails."""
    try:
        main()
    except SystemExit as done:
        if not isinstance(done.code, int) or threading.active_count() > 1:
            raise
        atexit._run_exitfuncs()  # and clears them: the usual exit, if it still comes, does not run them again
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:  # None where the process started with the descriptor closed
                    stream.flush()
        except (OSError, ValueError):  # ValueError: a stream closed by the command
            raise done from None
        os._exit(done.code)


def fail(message: str) -> None:
    """Bad input: one red line, exit status 2."""
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)
    raise SystemExit(2) from None


def is_usage_error(error: Exception) -> bool:
    """A command line click could not parse (click's own UsageError, or the copy a typer release carries)."""
    return any(cls.__name__ == "UsageError" for cls in type(error).__mro__) and hasattr(error, "format_message")


__all__ = ["VERBS", "app", "console", "main"]
