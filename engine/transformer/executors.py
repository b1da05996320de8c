"""Which GPU executors run a version-2 model, by the names `-x` takes (docs/FORMATS.md §14.4). An executor joins
with one line in EXECUTORS (its class imported when an engine opens, so choosing one touches no GPU) and its
place in AUTO_ORDER; `auto` takes the first in that order that runs the model on this GPU: one whose class
has no `refusal(spec, gpu)`, or whose refusal is None."""

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import PxglError

if TYPE_CHECKING:  # the front door chooses by name: no GL module loads before an engine opens
    from ..gl import GLBackend
    from .meta import TransformerSpec

AUTO = "auto"


def _passes() -> type:
    from .gpu import PassesTransformer

    return PassesTransformer


def _fused() -> type:
    from .fused import FusedTransformer

    return FusedTransformer


def _pxvm() -> type:
    from .one_sequence import PxvmSequence

    return PxvmSequence


EXECUTORS: dict[str, Callable[[], type]] = {"passes": _passes, "pxvm": _pxvm, "fused": _fused}
AUTO_ORDER = ("passes",)
"""`auto`'s preference, fastest first: passes alone (fused is left out: on llvmpipe passes' projections are
faster today)."""


def check_transformer_executor(name: str, source: str) -> str:
    """A name `-x` gave, refused in one line when no version-2 executor of this pxgl has it."""
    if name != AUTO and name not in EXECUTORS:
        raise PxglError(
            f"{source}: the {name} executor does not run version-2 models in this pxgl; it runs them on "
            f"{', '.join([AUTO, *EXECUTORS])}"
        )
    return name


def resolve_transformer_executor(name: str, spec: "TransformerSpec", gpu: "GLBackend") -> tuple[str, type]:
    """The executor that runs: the one named, else `auto`'s first that runs the model here."""
    if name != AUTO:
        return name, EXECUTORS[name]()
    for candidate in AUTO_ORDER:
        cls = EXECUTORS[candidate]()
        refusal = getattr(cls, "refusal", None)
        if refusal is None or refusal(spec, gpu) is None:
            return candidate, cls
    raise PxglError(f"no version-2 executor of this pxgl runs this model on {gpu.renderer}")
