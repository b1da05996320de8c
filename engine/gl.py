"""The OpenGL backend: the one module that speaks GL. Context, limits, textures, shaders, dispatch.

Everything above it (passes, pxVM, engine) reads as data flow over `GLBackend` calls."""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import moderngl
import numpy as np

from engine.errors import PxglError
from engine.resources import resource_dir

GL_R32F = 0x822E
GL_RGBA8UI = 0x8D7C
REQUIRED_GL = 430
MIN_SHARED_MEMORY = 32768
"""Bytes of shared memory per work group that GL 4.3 guarantees (moderngl cannot query the real size)."""
INCLUDE = re.compile(r'^#include\s+"([\w.]+)"\s*$', re.MULTILINE)
SETUP_HINT = (
    "pxgl needs OpenGL 4.3 through EGL: on an NVIDIA machine the driver's EGL (libEGL_nvidia), elsewhere "
    "Mesa's llvmpipe (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"
)


@dataclass(frozen=True)
class Limits:
    max_texture_size: int
    max_work_group_count: tuple[int, int, int]
    max_work_group_size: tuple[int, int, int]
    max_work_group_invocations: int


Texture = moderngl.Texture
Shader = moderngl.ComputeShader


class GLBackend:
    """A headless GL 4.3+ context on EGL: allocate textures, compile compute shaders, dispatch them."""

    def __init__(self, device: int | None = None) -> None:
        if device is None and os.environ.get("PXGL_DEVICE"):
            try:
                device = int(os.environ["PXGL_DEVICE"])
            except ValueError:
                raise PxglError(f"PXGL_DEVICE={os.environ['PXGL_DEVICE']!r} is not a device number") from None
        options = {} if device is None else {"device_index": device}
        try:
            self.ctx = moderngl.create_context(standalone=True, backend="egl", require=REQUIRED_GL, **options)
        except Exception as e:  # glcontext raises plain Exceptions of several kinds
            where = "" if device is None else f" on EGL device {device}"
            reason = " ".join(str(e).split()) or type(e).__name__
            raise PxglError(f"no OpenGL 4.3 context{where} ({reason}); {SETUP_HINT}") from None
        info = self.ctx.info
        self.renderer: str = info["GL_RENDERER"]
        self.version: str = info["GL_VERSION"]
        self.limits = Limits(
            max_texture_size=int(info["GL_MAX_TEXTURE_SIZE"]),
            max_work_group_count=tuple(int(v) for v in info["GL_MAX_COMPUTE_WORK_GROUP_COUNT"]),
            max_work_group_size=tuple(int(v) for v in info["GL_MAX_COMPUTE_WORK_GROUP_SIZE"]),
            max_work_group_invocations=int(info["GL_MAX_COMPUTE_WORK_GROUP_INVOCATIONS"]),
        )
        self._shaders: dict[tuple[str, tuple[tuple[str, str], ...]], Shader] = {}

    # --- textures -------------------------------------------------------------------------------
    def check_size(self, width: int, height: int, what: str) -> None:
        side = self.limits.max_texture_size
        if not (1 <= width <= side and 1 <= height <= side):
            raise PxglError(f"{what}: {width}x{height} texture exceeds this GPU's limit of {side} per side")

    def uint_texture(self, pixels: np.ndarray, what: str) -> Texture:
        """An (h, w, c) uint8 array as an integer texture (GL_R/RG/RGB/RGBA8UI) read with texelFetch."""
        height, width, components = pixels.shape
        self.check_size(width, height, what)
        texture = self.ctx.texture((width, height), components, np.ascontiguousarray(pixels).tobytes(), dtype="u1")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)  # integer textures are incomplete otherwise
        return texture

    def uint_texture_empty(self, width: int, height: int, components: int, what: str) -> Texture:
        return self.uint_texture(np.zeros((height, width, components), dtype=np.uint8), what)

    def float_image(self, width: int, height: int, what: str) -> Texture:
        """An r32f texture used as an image (imageLoad/imageStore)."""
        self.check_size(width, height, what)
        texture = self.ctx.texture((width, height), 1, dtype="f4")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return texture

    def rgba8ui_image(self, width: int, height: int, what: str) -> Texture:
        self.check_size(width, height, what)
        texture = self.ctx.texture((width, height), 4, dtype="u1")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return texture

    @staticmethod
    def read_float(texture: Texture) -> np.ndarray:
        return np.frombuffer(texture.read(), dtype=np.float32).reshape(texture.height, texture.width)

    @staticmethod
    def read_uint8(texture: Texture) -> np.ndarray:
        """An integer texture as (height, width, components) uint8."""
        data = np.frombuffer(texture.read(alignment=1), dtype=np.uint8)
        return data.reshape(texture.height, texture.width, texture.components)

    @staticmethod
    def write(texture: Texture, data: np.ndarray) -> None:
        """Write rows 0..len(data)-1 of a texture (data shaped (rows, width[, components]))."""
        texture.write(np.ascontiguousarray(data).tobytes(), viewport=(0, 0, texture.width, data.shape[0]))

    # --- binding --------------------------------------------------------------------------------
    @staticmethod
    def bind_texture(texture: Texture, unit: int) -> None:
        texture.use(location=unit)

    @staticmethod
    def bind_image(texture: Texture, unit: int, *, read: bool, write: bool) -> None:
        # An explicit format: without it Mesa stored 255 everywhere in an rgba8 image.
        fmt = GL_R32F if texture.dtype == "f4" else GL_RGBA8UI
        texture.bind_to_image(unit, read=read, write=write, format=fmt)

    # --- shaders and dispatch -------------------------------------------------------------------
    def compile(self, name: str, constants: dict[str, int | float]) -> Shader:
        """glsl/<name>.comp with its #includes resolved and the constants as #defines; cached."""
        defines = tuple(sorted((k, glsl_literal(v)) for k, v in constants.items()))
        key = (name, defines)
        if key not in self._shaders:
            source = shader_source(name, dict(defines))
            try:
                self._shaders[key] = self.ctx.compute_shader(source)
            except moderngl.Error as e:
                raise PxglError(f"glsl/{name}.comp failed to compile on {self.renderer}: {e}") from None
        return self._shaders[key]

    def check_groups(self, groups: tuple[int, int, int], what: str) -> None:
        for axis, (n, limit) in enumerate(zip(groups, self.limits.max_work_group_count, strict=True)):
            if not 1 <= n <= limit:
                raise PxglError(f"{what}: {n} work groups on axis {axis} exceed this GPU's limit of {limit}")

    def dispatch(self, shader: Shader, groups: tuple[int, int, int], what: str) -> None:
        self.check_groups(groups, what)
        shader.run(*groups)

    def barrier(self) -> None:
        self.ctx.memory_barrier()

    def finish(self) -> None:
        self.ctx.finish()


def glsl_literal(value: int | float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"shader constant {value!r} is not a number")
    if isinstance(value, int):
        return str(value)
    return f"{float(np.float32(value)):.9e}"  # nine digits round-trip a float32 exactly


def shader_source(name: str, defines: dict[str, str]) -> str:
    directory = resource_dir("glsl")
    body = _with_includes(directory / f"{name}.comp", directory, seen=set())
    header = "#version 430\n" + "".join(f"#define {k} {v}\n" for k, v in defines.items())
    return header + f"#line 1\n{body}"


def _with_includes(path: Path, directory: Path, seen: set[str]) -> str:
    if path.name in seen:
        raise PxglError(f"glsl/{path.name}: #include cycle")
    seen = seen | {path.name}
    text = path.read_text(encoding="utf-8")
    return INCLUDE.sub(lambda m: _with_includes(directory / m.group(1), directory, seen), text)


@contextmanager
def gl_errors(what: str) -> Iterator[None]:
    """Turn a GL failure in the middle of work (a lost context, out of memory) into a PxglError."""
    try:
        yield
    except moderngl.Error as e:
        raise PxglError(f"{what}: GPU error ({' '.join(str(e).split())})") from None
