"""What every executor (Model A passes, pxVM, ...) offers the engine, and what they share."""

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import PxglError
from .spec import ModelSpec

POISON_FLOAT = np.float32(np.nan)
POISON_BYTE = 0xEE
"""Fresh outputs hold garbage on purpose, so a pixel a run fails to write cannot pass a check."""
WRITTEN_ALPHA = 255
"""Every shader stores prediction pixels with this alpha; anything else was never written."""


@dataclass(frozen=True)
class Trace:
    """The textures of one GPU run, read back as they are (for tests and visuals). An executor that has
    no such intermediate leaves it None."""

    tokens: np.ndarray
    """(B, context_window, 3) uint8: the token texture the GPU read (each prompt's last tokens)."""
    embed: np.ndarray | None
    """(B, embed_dim) float32: T_embed."""
    hidden: np.ndarray | None
    """(B, hidden_dim) float32: T_hidden."""
    logits: np.ndarray | None
    """(B, side, side) float32: each prompt's cell of T_logits; cells past the vocabulary are unwritten."""
    prediction: np.ndarray
    """(B, 1, 3) uint8: the prediction pixels."""


class Executor(Protocol):
    max_tile: int
    """Most prompts one `run` takes (set from the GPU's limits)."""

    def run(self, tails: np.ndarray) -> np.ndarray:
        """(n, context_window, 3) token texture rows (each prompt's last tokens, left-aligned, zero-padded)
        → (n, 3) uint8 prediction pixels."""
        ...

    def trace(self, tails: np.ndarray) -> Trace: ...

    def poison(self) -> None:
        """Fill the executor's textures with garbage, so that a pixel a run fails to write cannot pass."""
        ...


def written_predictions(rgba: np.ndarray) -> np.ndarray:
    """(n, 1, 4) RGBA8 prediction pixels read back → (n, 1, 3); a pixel the GPU did not write is an error,
    never an answer."""
    unwritten = np.flatnonzero(rgba[:, 0, 3] != WRITTEN_ALPHA)
    if unwritten.size:
        raise PxglError(
            f"the GPU left {unwritten.size} prediction pixel(s) unwritten (first: prompt {unwritten[0]}); "
            "its driver misbehaved: try another --device or --executor"
        )
    return rgba[:, :, :3]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def model_constants(spec: ModelSpec) -> dict[str, int | float]:
    """What every shader needs to know about the model, from its meta; nothing is hard-coded in GLSL."""
    constants: dict[str, int | float] = {
        "VOCAB": spec.vocab_size,
        "EMBED_DIM": spec.embed_dim,
        "HIDDEN_DIM": spec.hidden_dim,
        "CONTEXT_WINDOW": spec.context_window,
        "WEIGHTS_WIDTH": spec.image_width,
        "LOGITS_SIDE": spec.logits_side,
    }
    for tensor in spec.tensors.values():
        prefix = tensor.name.upper()
        constants[f"{prefix}_OFFSET"] = tensor.offset
        constants[f"{prefix}_SCALE"] = tensor.scale
        constants[f"{prefix}_ZERO"] = float(tensor.zero_point)
    return constants
