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
from .raw import egl_device_count, setup_hint

__all__ = [
    "Buffer",
    "BufferRange",
    "GLBackend",
    "GpuProgram",
    "Limits",
    "MappedBuffer",
    "Texture",
    "egl_device_count",
    "gl_errors",
    "setup_hint",
]
