"""The options several verbs share, declared once so every verb spells them the same way."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from ..resources import BUNDLED

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A bundled model by name (pxgl models lists them), a cartridge .pxa, or weights .pxi with its "
        f".meta.json beside it. Default: the bundled {BUNDLED[0]}.",
    ),
]
ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor",
        "-x",
        help="How the GPU computes the forward pass: auto (fused where it supports the model, else passes), "
        "passes (Model A: a chain of compute passes), pxvm (Model B: a program of pixel opcodes interpreted on "
        "the GPU) or fused (the whole pass in one dispatch). Default: the cartridge's own choice, else auto.",
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        "-d",
        help="GPU(s): a number (0), a list (0,1) or all; a number may repeat (0,0: two engines on GPU 0). Several "
        "run one engine each in worker processes (infer, eval). Numbers are CUDA's where the driver maps EGL "
        "devices to CUDA (NVIDIA: CUDA_VISIBLE_DEVICES applies), else EGL's. Default: PXGL_DEVICE, else the first.",
    ),
]
ProgramOption = Annotated[
    Path | None,
    typer.Option(
        "--program",
        help="pxVM program (.pxi) to run on the pxvm executor (implies it). Default for pxvm: the cartridge's, "
        "else name.program.pxi beside the weights, else the model's compiled program.",
    ),
]
BatchOption = Annotated[
    Path | None, typer.Option("--batch", "-b", help="Text file, one prompt per line (only \\n or \\r\\n end one).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (one object a line).")]
PredictionsOut = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the prediction pixels to this file (none unless given).")
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace existing output files even when they are not of the kind pxgl writes there (or are a "
        "default output). Never an input, a folder or a device.",
    ),
]


def one_device(device: str | None) -> int | None:
    """The single GPU a verb runs on: None (PXGL_DEVICE, else the first) or its number."""
    from ..devices import parse_devices

    devices = parse_devices(device)
    if devices is None:
        return None
    if len(devices) != 1:
        raise PxglError(f"--device {device}: this command runs on one GPU; give one number")
    return devices[0]


def model_files(model: str | None) -> list[Path]:
    """The files a model argument reads, so no output overwrites them (pxgl.loading.model_files)."""
    from ..loading import model_files as files

    return files(model)
