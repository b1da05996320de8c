"""Random models for tests, opened by pxgl: the reference writer (tests/reference/models.py) puts them on
disk, pxgl's own reader loads them."""

from pathlib import Path

import numpy as np
from pxgl.loading import load_model
from pxgl.model import Model

from tests.reference.models import params_at, random_rows, write_random_model

__all__ = ["params_of", "random_model", "random_rows"]


def random_model(directory: Path, rng: np.random.Generator, *dims, **named) -> Model:
    """write_random_model's model (same arguments), loaded by pxgl."""
    return load_model(write_random_model(directory, rng, *dims, **named))


def params_of(model: Model) -> dict[str, np.ndarray]:
    """The oracle's float32 weights of a model written to disk (weights .pxi + meta beside it)."""
    return params_at(Path(model.source))
