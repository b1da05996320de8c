"""Which EGL device a GPU number names. EGL lists devices in its own order and ignores CUDA_VISIBLE_DEVICES;
where the driver maps its devices to CUDA (EGL_NV_device_cuda, NVIDIA's), a GPU number means what CUDA means
by it in this process: GPU k is the k-th GPU CUDA_VISIBLE_DEVICES shows (all of them when it is unset), as
`cuda:k` is to PyTorch, so a Ray actor given one GPU runs on GPU 0 and lands on its own GPU. Elsewhere (Mesa)
a GPU number is the EGL device index."""

import ctypes
import os
from dataclasses import dataclass

from ..errors import PxglError
from .raw import load_egl, setup_hint

EGL_EXTENSIONS = 0x3055
EGL_CUDA_DEVICE_NV = 0x323A
MAX_DEVICES = 64


@dataclass(frozen=True)
class EglDevice:
    index: int
    """Its place in eglQueryDevicesEXT's list: what glcontext's device_index takes."""
    cuda: int | None
    """The CUDA device the driver says it is (EGL_CUDA_DEVICE_NV), None where the driver has no such mapping."""


def egl_devices() -> list[EglDevice]:
    """The EGL devices the driver lists, each with its CUDA device where the driver maps one; one device
    without a mapping when EGL cannot list devices (EGL_EXT_device_enumeration missing)."""
    egl = load_egl()

    def entry(name: str, result, *arguments):
        address = egl.eglGetProcAddress(name.encode())
        return ctypes.CFUNCTYPE(result, *arguments)(address) if address else None

    c_void_p, c_int = ctypes.c_void_p, ctypes.c_int
    query_devices = entry("eglQueryDevicesEXT", ctypes.c_uint, c_int, ctypes.POINTER(c_void_p), ctypes.POINTER(c_int))
    if query_devices is None:
        return [EglDevice(0, None)]
    query_string = entry("eglQueryDeviceStringEXT", ctypes.c_char_p, c_void_p, c_int)
    query_attribute = entry("eglQueryDeviceAttribEXT", ctypes.c_uint, c_void_p, c_int, ctypes.POINTER(ctypes.c_ssize_t))
    handles, count = (c_void_p * MAX_DEVICES)(), c_int(0)
    if not query_devices(MAX_DEVICES, handles, ctypes.byref(count)):
        raise PxglError(f"EGL could not list its devices; {setup_hint()}")
    devices = []
    for index in range(count.value):
        extensions = (query_string(handles[index], EGL_EXTENSIONS) or b"").split() if query_string else []
        cuda = None
        if b"EGL_NV_device_cuda" in extensions and query_attribute is not None:
            value = ctypes.c_ssize_t(-1)
            if query_attribute(handles[index], EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value >= 0:
                cuda = value.value
        devices.append(EglDevice(index, cuda))
    return devices or [EglDevice(0, None)]


def visible_cuda_devices(variable: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as its entries (ids or UUIDs); None when unset. CUDA stops at the first entry
    that is not a GPU; an empty value shows none."""
    if variable is None:
        return None
    return [part.strip() for part in variable.split(",") if part.strip()]


def egl_index_for_gpu(gpu: int, devices: list[EglDevice], visible: list[str] | None) -> int:
    """The EGL device index of GPU number `gpu` (module docstring), given what the driver lists and the
    entries of CUDA_VISIBLE_DEVICES (None: unset)."""
    if gpu < 0:
        raise PxglError(f"GPU {gpu}: GPU numbers are 0 or more")
    mapped = [d for d in devices if d.cuda is not None]
    if not mapped:
        if gpu >= len(devices):
            raise PxglError(f"GPU {gpu}: EGL lists {len(devices)} device(s), numbered from 0")
        return devices[gpu].index
    cuda = gpu
    if visible is not None:
        if gpu >= len(visible):
            raise PxglError(
                f"GPU {gpu}: CUDA_VISIBLE_DEVICES={','.join(visible)!r} shows {len(visible)} GPU(s), numbered from 0"
            )
        # A driver that numbers its devices as CUDA does in this process maps only the visible ones; one that
        # maps every GPU gives physical ids, which the entry names.
        if len(mapped) > len(visible):
            try:
                cuda = int(visible[gpu])
            except ValueError:
                raise PxglError(
                    f"CUDA_VISIBLE_DEVICES entry {visible[gpu]!r}: this driver's EGL numbers GPUs by index; "
                    "give CUDA_VISIBLE_DEVICES as indexes"
                ) from None
    for device in mapped:
        if device.cuda == cuda:
            return device.index
    known = ", ".join(str(d.cuda) for d in sorted(mapped, key=lambda d: d.cuda or 0))
    raise PxglError(f"GPU {gpu}: no EGL device is CUDA device {cuda} (EGL lists CUDA devices {known})")


def gpu_count(devices: list[EglDevice], visible: list[str] | None) -> int:
    """How many GPU numbers there are: the CUDA devices this process sees where the driver maps them, else
    every EGL device."""
    mapped = sum(d.cuda is not None for d in devices)
    if not mapped:
        return len(devices)
    return mapped if visible is None else min(mapped, len(visible))


def egl_device_index(gpu: int) -> int:
    """The EGL device index of GPU number `gpu` on this machine, in this process's environment."""
    return egl_index_for_gpu(gpu, egl_devices(), visible_cuda_devices(os.environ.get("CUDA_VISIBLE_DEVICES")))


def visible_gpu_count() -> int:
    """How many GPUs `--device all` runs on here."""
    return gpu_count(egl_devices(), visible_cuda_devices(os.environ.get("CUDA_VISIBLE_DEVICES")))
