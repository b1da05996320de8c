"""Writing the visuals: everything rendered in memory first, then written as one set (index.html and
viz.json renamed into place last)."""

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from ..output_kinds import NPZ, PNG, VIZ_PAGE, VIZ_RECORD
from ..outputs import check_output_dir, write_files
from .page import index_html
from .sheet import contact_sheet
from .trace import DataImage, TraceView

WRITES = {"*.png": PNG, "trace.npz": NPZ, "index.html": VIZ_PAGE, "viz.json": VIZ_RECORD}
"""The names write_visuals may give its files, and their kinds: an output folder's files of these names are
its outputs."""


def write_visuals(out_dir: Path, view: TraceView | None, weights: DataImage | None = None) -> dict[str, Any]:
    """Render everything in memory, then write the files as one set; returns the viz.json record."""
    check_output_dir(out_dir, "--out")
    images = dict(view.images) if view is not None else {}
    if weights is not None:
        images["weights"] = weights
    pngs = {key: image.png() for key, image in images.items()}
    files: dict[str, bytes] = {f"{key}.png": png for key, png in pngs.items()}
    record: dict[str, Any] = {"dir": str(out_dir)}
    if view is not None:
        overview = io.BytesIO()
        contact_sheet(view).save(overview, "PNG")
        files["overview.png"] = overview.getvalue()
        arrays = io.BytesIO()
        np.savez(arrays, **view.arrays)
        files["trace.npz"] = arrays.getvalue()
        record |= view.record()
    if weights is not None:
        record["weights"] = weights.layout()
    files["index.html"] = index_html(view, weights, pngs).encode("utf-8")
    record["files"] = sorted([*files, "viz.json"])
    files["viz.json"] = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PxglError(f"{out_dir}: cannot create the folder ({e.strerror or e})") from None
    last = ("index.html", "viz.json")  # the page and the record name the images: they appear after them
    order = [name for name in files if name not in last] + list(last)
    write_files({out_dir / name: lambda tmp, data=files[name]: tmp.write_bytes(data) for name in order})
    return record
