"""The OpenGL backend: a headless GL 4.3+ context on EGL, its limits, textures, buffers, and the one way to
run GPU work: `program(kernel, constants, local_size)` compiles a declared Kernel once (engine/kernel.py),
`run(program, groups, **resources)` binds its resources by name and dispatches it.

Thread rule: a GL context is current on the thread that created it, and only that thread may use it. Every
call here must come from the thread that built this GLBackend (Engine checks it for its callers)."""

import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import moderngl
import numpy as np

from ..errors import PxglError
from ..kernel import DISPATCH_LOOPS, SUBGROUP_EXTENSIONS, Image, Kernel, Sampler, Storage
from .egl_devices import egl_device_index
from .raw import (
    GL_BUFFER_UPDATE_BARRIER_BIT,
    GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT,
    GL_COMPUTE_SHADER_BIT,
    GL_MAX_COMPUTE_SHARED_MEMORY_SIZE,
    GL_MAX_SHADER_STORAGE_BLOCK_SIZE,
    GL_SHADER_STORAGE_BARRIER_BIT,
    GL_SHADER_STORAGE_BUFFER_OFFSET_ALIGNMENT,
    GL_SUBGROUP_FEATURE_BASIC_BIT_KHR,
    GL_SUBGROUP_FEATURE_SHUFFLE_BIT_KHR,
    GL_SUBGROUP_SIZE_KHR,
    GL_SUBGROUP_SUPPORTED_FEATURES_KHR,
    GL_SUBGROUP_SUPPORTED_STAGES_KHR,
    SPIN_POLLS,
    RawGL,
    setup_hint,
)
from .source import kernel_defines, kernel_source

REQUIRED_GL = 430
IMAGE_FORMATS = {"r32f": 0x822E, "rgba8ui": 0x8D7C}
"""GL enums of the image formats kernels declare; binding with an explicit format matters: without it Mesa
stored 255 everywhere in an rgba8 image."""

CPU_RENDERERS = ("llvmpipe", "softpipe", "swrast", "swiftshader", "lavapipe")
"""GL_RENDERER names of renderers that run shaders on the CPU (Mesa's and Google's)."""

GL_EXTENSION_OF = dict.fromkeys(SUBGROUP_EXTENSIONS, "GL_KHR_shader_subgroup")
"""The GL extension a GLSL extension comes with, where their names differ (one GL extension, GL_KHR_shader_subgroup,
brings GLSL's GL_KHR_shader_subgroup_* family; which of them work is a query, Limits.subgroup_size)."""

Texture = moderngl.Texture
Buffer = moderngl.Buffer


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
    subgroup_size: int = 0
    """Invocations of a subgroup where compute shaders have GL_KHR_shader_subgroup's basic and shuffle
    operations (engine/kernel.py's SUBGROUP_EXTENSIONS) and it is a power of two, else 0."""


@dataclass(frozen=True)
class MappedBuffer:
    buffer: Buffer
    view: np.ndarray
    """(size,) uint8 over the mapped memory; valid for the buffer's life."""


@dataclass(frozen=True)
class BufferRange:
    """Bytes [offset, offset + size) of a buffer, bound as a storage resource (offset a multiple of
    Limits.storage_offset_alignment)."""

    buffer: Buffer
    offset: int
    size: int


@dataclass(frozen=True, eq=False)
class GpuProgram:
    """A kernel compiled for one set of constants: what `run` dispatches."""

    kernel: Kernel
    shader: moderngl.ComputeShader
    local_size: int
    shared_bytes: int
    constants: Mapping[str, int | float]


_CURRENT = threading.local()
"""`.backend`: the GLBackend whose context is current on this thread. Several in one thread take turns: each
makes its own current before its GL work."""


class GLBackend:
    """A headless GL 4.3+ context on EGL: allocate textures and buffers, compile kernels, run them."""

    def __init__(self, device: int | None = None) -> None:
        """`device`: a GPU number (engine/gl/egl_devices.py says which EGL device it is); default PXGL_DEVICE,
        else GPU 0 under CUDA_VISIBLE_DEVICES, else EGL's first device."""
        if device is None and os.environ.get("PXGL_DEVICE"):
            try:
                device = int(os.environ["PXGL_DEVICE"])
            except ValueError:
                raise PxglError(f"PXGL_DEVICE={os.environ['PXGL_DEVICE']!r} is not a device number") from None
        if device is None and "CUDA_VISIBLE_DEVICES" in os.environ:
            device = 0  # EGL ignores the variable: its first device may be a GPU CUDA hides
        options = {} if device is None else {"device_index": egl_device_index(device)}
        try:
            self.ctx = moderngl.create_context(standalone=True, backend="egl", require=REQUIRED_GL, **options)
        except Exception as e:  # glcontext raises plain Exceptions of several kinds
            where = "" if device is None else f" on GPU {device} (EGL device {options['device_index']})"
            reason = " ".join(str(e).split()) or type(e).__name__
            raise PxglError(f"no OpenGL 4.3 context{where} ({reason}); {setup_hint()}") from None
        _CURRENT.backend = self  # creating a context makes it current
        self.thread = threading.get_ident()
        """The thread that owns the context: the only one that may call this backend."""
        self._gl = RawGL()
        info = self.ctx.info
        self.renderer: str = info["GL_RENDERER"]
        self.version: str = info["GL_VERSION"]
        self.cpu_renderer = any(name in self.renderer.lower() for name in CPU_RENDERERS)
        """Shaders run on the host's CPU cores (Mesa's llvmpipe): no kernel may spin there waiting for the host."""
        self.limits = Limits(
            max_texture_size=int(info["GL_MAX_TEXTURE_SIZE"]),
            max_work_group_count=tuple(int(v) for v in info["GL_MAX_COMPUTE_WORK_GROUP_COUNT"]),
            max_work_group_size=tuple(int(v) for v in info["GL_MAX_COMPUTE_WORK_GROUP_SIZE"]),
            max_work_group_invocations=int(info["GL_MAX_COMPUTE_WORK_GROUP_INVOCATIONS"]),
            max_shared_memory=self._gl.integer(GL_MAX_COMPUTE_SHARED_MEMORY_SIZE),
            max_storage_block_size=self._gl.integer(GL_MAX_SHADER_STORAGE_BLOCK_SIZE),
            storage_offset_alignment=self._gl.integer(GL_SHADER_STORAGE_BUFFER_OFFSET_ALIGNMENT),
            subgroup_size=self._subgroup_size(),
        )
        self.spin_polls = SPIN_POLLS
        """Fence polls (each releasing and retaking the GIL) before a wait blocks in the driver: spinning keeps
        one prompt's latency low; a process whose other threads need the GIL meanwhile (the server) sets 0."""
        self._programs: dict[tuple[Kernel, Mapping[str, int | float], int], GpuProgram] = {}
        self._storage_bound: dict[int, Buffer | BufferRange | None] = {}
        self._resident_stop: Callable[[], None] | None = None

    def _subgroup_size(self) -> int:
        if "GL_KHR_shader_subgroup" not in self.ctx.extensions:
            return 0
        features = GL_SUBGROUP_FEATURE_BASIC_BIT_KHR | GL_SUBGROUP_FEATURE_SHUFFLE_BIT_KHR
        compute = self._gl.integer(GL_SUBGROUP_SUPPORTED_STAGES_KHR) & GL_COMPUTE_SHADER_BIT
        if not compute or self._gl.integer(GL_SUBGROUP_SUPPORTED_FEATURES_KHR) & features != features:
            return 0
        size = self._gl.integer(GL_SUBGROUP_SIZE_KHR)
        return size if size > 0 and size & (size - 1) == 0 else 0  # the merges shuffle by XOR

    # --- a resident dispatch ------------------------------------------------------------------------
    def hold_resident(self, stop: Callable[[], None]) -> None:
        """A dispatch that stays running until told (engine/executors/fused_resident.py) was just flushed:
        every later call here that queues GPU work, a transfer or a wait first calls `stop`, which must make it
        leave and call `release_resident` — work queued behind a running kernel would wait for it. (Compiling
        and the timer query's result do not stop it: bench code reads timers only around its own runs.)"""
        if self._resident_stop is not None:
            raise RuntimeError("a resident dispatch is running already")
        self._resident_stop = stop

    def release_resident(self, stop: Callable[[], None]) -> None:
        if self._resident_stop == stop:
            self._resident_stop = None

    def _park(self) -> None:
        """Before GL work: make this context current (another GLBackend of this thread may have made its own
        current since: GL calls go to whichever is) and stop the resident kernel."""
        if getattr(_CURRENT, "backend", None) is not self:
            self.ctx.__enter__()
            _CURRENT.backend = self
        if self._resident_stop is not None:
            self._resident_stop()

    def release(self) -> None:
        """Free the context and everything in it; the backend is unusable afterwards."""
        self._park()
        self._programs.clear()
        self._storage_bound.clear()
        self.ctx.release()
        _CURRENT.backend = None

    # --- textures -------------------------------------------------------------------------------
    def check_size(self, width: int, height: int, what: str) -> None:
        side = self.limits.max_texture_size
        if not (1 <= width <= side and 1 <= height <= side):
            raise PxglError(f"{what}: {width}x{height} texture exceeds this GPU's limit of {side} per side")

    def uint_texture(self, pixels: np.ndarray, what: str) -> Texture:
        """An (h, w, c) uint8 array as an integer texture (GL_R/RG/RGB/RGBA8UI) read with texelFetch."""
        height, width, components = pixels.shape
        self.check_size(width, height, what)
        self._park()
        texture = self.ctx.texture((width, height), components, np.ascontiguousarray(pixels).tobytes(), dtype="u1")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)  # integer textures are incomplete otherwise
        return texture

    def uint_texture_empty(self, width: int, height: int, components: int, what: str) -> Texture:
        return self.uint_texture(np.zeros((height, width, components), dtype=np.uint8), what)

    def float_image(self, width: int, height: int, what: str) -> Texture:
        """An r32f texture used as an image (imageLoad/imageStore)."""
        self.check_size(width, height, what)
        self._park()
        texture = self.ctx.texture((width, height), 1, dtype="f4")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return texture

    def rgba8ui_image(self, width: int, height: int, what: str) -> Texture:
        self.check_size(width, height, what)
        self._park()
        texture = self.ctx.texture((width, height), 4, dtype="u1")
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return texture

    def read_float(self, texture: Texture) -> np.ndarray:
        self._park()
        return np.frombuffer(texture.read(), dtype=np.float32).reshape(texture.height, texture.width)

    def read_uint8(self, texture: Texture) -> np.ndarray:
        """An integer texture as (height, width, components) uint8."""
        self._park()
        data = np.frombuffer(texture.read(alignment=1), dtype=np.uint8)
        return data.reshape(texture.height, texture.width, texture.components)

    def write(self, texture: Texture, data: np.ndarray) -> None:
        """Write rows 0..len(data)-1 of a texture (data shaped (rows, width[, components]))."""
        self._park()
        texture.write(np.ascontiguousarray(data).tobytes(), viewport=(0, 0, texture.width, data.shape[0]))

    # --- kernels ------------------------------------------------------------------------------------
    def program(self, kernel: Kernel, constants: Mapping[str, int | float], local_size: int) -> GpuProgram:
        """The kernel compiled with these constants and `local_size` invocations a work group, checked
        against this GPU's limits and DISPATCH_LOOPS first; compiled once, then found by a dictionary lookup (pass an
        engine.kernel.Constants, whose hash is computed once)."""
        key = (kernel, constants, local_size)
        found = self._programs.get(key)
        if found is not None:
            return found
        self._park()
        what = f"glsl/{kernel.shader}.comp"
        limits = self.limits
        if not 1 <= local_size <= min(limits.max_work_group_invocations, limits.max_work_group_size[0]):
            raise PxglError(f"{what}: {local_size} invocations a work group exceed this GPU's limits")
        shared = kernel.shared_bytes(constants, local_size)
        if shared > limits.max_shared_memory:
            raise PxglError(
                f"{what}: {shared} bytes of shared memory exceed this GPU's {limits.max_shared_memory}; "
                "this model is too wide for this executor on this GPU: try another --executor"
            )
        loops = kernel.loops(constants, local_size)
        if loops > DISPATCH_LOOPS:
            raise PxglError(
                f"{what}: one GPU invocation would loop {loops:,} times, past the {DISPATCH_LOOPS:,} every driver "
                "runs (docs/FORMATS.md §3.1); this model is too large for this executor: try -x passes"
            )
        missing = [name for name in kernel.extensions if GL_EXTENSION_OF.get(name, name) not in self.ctx.extensions]
        if missing:
            raise PxglError(f"{what} needs {', '.join(missing)}, which {self.renderer} lacks")
        source = kernel_source(kernel, kernel_defines(kernel, constants, local_size))
        try:
            shader = self.ctx.compute_shader(source)
        except moderngl.Error as e:
            raise PxglError(f"{what} failed to compile on {self.renderer}: {e}") from None
        program = self._programs[key] = GpuProgram(kernel, shader, local_size, shared, constants)
        return program

    def run(self, program: GpuProgram, groups: tuple[int, int, int], /, **resources: object) -> None:
        """Bind every resource the kernel declares, by its name, and dispatch `groups` work groups. The
        commands are queued: several runs form one submission until a flush, fence or read."""
        self._park()
        kernel = program.kernel
        if len(resources) != len(kernel.resources):
            missing = sorted({r.name for r in kernel.resources} - set(resources))
            raise TypeError(f"kernel {kernel.shader}: resources {missing or sorted(resources)} missing or unknown")
        for resource in kernel.resources:
            value = resources[resource.name]
            kind = type(resource)
            if kind is Storage:
                self._bind_storage(value, kernel.bindings[resource.name])
            elif kind is Sampler:
                value.use(location=kernel.bindings[resource.name])
            elif kind is Image:
                format_enum = IMAGE_FORMATS[resource.format]
                value.bind_to_image(kernel.bindings[resource.name], resource.read, resource.write, format=format_enum)
            else:
                program.shader[resource.name].value = value
        self.check_groups(groups, kernel.shader)
        if self.cpu_renderer:  # the call computes the dispatch: other threads run meanwhile
            self._gl.dispatch(program.shader.glo, groups)
        else:  # the call only queues it: holding the GIL costs nothing, and no thread waits to get it back
            program.shader.run(*groups)

    def _bind_storage(self, value: object, binding: int) -> None:
        """Bind a storage resource, skipping one bound there already (a hot loop rebinds nothing)."""
        if type(value) is MappedBuffer:
            value = value.buffer
        if self._storage_bound.get(binding) is value:
            return
        if type(value) is BufferRange:
            value.buffer.bind_to_storage_buffer(binding, offset=value.offset, size=value.size)
        else:
            value.bind_to_storage_buffer(binding)
        self._storage_bound[binding] = value

    def check_groups(self, groups: tuple[int, int, int], what: str) -> None:
        for axis, (n, limit) in enumerate(zip(groups, self.limits.max_work_group_count, strict=True)):
            if not 1 <= n <= limit:
                raise PxglError(f"{what}: {n} work groups on axis {axis} exceed this GPU's limit of {limit}")

    def barrier(self) -> None:
        """Make every kind of shader write visible to later commands."""
        self._park()
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
        self._park()
        return self.ctx.buffer(reserve=max(size, 4))

    def mapped_buffer(self, size: int, what: str) -> MappedBuffer:
        """A buffer mapped into host memory for its whole life (persistent, coherent): the host writes
        inputs and reads results through `view` with no GL call; a fence orders the two."""
        self.check_storage(size, what)
        if "GL_ARB_buffer_storage" not in self.ctx.extensions and self.ctx.version_code < 440:
            raise PxglError(f"{what}: {self.renderer} lacks GL_ARB_buffer_storage (persistent mapped buffers)")
        self._park()
        glo, address = self._gl.mapped_storage(size)
        if not address:
            raise PxglError(f"{what}: could not map a {size}-byte buffer on {self.renderer}")
        view = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))
        return MappedBuffer(self.ctx.external_buffer(glo, size), view)

    def write_storage(self, buffer: Buffer, data: bytes | np.ndarray, offset: int = 0) -> None:
        """Copy `data` (bytes, or an array's bytes) into a storage buffer at byte `offset`."""
        self._park()
        buffer.write(data, offset=offset)

    def read_storage(self, buffer: Buffer, size: int, offset: int = 0) -> bytes:
        self._park()
        return buffer.read(size, offset=offset)

    def release_storage(self, buffer: Buffer) -> None:
        """Free a storage buffer (GL frees it once the commands using it are done)."""
        self._park()
        self._forget_bound(buffer)
        buffer.release()

    def release_mapped(self, mapped: MappedBuffer) -> None:
        """Unmap and free a mapped buffer; its view must not be touched again. moderngl does not own the
        buffer (it wraps it as external), so releasing the wrapper alone would leak it."""
        self._park()
        self._forget_bound(mapped.buffer)
        name = ctypes.c_uint(mapped.buffer.glo)
        mapped.buffer.release()
        self._gl.delete_buffer(1, ctypes.byref(name))

    def _forget_bound(self, buffer: Buffer) -> None:
        for binding, bound in self._storage_bound.items():
            if bound is buffer or (type(bound) is BufferRange and bound.buffer is buffer):
                self._storage_bound[binding] = None

    def storage_barrier(self) -> None:
        """Make shader storage writes visible to later shaders, buffer reads and mapped host views."""
        self._park()
        self._gl.memory_barrier(
            GL_SHADER_STORAGE_BARRIER_BIT | GL_BUFFER_UPDATE_BARRIER_BIT | GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT
        )

    def mapped_read_barrier(self) -> None:
        """Make the shader writes issued so far visible to the host through persistently mapped buffers:
        GL requires it after the dispatch that writes one, before the fence or poll the host reads after."""
        self._park()
        self._gl.memory_barrier(GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT)

    def wait_for_gpu(self) -> None:
        """Block until every command issued so far has finished: a fence, polled (no glFinish)."""
        self.wait(self.fence())

    def fence(self) -> int:
        """A fence behind the commands issued so far; `wait` on it exactly once (that frees it)."""
        self._park()
        return self._gl.fence()

    def wait(self, fence: int) -> None:
        """Block until the commands before `fence` have finished, then free it."""
        self._park()
        self._gl.wait_fence(fence, self.spin_polls)

    def flush(self) -> None:
        """Send the commands issued so far to the GPU without waiting for them."""
        self._park()
        self._gl.flush()

    def timer(self) -> moderngl.Query:
        """A GL_TIME_ELAPSED query: GPU nanoseconds of the commands inside `with timer:` (timer.elapsed)."""
        self._park()
        return self.ctx.query(time=True)

    def program_binary(self, program: GpuProgram) -> bytes:
        """The driver's binary of a compiled program (NVIDIA's holds its assembly: evidence for tuning)."""
        self._park()
        return self._gl.program_binary(program.shader.glo)


@contextmanager
def gl_errors(what: str) -> Iterator[None]:
    """Turn a GL failure in the middle of work (a lost context, out of memory) into a PxglError."""
    try:
        yield
    except moderngl.Error as e:
        raise PxglError(f"{what}: GPU error ({' '.join(str(e).split())})") from None
