"""The executors, side by side: each computes the same forward pass (docs/FORMATS.md §3) its own way, built
as cls(gpu, ExecutorInputs, tuning=None) and offering the Executor protocol (protocol.py)."""

from .fused import FusedExecutor
from .passes import PassesExecutor
from .protocol import Executor, ExecutorInputs, LeanExecutor, Trace
from .pxvm import PxvmExecutor

EXECUTORS: dict[str, type[Executor]] = {
    "passes": PassesExecutor,
    "pxvm": PxvmExecutor,
    "fused": FusedExecutor,
}
"""Executor name → class: what `-x/--executor` and a cartridge's manifest may name."""
DEFAULT_EXECUTOR = "passes"

__all__ = ["DEFAULT_EXECUTOR", "EXECUTORS", "Executor", "ExecutorInputs", "LeanExecutor", "Trace"]
