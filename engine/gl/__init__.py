"""The GL layer: the only code that speaks OpenGL. Everything above it reads as data flow over GLBackend."""

from .backend import (
    Buffer,
    BufferRange,
    GLBackend,
    GpuProgram,
    Limits,
    MappedBuffer,
    Texture,
    gl_errors,
)
from .egl_devices import EglDevice, egl_device_index, egl_devices, visible_gpu_count
from .raw import setup_hint

__all__ = [
    "Buffer",
    "BufferRange",
    "EglDevice",
    "GLBackend",
    "GpuProgram",
    "Limits",
    "MappedBuffer",
    "Texture",
    "egl_device_index",
    "egl_devices",
    "gl_errors",
    "setup_hint",
    "visible_gpu_count",
]
