"""The GPU executors of version 2 (docs/FORMATS.md §14): the shared base (base.py: slots, KV caches, prefill,
batched decode) with choosing tokens on the GPU (choose.py), and `passes` (Model A), one GLSL pass per operation
kind (executor.py), its kernels' declarations (kernels.py) and their loop bounds (loops.py)."""

from .base import GPUTransformer, Prefill, Step
from .choose import Choice, Chosen
from .executor import PassesTransformer, prediction_pixels
from .loops import LoopPlan, plan_choose, plan_loops

__all__ = [
    "Choice",
    "Chosen",
    "GPUTransformer",
    "LoopPlan",
    "PassesTransformer",
    "Prefill",
    "Step",
    "plan_choose",
    "plan_loops",
    "prediction_pixels",
]
