"""A model on disk: the weight pixels plus the spec from the meta beside them."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import PxglError
from engine.pxi import bytes_to_pixels, read_rgb, write_rgb
from engine.spec import ModelSpec, meta_path_for, read_meta, write_meta

if TYPE_CHECKING:
    from engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class Model:
    spec: ModelSpec
    weights: np.ndarray
    """The weight image, (height, width, 3) uint8, exactly as stored."""
    tokenizer_path: Path
    source: str

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The quantized bytes of one tensor, shaped as the meta says."""
        t = self.spec.tensors[name]
        return self.weights.reshape(-1)[t.offset : t.offset + t.size].reshape(t.shape)


def load_model(path: str | Path) -> Model:
    """Read `name.pxi` and `name.meta.json` beside it; check they agree."""
    path = Path(path)
    if path.suffix != ".pxi":
        raise PxglError(f"{path}: a model is a weights .pxi (with its .meta.json beside it)")
    spec = read_meta(meta_path_for(path))
    weights = read_rgb(path)
    height, width, _ = weights.shape
    if (width, height) != (spec.image_width, spec.image_height):
        raise PxglError(f"{path}: image is {width}x{height} but its meta says {spec.image_width}x{spec.image_height}")
    return Model(spec, weights, path.with_name(spec.tokenizer), str(path))


def save_model(path: str | Path, spec: ModelSpec, weight_bytes: bytes) -> None:
    """Write the weight image and its meta (each atomically)."""
    path = Path(path)
    if len(weight_bytes) > spec.image_bytes:
        raise ValueError("weight bytes do not fit the spec's image")
    write_rgb(path, bytes_to_pixels(weight_bytes, spec.image_width, spec.image_height))
    write_meta(meta_path_for(path), spec)


def load_tokenizer(model: Model) -> "Tokenizer":
    """The model's tokenizer (imported lazily: pixels-in, pixels-out inference never needs it)."""
    from engine.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(model.tokenizer_path)
    if tokenizer.vocab_size != model.spec.vocab_size:
        raise PxglError(
            f"{model.tokenizer_path}: tokenizer has {tokenizer.vocab_size} tokens, model has {model.spec.vocab_size}"
        )
    return tokenizer
