"""The executors, side by side: each computes the same forward pass (docs/FORMATS.md §3) its own way, built
as cls(gpu, ExecutorInputs, tuning=None) and offering the Executor protocol (protocol.py)."""

from ..gl import GLBackend
from ..spec import ModelSpec
from .fused_config import refusal
from .fused_resident import ResidentFusedExecutor
from .passes import PassesExecutor
from .protocol import Executor, ExecutorInputs, LeanExecutor, ScoringExecutor, Trace
from .pxvm import PxvmExecutor

EXECUTORS: dict[str, type[Executor]] = {
    "passes": PassesExecutor,
    "pxvm": PxvmExecutor,
    "fused": ResidentFusedExecutor,
}
"""Executor name → class."""
AUTO = "auto"
"""The fastest executor that runs the model on this GPU: fused where it supports it, else passes."""
NAMES = (AUTO, *EXECUTORS)
"""What `-x/--executor` and a cartridge's manifest may name."""
DEFAULT_EXECUTOR = AUTO


def resolve(name: str, spec: ModelSpec, gpu: GLBackend) -> str:
    """An executor name with `auto` decided for this model on this GPU."""
    if name != AUTO:
        return name
    return "fused" if refusal(spec, gpu) is None else "passes"


__all__ = [
    "AUTO",
    "DEFAULT_EXECUTOR",
    "EXECUTORS",
    "NAMES",
    "Executor",
    "ExecutorInputs",
    "LeanExecutor",
    "ScoringExecutor",
    "Trace",
    "resolve",
]
