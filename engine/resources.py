"""Where the bundled shaders and model live, installed (wheel) or in a source checkout."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`glsl` or `assets`: inside the installed package, else beside it in the source tree."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pxgl resource folder {name!r} is missing from the installation")


def bundled_model() -> Path:
    return resource_dir("assets") / "pixellm_v0.pxi"
