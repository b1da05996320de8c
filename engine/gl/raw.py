"""The few GL entry points moderngl does not wrap (integer queries, immutable buffer storage, persistent
mapping, fences, program binaries) or wraps holding the GIL (dispatches), called through ctypes on the
current context, and their enums."""

import ctypes
import ctypes.util
import os
import sys

import moderngl

from ..errors import PxglError


def setup_hint(platform: str | None = None) -> str:
    """What to install or where to run, for this platform (sys.platform), when no GL 4.3 context comes."""
    platform = platform or sys.platform
    if platform == "darwin":
        return (
            "macOS's OpenGL stops at 4.1, without compute shaders, and has no EGL: pxgl needs OpenGL 4.3 compute; "
            "run it on Linux (a Linux VM or container with Mesa's llvmpipe works, without a GPU)"
        )
    if platform.startswith(("win", "cygwin")):
        return (
            "Windows has no headless EGL for pxgl's OpenGL 4.3: run pxgl under WSL2 "
            "(apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or on Linux"
        )
    return (
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
GL_SUBGROUP_SIZE_KHR = 0x9532
GL_SUBGROUP_SUPPORTED_STAGES_KHR = 0x9533
GL_SUBGROUP_SUPPORTED_FEATURES_KHR = 0x9534
GL_COMPUTE_SHADER_BIT = 0x0020
GL_SUBGROUP_FEATURE_BASIC_BIT_KHR = 0x0001
GL_SUBGROUP_FEATURE_SHUFFLE_BIT_KHR = 0x0010
SPIN_POLLS = 20000
"""Fence polls before a wait starts sleeping in the driver: spinning keeps single-prompt latency low."""
SLEEP_WAIT_NS = 1_000_000


def load_egl() -> ctypes.CDLL:
    """The EGL library glcontext loads (GLCONTEXT_LINUX_LIBEGL, else the system's), eglGetProcAddress typed."""
    library = os.environ.get("GLCONTEXT_LINUX_LIBEGL") or ctypes.util.find_library("EGL") or "libEGL.so.1"
    egl = ctypes.CDLL(library)
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    return egl


class RawGL:
    """The few GL entry points moderngl does not wrap (integer queries, immutable buffer storage,
    persistent mapping, fences), called through ctypes on the current context."""

    def __init__(self) -> None:
        egl = load_egl()
        c_uint, c_int64, c_void_p, c_size = ctypes.c_uint, ctypes.c_int64, ctypes.c_void_p, ctypes.c_ssize_t

        def entry(name: str, result, *arguments):
            address = egl.eglGetProcAddress(name.encode())
            if not address:
                raise PxglError(f"OpenGL entry point {name} is missing; {setup_hint()}")
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
        self._use_program = entry("glUseProgram", None, c_uint)
        self._dispatch_compute = entry("glDispatchCompute", None, c_uint, c_uint, c_uint)
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
        while self._get_error() != 0:  # an error left by an earlier call is not this mapping's
            pass
        name = ctypes.c_uint()
        self._gen_buffers(1, ctypes.byref(name))
        self._bind_buffer(GL_SHADER_STORAGE_BUFFER, name.value)
        access = GL_MAP_READ_BIT | GL_MAP_WRITE_BIT | GL_MAP_PERSISTENT_BIT | GL_MAP_COHERENT_BIT
        self._buffer_storage(GL_SHADER_STORAGE_BUFFER, size, None, access | GL_CLIENT_STORAGE_BIT)
        address = self._map_buffer_range(GL_SHADER_STORAGE_BUFFER, 0, size, access)
        self._bind_buffer(GL_SHADER_STORAGE_BUFFER, 0)
        return name.value, (address or 0) if self._get_error() == 0 else 0

    def dispatch(self, program: int, groups: tuple[int, int, int]) -> None:
        """What moderngl's ComputeShader.run calls, but through ctypes, which lets go of the GIL during the
        call: a CPU renderer (llvmpipe) computes the whole dispatch inside it, and moderngl kept every other
        thread waiting that long (pxgl serve's event loop: /health took 9 to 40 s under one large request)."""
        self._use_program(program)
        self._dispatch_compute(*groups)

    def fence(self) -> int:
        return self._fence_sync(GL_SYNC_GPU_COMMANDS_COMPLETE, 0)

    def program_binary(self, program: int) -> bytes:
        length = ctypes.c_int()
        self._get_program_iv(program, GL_PROGRAM_BINARY_LENGTH, ctypes.byref(length))
        data = ctypes.create_string_buffer(max(length.value, 1))
        written, binary_format = ctypes.c_int(), ctypes.c_uint()
        self._get_program_binary(program, length.value, ctypes.byref(written), ctypes.byref(binary_format), data)
        return data.raw[: written.value]

    def wait_fence(self, sync: int, spin_polls: int = SPIN_POLLS) -> None:
        """Poll the fence (flushing once) and spin a while before letting the driver sleep."""
        wait, flush = self._client_wait_sync, GL_SYNC_FLUSH_COMMANDS_BIT
        try:
            for _ in range(spin_polls):
                status = wait(sync, flush, 0)
                if status in (GL_ALREADY_SIGNALED, GL_CONDITION_SATISFIED):
                    return
                if status == GL_WAIT_FAILED:
                    raise moderngl.Error("glClientWaitSync failed")
                flush = 0
            while (status := wait(sync, flush, SLEEP_WAIT_NS)) not in (GL_ALREADY_SIGNALED, GL_CONDITION_SATISFIED):
                if status == GL_WAIT_FAILED:
                    raise moderngl.Error("glClientWaitSync failed")
                flush = 0
        finally:
            self._delete_sync(sync)
