"""The fused executor of version 2 (docs/FORMATS.md §14.4): a layer in five dispatches (executor.py), its
kernels' declarations and loop splits (kernels.py), its weights packed per dispatch (packs.py)."""

from .executor import FusedTransformer
from .kernels import FusedPlan, plan_fused

__all__ = ["FusedPlan", "FusedTransformer", "plan_fused"]
