"""Writing the visuals: everything rendered in memory first, then each file written atomically."""

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from ..pxi import atomic_write
from .page import index_html
from .sheet import contact_sheet
from .trace import DataImage, TraceView


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PxglError(f"{out_dir}: exists and is not a folder; give a folder for the visuals")


def write_visuals(out_dir: Path, view: TraceView | None, weights: DataImage | None = None) -> dict[str, Any]:
    """Render everything in memory, then write each file atomically; returns the viz.json record."""
    check_out_dir(out_dir)
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
    for name, data in files.items():
        atomic_write(out_dir / name, lambda tmp, data=data: tmp.write_bytes(data))
    return record
