"""The OpenGL backend: the one module that speaks GL. Context, limits, textures, shaders, dispatch.

Everything above it (passes, pxVM, engine) reads as data flow over `GLBackend` calls."""

import ctypes
import ctypes.util
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import moderngl
import numpy as np

from .errors import PxglError
from .resources import resource_dir

GL_R32F = 0x822E
GL_RGBA8UI = 0x8D7C
REQUIRED_GL = 430
INCLUDE = re.compile(r'^#include\s+"([\w.]+)"\s*$', re.MULTILINE)
SETUP_HINT = (
    "pxgl needs OpenGL 4.3 through EGL: on an NVIDIA machine the driver's EGL (libEGL_nvidia), elsewhere "
    "Mesa's llvmpipe (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"
)


GL_MAX_COMPUTE_SHARED_MEMORY_SIZE = 0x8262
GL_MAX_SHADER_STORAGE_BLOCK_SIZE = 0x90DE
GL_SHADER_STORAGE_BUFFER_OFFSET_ALIGNMENT = 0x90DF
GL_SHADER_STORAGE_BUFFER = 0x90D2
GL_MAP_READ_BIT = 0x0001
GL_MAP_WRITE_BIT = 0x0002
GL_MAP_PERSISTENT_BIT = 0x0040
GL_MAP_COHERENT_BIT = 0x0080
GL_CLIENT_STORAGE_BIT = 0x0200
GL_SYNC_GPU_COMMANDS_COMPLETE = 0x9117
GL_SYNC_FLUSH_COMMANDS_BIT = 0x0001
GL_ALREADY_SIGNALED = 0x911A
GL_CONDITION_SATISFIED = 0x911C
GL_WAIT_FAILED = 0x911D
GL_SHADER_STORAGE_BARRIER_BIT = 0x2000
GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT = 0x4000
GL_BUFFER_UPDATE_BARRIER_BIT = 0x0200
GL_PROGRAM_BINARY_LENGTH = 0x8741
SPIN_POLLS = 20000
"""Fence polls before a wait starts sleeping in the driver: spinning keeps single-prompt latency low."""
SLEEP_WAIT_NS = 1_000_000


@dataclass(frozen=True)
class Limits:
    max_texture_size: int
    max_work_group_count: tuple[int, int, int]
    max_work_group_size: tuple[int, int, int]
    max_work_group_invocations: int
    max_shared_memory: int
    """Bytes of shared memory a work group may declare."""
    max_storage_block_size: int
    """Bytes one shader storage buffer binding may span."""
    storage_offset_alignment: int
    """A storage buffer bound at an offset must start at a multiple of this."""


Texture = moderngl.Texture
Shader = moderngl.ComputeShader
Buffer = moderngl.Buffer


@dataclass(frozen=True)
class MappedBuffer:
    buffer: Buffer
    view: np.ndarray
    """(size,) uint8 over the mapped memory; valid for the buffer's life."""


class RawGL:
    """The few GL entry points moderngl does not wrap (integer queries, immutable buffer storage,
    persistent mapping, fences), called through ctypes on the current context."""

    def __init__(self) -> None:
        library = os.environ.get("GLCONTEXT_LINUX_LIBEGL") or ctypes.util.find_library("EGL") or "libEGL.so.1"
        egl = ctypes.CDLL(library)
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        c_uint, c_int64, c_void_p, c_size = ctypes.c_uint, ctypes.c_int64, ctypes.c_void_p, ctypes.c_ssize_t

        def entry(name: str, result, *arguments):
            address = egl.eglGetProcAddress(name.encode())
            if not address:
                raise PxglError(f"OpenGL entry point {name} is missing; {SETUP_HINT}")
            return ctypes.CFUNCTYPE(result, *arguments)(address)

        self._get_integer64 = entry("glGetInteger64v", None, c_uint, ctypes.POINTER(c_int64))
        self._gen_buffers = entry("glGenBuffers", None, ctypes.c_int, ctypes.POINTER(c_uint))
        self._bind_buffer = entry("glBindBuffer", None, c_uint, c_uint)
        self._buffer_storage = entry("glBufferStorage", None, c_uint, c_size, c_void_p, c_uint)
        self._map_buffer_range = entry("glMapBufferRange", c_void_p, c_uint, c_size, c_size, c_uint)
        self._fence_sync = entry("glFenceSync", c_void_p, c_uint, c_uint)
        self._client_wait_sync = entry("glClientWaitSync", c_uint, c_void_p, c_uint, ctypes.c_uint64)
        self._delete_sync = entry("glDeleteSync", None, c_void_p)
        self._get_error = entry("glGetError", c_uint)
        self.delete_buffer = entry("glDeleteBuffers", None, ctypes.c_int, ctypes.POINTER(c_uint))
        self.memory_barrier = entry("glMemoryBarrier", None, c_uint)
        self.flush = entry("glFlush", None)
        self._get_program_binary = entry(
            "glGetProgramBinary", None, c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
        )
        self._get_program_iv = entry("glGetProgramiv", None, c_uint, c_uint, ctypes.POINTER(ctypes.c_int))

    def integer(self, name: int) -> int:
        value = ctypes.c_int64()
        self._get_integer64(name, ctypes.byref(value))
        return value.value

    def mapped_storage(self, size: int) -> tuple[int, int]:
        """(buffer name, host address) of a new persistent, coherent, read-write buffer in host memory."""
        name = ctypes.c_uint()
        self._gen_buffers(1, ctypes.byref(name))
        self._bind_buffer(GL_SHADER_STORAGE_BUFFER, name.value)
        access = GL_MAP_READ_BIT | GL_MAP_WRITE_BIT | GL_MAP_PERSISTENT_BIT | GL_MAP_COHERENT_BIT
        self._buffer_storage(GL_SHADER_STORAGE_BUFFER, size, None, access | GL_CLIENT_STORAGE_BIT)
        address = self._map_buffer_range(GL_SHADER_STORAGE_BUFFER, 0, size, access)
        self._bind_buffer(GL_SHADER_STORAGE_BUFFER, 0)
        return name.value, (address or 0) if self._get_error() == 0 else 0

    def fence(self) -> int:
        return self._fence_sync(GL_SYNC_GPU_COMMANDS_COMPLETE, 0)

    def program_binary(self, program: int) -> bytes:
        length = ctypes.c_int()
        self._get_program_iv(program, GL_PROGRAM_BINARY_LENGTH, ctypes.byref(length))
        data = ctypes.create_string_buffer(max(length.value, 1))
        written, binary_format = ctypes.c_int(), ctypes.c_uint()
        self._get_program_binary(program, length.value, ctypes.byref(written), ctypes.byref(binary_format), data)
        return data.raw[: written.value]

    def wait_fence(self, sync: int) -> None:
        """Poll the fence (flushing once) and spin a while before letting the driver sleep."""
        wait, flush = self._client_wait_sync, GL_SYNC_FLUSH_COMMANDS_BIT
        try:
            for _ in range(SPIN_POLLS):
                status = wait(sync, flush, 0)
                if status in (GL_ALREADY_SIGNALED, GL_CONDITION_SATISFIED):
                    return
                if status == GL_WAIT_FAILED:
                    raise moderngl.Error("glClientWaitSync failed")
                flush = 0
            while (status := wait(sync, 0, SLEEP_WAIT_NS)) not in (GL_ALREADY_SIGNALED, GL_CONDITION_SATISFIED):
                if status == GL_WAIT_FAILED:
                    raise moderngl.Error("glClientWaitSync failed")
        finally:
            self._delete_sync(sync)


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
        self._gl = RawGL()
        info = self.ctx.info
        self.renderer: str = info["GL_RENDERER"]
        self.version: str = info["GL_VERSION"]
        self.limits = Limits(
            max_texture_size=int(info["GL_MAX_TEXTURE_SIZE"]),
            max_work_group_count=tuple(int(v) for v in info["GL_MAX_COMPUTE_WORK_GROUP_COUNT"]),
            max_work_group_size=tuple(int(v) for v in info["GL_MAX_COMPUTE_WORK_GROUP_SIZE"]),
            max_work_group_invocations=int(info["GL_MAX_COMPUTE_WORK_GROUP_INVOCATIONS"]),
            max_shared_memory=self._gl.integer(GL_MAX_COMPUTE_SHARED_MEMORY_SIZE),
            max_storage_block_size=self._gl.integer(GL_MAX_SHADER_STORAGE_BLOCK_SIZE),
            storage_offset_alignment=self._gl.integer(GL_SHADER_STORAGE_BUFFER_OFFSET_ALIGNMENT),
        )
        self._shaders: dict[tuple[str, tuple[tuple[str, str], ...]], Shader] = {}
        self._storage_bound: dict[int, Buffer | None] = {}

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

    # --- storage buffers, persistent mappings and fences ------------------------------------------
    def check_storage(self, size: int, what: str) -> None:
        if size > self.limits.max_storage_block_size:
            raise PxglError(
                f"{what}: {size} bytes exceed this GPU's storage buffer limit of "
                f"{self.limits.max_storage_block_size}; use smaller batches"
            )

    def storage_buffer(self, size: int, what: str) -> Buffer:
        """A device buffer for shader storage (SSBO), `size` bytes, contents undefined."""
        self.check_storage(size, what)
        return self.ctx.buffer(reserve=max(size, 4))

    def mapped_buffer(self, size: int, what: str) -> "MappedBuffer":
        """A buffer mapped into host memory for its whole life (persistent, coherent): the host writes
        inputs and reads results through `view` with no GL call; a fence orders the two."""
        self.check_storage(size, what)
        if "GL_ARB_buffer_storage" not in self.ctx.extensions and self.ctx.version_code < 440:
            raise PxglError(f"{what}: {self.renderer} lacks GL_ARB_buffer_storage (persistent mapped buffers)")
        glo, address = self._gl.mapped_storage(size)
        if not address:
            raise PxglError(f"{what}: could not map a {size}-byte buffer on {self.renderer}")
        view = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))
        return MappedBuffer(self.ctx.external_buffer(glo, size), view)

    @staticmethod
    def write_storage(buffer: Buffer, data: bytes | np.ndarray, offset: int = 0) -> None:
        """Copy `data` (bytes, or an array's bytes) into a storage buffer at byte `offset`."""
        buffer.write(data, offset=offset)

    def release_storage(self, buffer: Buffer) -> None:
        """Free a storage buffer (GL frees it once the commands using it are done)."""
        self._forget_bound(buffer)
        buffer.release()

    def release_mapped(self, mapped: MappedBuffer) -> None:
        """Unmap and free a mapped buffer; its view must not be touched again. moderngl does not own the
        buffer (it wraps it as external), so releasing the wrapper alone would leak it."""
        self._forget_bound(mapped.buffer)
        name = ctypes.c_uint(mapped.buffer.glo)
        mapped.buffer.release()
        self._gl.delete_buffer(1, ctypes.byref(name))

    def _forget_bound(self, buffer: Buffer) -> None:
        for binding, bound in self._storage_bound.items():
            if bound is buffer:
                self._storage_bound[binding] = None

    def bind_storage_range(self, buffer: Buffer, binding: int, offset: int, size: int) -> None:
        """Bind bytes [offset, offset + size) of a buffer (offset a multiple of storage_offset_alignment)."""
        buffer.bind_to_storage_buffer(binding, offset=offset, size=size)
        self._storage_bound[binding] = None

    def use_storage(self, buffers: Sequence[Buffer]) -> None:
        """Bind buffers[i] to storage binding i, skipping those bound there already: a run that uses the
        same buffers as the last one binds nothing."""
        bound = self._storage_bound
        for binding, buffer in enumerate(buffers):
            if bound.get(binding) is not buffer:
                buffer.bind_to_storage_buffer(binding)
                bound[binding] = buffer

    def storage_barrier(self) -> None:
        """Make shader storage writes visible to later shaders, buffer reads and mapped host views."""
        self._gl.memory_barrier(
            GL_SHADER_STORAGE_BARRIER_BIT | GL_BUFFER_UPDATE_BARRIER_BIT | GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT
        )

    def mapped_read_barrier(self) -> None:
        """Make the shader writes issued so far visible to the host through persistently mapped buffers:
        GL requires it after the dispatch that writes one, before the fence or poll the host reads after."""
        self._gl.memory_barrier(GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT)

    def wait_for_gpu(self) -> None:
        """Block until every command issued so far has finished: a fence, polled (no glFinish)."""
        self._gl.wait_fence(self._gl.fence())

    def flush(self) -> None:
        """Send the commands issued so far to the GPU without waiting for them."""
        self._gl.flush()

    def timer(self) -> moderngl.Query:
        """A GL_TIME_ELAPSED query: GPU nanoseconds of the commands inside `with timer:` (timer.elapsed)."""
        return self.ctx.query(time=True)

    def program_binary(self, shader: Shader) -> bytes:
        """The driver's binary of a compiled shader (NVIDIA's holds its assembly: evidence for tuning)."""
        return self._gl.program_binary(shader.glo)


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
