"""A model on disk: the weight pixels plus the spec from the meta beside them, or a cartridge (.pxa)."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PxglError
from .pxi import bytes_to_pixels, read_rgb, write_rgb
from .spec import ModelSpec, meta_path_for, read_meta, spec_from_meta, write_meta

if TYPE_CHECKING:
    from .cartridge import Cartridge
    from .tokenizer import Tokenizer

CARTRIDGE_SUFFIX = ".pxa"


@dataclass(frozen=True)
class Model:
    spec: ModelSpec
    weights: np.ndarray
    """The weight image, (height, width, 3) uint8, exactly as stored."""
    tokenizer_path: Path
    """Beside the weights; for a cartridge, the archive path joined with its tokenizer member (not a file)."""
    source: str
    cartridge: "Cartridge | None" = None
    """The cartridge the model came from (its manifest, tokenizer, program, shader verdict), if any."""

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The quantized bytes of one tensor, shaped as the meta says."""
        t = self.spec.tensors[name]
        return self.weights.reshape(-1)[t.offset : t.offset + t.size].reshape(t.shape)


def load_model(path: str | Path, trust_shaders: bool = False) -> Model:
    """Read `name.pxi` and `name.meta.json` beside it and check they agree, or open a cartridge `.pxa`
    (refused if its shaders differ from the engine's, unless `trust_shaders`: docs/FORMATS.md §8)."""
    path = Path(path)
    if path.suffix == CARTRIDGE_SUFFIX:
        from .cartridge import load_cartridge

        return load_cartridge(path, trust_shaders)
    if path.suffix != ".pxi":
        raise PxglError(f"{path}: a model is a weights .pxi (with its .meta.json beside it) or a cartridge .pxa")
    spec = read_meta(meta_path_for(path))
    weights = read_rgb(path)
    check_weight_image(spec, weights, str(path))
    return Model(spec, weights, path.with_name(spec.tokenizer), str(path))


def check_weight_image(spec: ModelSpec, weights: np.ndarray, source: str) -> None:
    height, width, _ = weights.shape
    if (width, height) != (spec.image_width, spec.image_height):
        raise PxglError(f"{source}: image is {width}x{height} but its meta says {spec.image_width}x{spec.image_height}")


def save_model(path: str | Path, spec: ModelSpec, weight_bytes: bytes) -> None:
    """Write the weight image and its meta (each atomically)."""
    path = Path(path)
    spec_from_meta(spec.to_meta(), str(meta_path_for(path)))  # never write a model no reader accepts
    if len(weight_bytes) > spec.image_bytes:
        raise ValueError("weight bytes do not fit the spec's image")
    write_rgb(path, bytes_to_pixels(weight_bytes, spec.image_width, spec.image_height))
    write_meta(meta_path_for(path), spec)


def load_tokenizer(model: Model) -> "Tokenizer":
    """The model's tokenizer (imported lazily: pixels-in, pixels-out inference never needs it)."""
    from .tokenizer import Tokenizer

    if model.cartridge is not None:
        return model.cartridge.tokenizer
    tokenizer = Tokenizer.load(model.tokenizer_path)
    check_tokenizer(model.spec, tokenizer, str(model.tokenizer_path))
    return tokenizer


def check_tokenizer(spec: ModelSpec, tokenizer: "Tokenizer", source: str) -> None:
    if tokenizer.vocab_size != spec.vocab_size:
        raise PxglError(f"{source}: tokenizer has {tokenizer.vocab_size} tokens, model has {spec.vocab_size}")
