"""The GPU executors of version 2 (docs/FORMATS.md §14): `passes` (Model A), one GLSL pass per operation kind
over a float16 KV cache on the GPU (executor.py), its kernels' declarations (kernels.py) and their loop
bounds (loops.py)."""

from .executor import PassesTransformer, Prefill, prediction_pixels
from .loops import LoopPlan, plan_loops

__all__ = ["LoopPlan", "PassesTransformer", "Prefill", "plan_loops", "prediction_pixels"]
