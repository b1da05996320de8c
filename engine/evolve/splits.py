"""The run's three splits of its corpus (docs/FORMATS.md §9, §13): the trainer learns on `train`, the search
chooses on `selection` (the trainer's validation split, carved from what held-out leaves), and only the
promotion reads `held-out`."""

from pathlib import Path
from typing import Any

from ..corpus import default_corpus, file_corpus, three_way_split


def corpus_splits(files: tuple[Path, ...], split: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(train, selection, held-out) documents, exactly as `pxgl train` splits them with the same settings."""
    corpus = file_corpus(list(files)) if files else default_corpus()
    return three_way_split(corpus.documents, split["seed"], split["heldout_fraction"], split["validation_fraction"])
