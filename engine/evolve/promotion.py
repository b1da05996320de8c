"""After the search: the champion and the start model scored on the held-out split the search never read,
and the champion's cartridge published as RUN_DIR/champion.pxa when it wins (docs/FORMATS.md §13)."""

import shutil
from pathlib import Path
from typing import Any

from ..outputs import atomic_write
from .splits import corpus_splits


def heldout_scores(model: str | Path, files: tuple[Path, ...], split: dict[str, Any], device: int | None) -> dict:
    """A model's scores on the run's held-out documents, by the GPU executor (`pxgl eval`)."""
    from ..engine import Engine
    from ..evaluate import score
    from ..loading import open_model

    _, _, heldout = corpus_splits(files, split)
    runnable = open_model(model)
    with Engine(runnable, device=device) as engine:
        return score(engine, runnable.model.tokenizer, heldout).record()


def publish(cartridge: Path, champion: Path) -> None:
    atomic_write(champion, lambda tmp: shutil.copyfile(cartridge, tmp))
