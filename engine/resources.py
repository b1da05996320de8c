"""Where the bundled shaders and models live, installed (wheel) or in a source checkout, and the bundled
models by name."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
CARTRIDGE_SUFFIX = ".pxa"
"""A cartridge's file suffix (engine/cartridge.py reads them; here so that a .pxi model never loads that module)."""
BUNDLED = ("pixellm_v1", "pixellm_v0")
"""The bundled models, the default first (FORMATS §2: pixellm_v0 is the vision's model, pixellm_v1 the
better family member)."""


def resource_dir(name: str) -> Path:
    """`glsl` or `assets`: inside the installed package, else beside it in the source tree."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pxgl resource folder {name!r} is missing from the installation")


def bundled_models() -> dict[str, Path]:
    """Name → weights .pxi of every bundled model this installation holds, the default first."""
    assets = resource_dir("assets")
    return {name: assets / f"{name}.pxi" for name in BUNDLED if (assets / f"{name}.pxi").is_file()}


def bundled_model(name: str | None = None) -> Path:
    """A bundled model's weights by name (a cartridge by name + .pxa); the default when no name is given."""
    models = bundled_models()
    if name is None:
        return next(iter(models.values()))
    stem = name.removesuffix(CARTRIDGE_SUFFIX)
    path = models[stem]
    return path.with_suffix(CARTRIDGE_SUFFIX) if name.endswith(CARTRIDGE_SUFFIX) else path


def is_bundled_name(name: str) -> bool:
    return name.removesuffix(CARTRIDGE_SUFFIX) in bundled_models()
