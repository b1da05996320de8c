"""How to add one of pxgl's optional extras (safetensors, serve, ray) to this install. pxgl is not on the
package index, so `pip install 'pxgl[serve]'` fails; the command names what this pxgl was installed from,
as pip recorded it (PEP 610's direct_url.json): its checkout or its wheel."""

import json
import shlex
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import __version__


def install_command(extra: str) -> str:
    """The pip command that adds `extra`: from the checkout or wheel this pxgl came from while it is still
    there, else the two forms, from a checkout and from a built wheel."""
    origin = installed_from()
    if origin is None:
        return (
            f"pip install '.[{extra}]' in a pxgl checkout, or pip install "
            f"'pxgl-{__version__}-py3-none-any.whl[{extra}]' with its wheel"
        )
    path, editable = origin
    return f"pip install {'-e ' if editable else ''}{shlex.quote(f'{path}[{extra}]')}"


def installed_from() -> tuple[Path, bool] | None:
    """The local folder or wheel this pxgl was installed from, and whether the install is editable; None
    when pip recorded none (a copy on the path, an index or a URL) or it is gone."""
    # the first record: a checkout's own pxgl.egg-info (setuptools leaves one) may come first on the path
    records = (d.read_text("direct_url.json") for d in metadata.distributions(name="pxgl"))
    try:
        record = json.loads(next((text for text in records if text), "null"))
        url = urlparse(record["url"])
        editable = bool(record.get("dir_info", {}).get("editable"))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    path = Path(unquote(url.path))
    if url.scheme != "file" or not path.exists():
        return None
    return path, editable
