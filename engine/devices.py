"""GPU numbers: what `--device` names, and which EGL device each one is.

    parse_devices("all" | "0,1" | "0,0") -> [0, 1, ...]   one engine per entry; an entry may repeat
    egl_device_for_cuda(1) -> the EGL device index of GPU 1

A GPU number means what CUDA means by it in this process (the k-th GPU CUDA_VISIBLE_DEVICES shows) wherever
the driver maps EGL devices to CUDA (EGL_NV_device_cuda), else the EGL device index (Mesa). Anything that runs
engines on several GPUs (infer --batch, eval, Ray actors, evolve's runners) maps through here."""

from .errors import PxglError
from .gl import egl_device_index, visible_gpu_count

ALL = "all"


def parse_devices(device: str | None) -> list[int] | None:
    """`--device` as GPU numbers: "all" (every GPU this process sees), one number or a comma list; a number
    may repeat (two engines on one GPU). None when not given."""
    if device is None:
        return None
    if device.strip() == ALL:
        return list(range(visible_gpu_count()))
    try:
        devices = [int(part) for part in device.split(",")]
    except ValueError:
        raise PxglError(f"--device {device!r}: give a GPU number (0), a list (0,1) or all") from None
    if any(d < 0 for d in devices):
        raise PxglError(f"--device {device}: GPU numbers are 0 or more")
    return devices


def egl_device_for_cuda(gpu: int) -> int:
    """The EGL device index (glcontext's device_index) that GPU number `gpu` is on this machine."""
    return egl_device_index(gpu)


def gpu_count() -> int:
    """How many GPUs `--device all` names here (1 on a machine with one GPU or only Mesa's llvmpipe)."""
    return visible_gpu_count()
