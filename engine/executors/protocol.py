"""What every executor (Model A passes, pxVM, fused) offers the engine, the one shape they are built with,
and what they share."""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..constants import WRITTEN_ALPHA
from ..errors import PxglError
from ..gl import GLBackend, Texture
from ..kernel import Constants
from ..pxvm.program import Program
from ..spec import MODES, ModelSpec, Tensor

POISON_FLOAT = np.float32(np.nan)
"""Float textures start as NaN, so a value a run fails to write cannot pass a check."""


@dataclass(frozen=True)
class ExecutorInputs:
    """What every executor is built from (with the GPU): the model's spec, its weight texture on that GPU,
    and the validated pxVM program when the executor runs one."""

    spec: ModelSpec
    weights: Texture
    program: Program | None = None


@dataclass(frozen=True)
class Trace:
    """The textures of one GPU run, read back as they are (for tests and visuals). An executor that has
    no such intermediate leaves it None."""

    tokens: np.ndarray
    """(B, context_window, 3) uint8: the token texture the GPU read (each prompt's last tokens)."""
    context: np.ndarray | None
    """(B, context_dim) float32: T_context, the first layer's input x."""
    hidden: tuple[np.ndarray, ...] | None
    """(B, hidden[l]) float32 each: T_hidden[l], every hidden layer's output."""
    logits: np.ndarray | None
    """(B, side, side) float32: each prompt's cell of T_logits; cells past the vocabulary are unwritten."""
    prediction: np.ndarray
    """(B, 1, 3) uint8: the prediction pixels."""
    scores: np.ndarray | None = None
    """(B, context_window) float32: an attention context's scores q · k_j / sqrt(D), j < n counting back."""


class Executor(Protocol):
    """Built as cls(gpu, inputs, tuning=None); `tuning` is an executor's own work-shape settings."""

    max_tile: int
    """Most prompts one `run` takes (set from the GPU's limits)."""

    def run(self, tails: np.ndarray) -> np.ndarray:
        """(n, context_window, 3) token texture rows (each prompt's last tokens, left-aligned, zero-padded)
        → (n, 3) uint8 prediction pixels."""
        ...

    def trace(self, tails: np.ndarray) -> Trace: ...

    def poison(self) -> None:
        """Fill the executor's outputs with garbage, so that a pixel a run fails to write cannot pass."""
        ...

    def close(self) -> None:
        """Free what the executor holds on the GPU."""
        ...


@runtime_checkable
class LeanExecutor(Protocol):
    """An executor that also takes token ids directly, skipping the token texture (predict_one/_array)."""

    def run_one(self, ids: list[int]) -> np.ndarray:
        """A prompt's last ≤ context_window ids, each checked 0 ≤ id < vocab → its (3,) prediction pixel."""
        ...

    def run_ids(self, ids: np.ndarray) -> tuple[np.ndarray, int | None]:
        """(n, L) uint16 ids, not yet checked against the vocabulary → (n, 3) prediction pixels of each
        row's last context_window ids, and the first prompt holding an id ≥ vocab_size anywhere in its row
        (the pixels are then void) or None."""
        ...


@runtime_checkable
class ScoringExecutor(Protocol):
    """An executor that scores text (docs/FORMATS.md §9): log p(target) of each context."""

    def score(self, tails: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, context_window, 3) token rows, a row possibly empty (an empty context), and (n,) target ids →
        (n, 3) prediction pixels and (n,) float32 log-probabilities of the targets."""
        ...


def check_no_tuning(name: str, tuning: object) -> None:
    if tuning is not None:
        raise TypeError(f"the {name} executor takes no tuning, got {tuning!r}")


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


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def largest_pow2_group(gpu: GLBackend, wanted: int) -> int:
    """The largest power of two ≤ wanted that a work group of this GPU may have."""
    limits = gpu.limits
    allowed = min(wanted, limits.max_work_group_invocations, limits.max_work_group_size[0])
    return 1 << (allowed.bit_length() - 1)


CONTEXT_MODES = {f"MODE_{mode.upper()}": code for code, mode in enumerate(MODES)}
"""The context modes as the shaders compare them (CONTEXT_MODE == MODE_CONCAT, ...)."""


def tensor_constants(tensor: Tensor, prefix: str) -> dict[str, int | float]:
    """A tensor's place and quantization as PREFIX_OFFSET, PREFIX_SCALE, PREFIX_ZERO (glsl/weights.glsl)."""
    return {
        f"{prefix}_OFFSET": tensor.offset,
        f"{prefix}_SCALE": tensor.scale,
        f"{prefix}_ZERO": float(tensor.zero_point),
    }


def model_constants(spec: ModelSpec) -> Constants:
    """What every shader needs to know about the model, from its meta; nothing is hard-coded in GLSL."""
    context = spec.context
    constants: dict[str, int | float] = {
        "VOCAB": spec.vocab_size,
        "EMBED_DIM": spec.embed_dim,
        "CONTEXT_WINDOW": context.window,
        "CONTEXT_DIM": spec.context_dim,
        "CONTEXT_MODE": MODES.index(context.mode),
        **CONTEXT_MODES,
        "CONCAT": context.concat,
        "HEAD_DIM": max(context.head_dim, 1),
        "LAST_HIDDEN": spec.hidden[-1],
        "WEIGHTS_WIDTH": spec.image_width,
        "LOGITS_SIDE": spec.logits_side,
    }
    for tensor in spec.tensors.values():
        constants |= tensor_constants(tensor, tensor.name.upper().replace(".", "_"))
    return Constants(constants)
