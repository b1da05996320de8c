"""pxgl: a GPU-first, pixel-native inference engine.

from pxgl import Engine, Sampling, open_model
with Engine(open_model("assets/pixellm_v0.pxi")) as engine:
    pixels = engine.predict_ids([[261, 302, 99]])
    tokens = engine.generate([[261, 302, 99]], 8, Sampling(temperature=0.8, seed=1)).tokens"""

__version__ = "0.2.0"


def __getattr__(name: str):
    """The front door and the engine, imported when first asked for (so `import pxgl` stays light)."""
    if name in ("open_model", "load_model"):
        from . import loading

        return getattr(loading, name)
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name == "Sampling":
        from .generation import Sampling

        return Sampling
    raise AttributeError(f"module 'pxgl' has no attribute {name!r}")


__all__ = ["Engine", "Sampling", "__version__", "load_model", "open_model"]
