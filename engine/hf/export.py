"""`pxgl export --format hf` (docs/FORMATS.md §10.2): a version-2 model as a Hugging Face folder —
config.json of the architecture that expresses it, model.safetensors of the dequantized tensors in that
architecture's names and layout (written a tensor at a time), generation_config.json and, with a tokenizer,
its files. The folder is made beside the target and renamed into place: never half-written, never over files
pxgl did not write."""

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from ..text_tokenizer.hf import write_hf_tokenizer
from ..tokenizer import Tokenizer
from ..transformer.interchange import FORMAT, dequantized
from ..transformer.meta import TransformerArchitecture, TransformerSpec
from .config import GPT2, config_for
from .folder import CONFIG, TOKENIZER_CONFIG, WEIGHTS
from .names import hf_shapes, hf_tensors

GENERATION_CONFIG = "generation_config.json"


def halves_rows(values: np.ndarray, head_dim: int) -> np.ndarray:
    """A `pairs` query/key weight (or bias) as `halves` stores it (§14.4): row c·D/2 + k of a head is the
    pairs head's row 2k + c."""
    heads = values.reshape(-1, head_dim // 2, 2, *values.shape[1:])
    return np.ascontiguousarray(heads.swapaxes(1, 2)).reshape(values.shape)


def pxgl_values(spec: TransformerSpec, stream: np.ndarray) -> Callable[[str], np.ndarray]:
    """Each tensor dequantized to float32, a `pairs` model's query and key rows in `halves` order."""
    a = spec.architecture

    def tensor(name: str) -> np.ndarray:
        values = dequantized(spec, stream, name)
        if a.rope is not None and a.rope.rotation == "pairs" and name.split(".")[1:3] in (["attn", "q"], ["attn", "k"]):
            return halves_rows(values, a.head_dim)
        return values

    return tensor


def float16_exact(spec: TransformerSpec) -> bool:
    """Every tensor stored as f16: float16 holds its values exactly, in half float32's bytes."""
    return all(t.quant == "f16" for t in spec.tensors.values())


def quantization_metadata(spec: TransformerSpec) -> str:
    return json.dumps(
        {
            name: {k: v for k, v in t.to_json().items() if k not in ("offset", "shape")}
            for name, t in spec.tensors.items()
        }
    )


def write_safetensors(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    tensors: Iterable[tuple[str, np.ndarray]],
    dtype: str,
    metadata: dict,
) -> None:
    """safetensors' layout (§10.1) of the named tensors in `shapes`' order, as float32 ("F32") or float16 ("F16"),
    written as `tensors` yields them."""
    numpy_dtype = np.dtype("<f4" if dtype == "F32" else "<f2")
    entries: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, shape in shapes.items():
        size = numpy_dtype.itemsize * math.prod(shape)
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as out:
        out.write(len(header).to_bytes(8, "little") + header)
        for (name, values), expected in zip(tensors, shapes, strict=True):
            assert name == expected and values.shape == shapes[name], (name, expected)
            out.write(values.astype(numpy_dtype).tobytes())


def check_target(out: Path) -> None:
    """An export folder is new, or an empty directory: pxgl never writes over files it did not write."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PxglError(f"--out {out}: exists and is not a folder; --format hf writes a new (or empty) folder")
    if out.is_dir() and any(out.iterdir()):
        raise PxglError(f"--out {out}: a folder that is not empty; give a new folder (pxgl never writes over files)")
    if Path(os.path.abspath(out)) == Path.cwd():  # replaced whole, it cannot be the folder the command runs in
        raise PxglError(f"--out {out}: the current folder; give the name of a new folder")


def write_folder(folder: Path, spec: TransformerSpec, stream: np.ndarray, tokenizer: Tokenizer | None) -> None:
    a: TransformerArchitecture = spec.architecture
    config = config_for(a, spec.bos)
    family = config["architectures"][0]
    shapes = hf_shapes(family, a, "transformer." if family == GPT2 else "")
    metadata = {"format": "pt", "pxgl.format": FORMAT, "pxgl.quantization": quantization_metadata(spec)}
    dtype = "F16" if float16_exact(spec) else "F32"
    config["dtype"] = "float16" if dtype == "F16" else "float32"
    write_safetensors(folder / WEIGHTS, shapes, hf_tensors(family, a, pxgl_values(spec, stream)), dtype, metadata)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": spec.bos, "eos_token_id": None}
    if tokenizer is not None:
        generation["eos_token_id"] = list(tokenizer.eos_ids) or None
        write_hf_tokenizer(tokenizer, folder)
    elif spec.bos is not None:  # what import reads back as "every prompt begins with bos" (§10.2)
        (folder / TOKENIZER_CONFIG).write_text(json.dumps({"add_bos_token": True}, indent=2) + "\n")
    (folder / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2) + "\n")


def export_folder(out: Path, spec: TransformerSpec, stream: np.ndarray, tokenizer: Tokenizer | None) -> str:
    """Write the folder; its architecture's name. Made in a temporary folder beside `out`, renamed into place."""
    check_target(out)
    config_for(spec.architecture, spec.bos)  # refused before anything is written
    parent = out.absolute().parent
    if not parent.is_dir():
        raise PxglError(f"--out {out}: its folder {parent} does not exist")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        write_folder(work, spec, stream, tokenizer)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return config_for(spec.architecture, spec.bos)["architectures"][0]
