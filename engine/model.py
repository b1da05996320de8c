"""A model in memory: the weight pixels exactly as stored, the spec from the meta beside them, and where its
tokenizer comes from; a model opened from a cartridge also keeps the cartridge. engine/loading.py is the
front door that opens one by name or path."""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .cartridge import Cartridge
from .errors import PxglError
from .pxi import bytes_to_pixels, read_rgb, write_rgb
from .spec import ModelSpec, meta_path_for, read_meta, spec_from_meta, write_meta
from .tokenizer import Tokenizer

WEIGHTS_SUFFIX = ".pxi"


@dataclass(frozen=True)
class Model:
    spec: ModelSpec
    weights: np.ndarray
    """The weight image, (height, width, 3) uint8, exactly as stored."""
    source: str
    tokenizer_path: Path | None = None
    """The tokenizer beside a weights .pxi (read when first needed); None for a cartridge, which holds it."""
    cartridge: Cartridge | None = None
    """The cartridge the model came from (manifest, tokenizer, program), if any."""

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The quantized bytes of one tensor, shaped as the meta says."""
        t = self.spec.tensors[name]
        return self.weights.reshape(-1)[t.offset : t.offset + t.size].reshape(t.shape)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, checked against its vocabulary (text commands only: pixels in, pixels out
        never reads it)."""
        if self.cartridge is not None:
            return self.cartridge.tokenizer
        assert self.tokenizer_path is not None
        tokenizer = Tokenizer.load(self.tokenizer_path)
        self.spec.check_vocabulary(tokenizer.vocab_size, str(self.tokenizer_path))
        return tokenizer


def read_weights(path: Path) -> Model:
    """`name.pxi` and `name.meta.json` beside it, checked against each other."""
    if path.suffix != WEIGHTS_SUFFIX:
        raise PxglError(f"{path}: weights are a {WEIGHTS_SUFFIX} file with its .meta.json beside it")
    spec = read_meta(meta_path_for(path))
    weights = read_rgb(path, expect=(spec.image_width, spec.image_height))  # the meta's size, before decoding
    spec.check_image(weights, str(path))
    return Model(spec, weights, str(path), tokenizer_path=path.with_name(spec.tokenizer))


def from_cartridge(cartridge: Cartridge) -> Model:
    return Model(cartridge.spec, cartridge.weights, str(cartridge.path), cartridge=cartridge)


def save_model(path: str | Path, spec: ModelSpec, weight_bytes: bytes) -> None:
    """Write the weight image and its meta (each atomically)."""
    path = Path(path)
    spec_from_meta(spec.to_meta(), str(meta_path_for(path)))  # never write a model no reader accepts
    if len(weight_bytes) > spec.image_bytes:
        raise ValueError("weight bytes do not fit the spec's image")
    write_rgb(path, bytes_to_pixels(weight_bytes, spec.image_width, spec.image_height))
    write_meta(meta_path_for(path), spec)
