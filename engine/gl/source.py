"""A kernel's GLSL source as the driver compiles it: `#version`, the kernel's extensions, the constants as
`#define`s (the shared format numbers, the binding points, the local size, the model's and the executor's
constants), the kernel's shared arrays, then glsl/<shader>.comp with its `#include`s resolved. No GL here."""

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..constants import SHADER_CONSTANTS
from ..errors import PxglError
from ..kernel import Kernel
from ..resources import resource_dir

GLSL_VERSION = "#version 430"
INCLUDE = re.compile(r'^#include\s+"([\w.]+)"\s*$', re.MULTILINE)


def glsl_literal(value: int | float | tuple) -> str:
    """A constant as GLSL text; a tuple becomes a comma-separated list (an array initializer's body)."""
    if isinstance(value, tuple):
        return ", ".join(glsl_literal(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"shader constant {value!r} is not a number")
    if isinstance(value, int):
        return str(value)
    return f"{float(np.float32(value)):.9e}"  # nine digits round-trip a float32 exactly


def kernel_defines(kernel: Kernel, constants: Mapping[str, int | float], local_size: int) -> dict[str, str]:
    """Every #define a kernel is compiled with; a name given twice is a programming error."""
    defines: dict[str, str] = {}
    for table in (SHADER_CONSTANTS, kernel.binding_defines(), {"LOCAL_SIZE": local_size}, constants):
        for name, value in table.items():
            if name in defines:
                raise ValueError(f"kernel {kernel.shader}: constant {name} is defined twice")
            defines[name] = glsl_literal(value)
    return defines


def kernel_source(kernel: Kernel, defines: Mapping[str, str]) -> str:
    directory = resource_dir("glsl")
    body = _with_includes(directory / f"{kernel.shader}.comp", directory, seen=set())
    lines = [GLSL_VERSION]
    lines += [f"#extension {name} : require" for name in kernel.extensions]
    lines += [f"#define {name} {value}" for name, value in defines.items()]
    lines += [f"shared {s.type} {s.name}[{s.length}];" for s in kernel.shared]
    return "\n".join(lines) + f"\n#line 1\n{body}"


def _with_includes(path: Path, directory: Path, seen: set[str]) -> str:
    if path.name in seen:
        raise PxglError(f"glsl/{path.name}: #include cycle")
    seen = seen | {path.name}
    text = path.read_text(encoding="utf-8")
    return INCLUDE.sub(lambda m: _with_includes(directory / m.group(1), directory, seen), text)
