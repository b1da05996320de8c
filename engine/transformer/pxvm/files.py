"""Version-2 programs on disk and the verbs' choice of version (docs/FORMATS.md §7.7): a version-2 model's
program beside its weights as version 1's (`name.pxi` → `name.program.pxi`), read and validated."""

from pathlib import Path

import numpy as np

from ...pxi import write_rgb
from ...spec import meta_path_for, read_meta_document
from ..files import image_paths
from ..meta import VERSION, TransformerSpec, transformer_spec_from_meta
from .compiler import compile_transformer
from .program import TransformerProgram, decode
from .validator import validate_transformer_program


def transformer_spec(weights: Path) -> TransformerSpec | None:
    """The spec of a version-2 model's weights (its meta read and checked), or None for any other model."""
    if weights.suffix != ".pxi" or not meta_path_for(weights).exists():
        return None
    document = read_meta_document(meta_path_for(weights))
    if not isinstance(document, dict) or document.get("version") != VERSION:
        return None
    return transformer_spec_from_meta(document, str(meta_path_for(weights)))


def transformer_files(weights: Path, spec: TransformerSpec) -> list[Path]:
    """What a version-2 model reads, so no output overwrites it: every weight image (§14.7), the meta, the
    tokenizer (when it names one)."""
    tokenizer = [weights.with_name(spec.tokenizer)] if spec.tokenizer is not None else []
    return [*image_paths(weights, len(spec.images)), meta_path_for(weights), *tokenizer]


def is_version_2(pixels: np.ndarray) -> bool:
    """Whether program pixels declare version 2 (pixel 1; the decoders check everything else)."""
    flat = pixels.reshape(-1, 3) if pixels.ndim == 3 else pixels
    return len(flat) > 1 and tuple(int(c) for c in flat[1]) == (VERSION, 0, 0)


def write_compiled_transformer(path: Path, spec: TransformerSpec) -> TransformerProgram:
    """Compile the model's version-2 program, validate it as any other, write it atomically."""
    program = validate_transformer_program(compile_transformer(spec.architecture), spec, str(path))
    write_rgb(path, program.pixels)
    return program


def check_transformer_program(pixels: np.ndarray, source: str, spec: TransformerSpec | None) -> TransformerProgram:
    """The format's checks; with a version-2 model's spec, every bound against it too."""
    return decode(pixels, source) if spec is None else validate_transformer_program(pixels, spec, source)
