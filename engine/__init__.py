"""pxgl: a GPU-first, pixel-native inference engine.

from pxgl import Engine, open_model
with Engine(open_model("assets/pixellm_v0.pxi")) as engine:
    pixels = engine.predict_ids([[261, 302, 99]])"""

__version__ = "0.2.0"


def __getattr__(name: str):
    """The front door and the engine, imported when first asked for (so `import pxgl` stays light)."""
    if name in ("open_model", "load_model"):
        from . import loading

        return getattr(loading, name)
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module 'pxgl' has no attribute {name!r}")


__all__ = ["Engine", "__version__", "load_model", "open_model"]
