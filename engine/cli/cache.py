"""`pxgl cache list` and `pxgl cache clear`: what engines keep on disk between runs (engine/cache.py)."""

import time
from pathlib import Path

import typer

from ..errors import PxglError
from .app import app
from .options import JsonOption
from .report import emit_json

cache_app = typer.Typer(
    help="The on-disk cache of the fused executor's prepared weights: a later engine of the same model on the same "
    "GPU reads them instead of computing them again. Its folder is PXGL_CACHE_DIR (off: no cache), else "
    "$XDG_CACHE_HOME/pxgl, else ~/.cache/pxgl; it holds at most PXGL_CACHE_MAX_MB megabytes (pxgl cache list says "
    "how many), the least recently used entries evicted first.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")
"""What an entry's note says (null in --json, 'unknown' in words, for an entry without one)."""


def megabytes(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MB" if size >= 1 << 20 else f"{size / 1024:,.1f} KB"


def shown(text: str, length: int = 80) -> str:
    """A note read from the cache folder (anyone who can write there wrote it), printable and short."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= length else text[: length - 1] + "…"


def cache_folder() -> Path | None:
    """The cache's folder, or None (said on stderr) when the cache is off."""
    from ..cache import cache_dir

    folder = cache_dir()
    if folder is None:
        typer.echo("the cache is off (PXGL_CACHE_DIR=off): nothing is kept", err=True)
    return folder


@cache_app.command("list")
def list_entries(as_json: JsonOption = False) -> None:
    """List the cache's entries, the most recently used first: size, when last used, and the model, architecture
    and GPU each was prepared for; then the folder, its total and its bound. --json: one line per entry."""
    from ..cache import ABOUT_KEYS, entries, max_bytes

    folder = cache_folder()
    if folder is None:
        return
    try:
        found = entries(folder)[::-1]
    except OSError as e:
        raise PxglError(f"{folder}: cannot read the cache folder ({e.strerror or e})") from None
    for entry in found:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.last_used))
        if as_json:
            about = {key: entry.about.get(key) for key in ABOUT_KEYS}
            emit_json({"key": entry.key, "bytes": entry.bytes, "last_used": used, **about})
        else:
            about = {key: shown(entry.about.get(key, f"unknown {key}")) for key in ABOUT_KEYS}
            typer.echo(f"{megabytes(entry.bytes):>10}  {used}  {about['model']}: {about['architecture']}")
            typer.echo(f"{'':10}  {entry.key[:16]}…  on {about['renderer']}")
    if not as_json:
        total = sum(entry.bytes for entry in found)
        typer.echo(
            f"{folder}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, {megabytes(total)} of at most "
            f"{megabytes(max_bytes())} (PXGL_CACHE_MAX_MB)"
        )


@cache_app.command()
def clear(as_json: JsonOption = False) -> None:
    """Delete every entry of the cache (and what a killed pxgl left half-written there); engines compute what
    they need again. Files pxgl did not name are left alone."""
    from ..cache import clear as clear_folder

    folder = cache_folder()
    if folder is None:
        return
    try:
        removed, size = clear_folder(folder)
    except OSError as e:
        raise PxglError(f"{folder}: cannot clear the cache folder ({e.strerror or e})") from None
    if as_json:
        emit_json({"folder": str(folder), "removed": removed, "bytes": size})
        return
    typer.echo(f"{folder}: removed {removed} entr{'y' if removed == 1 else 'ies'} ({megabytes(size)})")
