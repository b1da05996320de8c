"""pxVM program files on disk: a model's program sits beside its weights, `name.pxi` → `name.program.pxi`."""

from pathlib import Path

import numpy as np

from ..pxi import read_rgb, write_rgb
from ..spec import ModelSpec
from .compiler import compile_program
from .opcodes import MAX_PROGRAM_PIXELS
from .program import Program, decode_program
from .validator import validate_program

PROGRAM_SUFFIX = ".program.pxi"


def program_path_for(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".pxi") + PROGRAM_SUFFIX)


def load_program(path: Path, spec: ModelSpec) -> Program:
    """Read and validate a program file for this model (host only: no GPU is touched)."""
    return validate_program(read_rgb(path, MAX_PROGRAM_PIXELS, kind="pxVM program"), spec, str(path))


def write_compiled_program(path: Path, spec: ModelSpec) -> Program:
    """Compile the model's program, check it like any other, and write it atomically."""
    program = validate_program(compile_program(spec), spec, str(path))
    write_rgb(path, program.pixels)
    return program


def check_program(pixels: np.ndarray, source: str, spec: ModelSpec | None) -> Program:
    """The format's checks; with a model's spec, also every bound against that model."""
    return decode_program(pixels, source) if spec is None else validate_program(pixels, spec, source)
