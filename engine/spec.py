"""The model's shape and byte layout: a frozen ModelSpec built from the meta JSON (docs/FORMATS.md)."""

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .pxi import atomic_write, image_size_for, parse_json, read_text

FORMAT = "pixellm"
VERSION = 0
TENSOR_ORDER = ("b_hidden", "b_out", "embed", "hidden", "out")
MAX_VOCAB = 65536
"""Token ids travel in two bytes (R = id % 256, G = id // 256)."""
MAX_DIM = 4096
MAX_IMAGE_SIDE = 16384
MAX_CONTEXT_WINDOW = MAX_IMAGE_SIDE
"""The token texture the GPU reads is context_window pixels wide, so no texture limit may be exceeded."""


@dataclass(frozen=True)
class Tensor:
    name: str
    offset: int
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelSpec:
    vocab_size: int
    embed_dim: int
    hidden_dim: int
    context_window: int
    image_width: int
    image_height: int
    tensors: dict[str, Tensor]
    tokenizer: str
    eval: dict[str, Any]

    @property
    def logits_side(self) -> int:
        """Side of the square logits texture: ceil(sqrt(vocab))."""
        return math.isqrt(self.vocab_size - 1) + 1

    @property
    def image_bytes(self) -> int:
        return self.image_width * self.image_height * 3

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return expected_shapes(self.vocab_size, self.embed_dim, self.hidden_dim)

    def check_image(self, weights: np.ndarray, source: str) -> None:
        """The weight image must be exactly as large as the meta says."""
        height, width, _ = weights.shape
        if (width, height) != (self.image_width, self.image_height):
            raise PxglError(
                f"{source}: image is {width}x{height} but its meta says {self.image_width}x{self.image_height}"
            )

    def check_vocabulary(self, tokens: int, source: str) -> None:
        """A tokenizer of `tokens` tokens must be this model's."""
        if tokens != self.vocab_size:
            raise PxglError(f"{source}: tokenizer has {tokens} tokens, model has {self.vocab_size}")

    def to_meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "context_window": self.context_window,
            "image": {"width": self.image_width, "height": self.image_height},
            "tensors": {
                t.name: {"offset": t.offset, "shape": list(t.shape), "scale": t.scale, "zero_point": t.zero_point}
                for t in self.tensors.values()
            },
            "tokenizer": self.tokenizer,
            "eval": self.eval,
        }


def expected_shapes(vocab: int, embed: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "b_hidden": (hidden,),
        "b_out": (vocab,),
        "embed": (vocab, embed),
        "hidden": (embed, hidden),
        "out": (hidden, vocab),
    }


def meta_path_for(weights: Path) -> Path:
    """`name.pxi` → `name.meta.json` beside it."""
    return weights.with_name(weights.name.removesuffix(".pxi") + ".meta.json")


def _int(meta: dict, key: str, where: str, lo: int, hi: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PxglError(f"{where}: '{key}' must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise PxglError(f"{where}: '{key}' = {value} is outside {lo}..{hi}")
    return value


def _is_float32_scale(value: Any) -> bool:
    """Executors dequantize in float32: a scale that overflows there or rounds to 0 would be silently wrong."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        as_float = float(value)
    except OverflowError:
        return False
    with np.errstate(over="ignore"):
        single = np.float32(as_float)
    return bool(np.isfinite(single)) and single > 0


def _tensor(name: str, raw: Any, shape: tuple[int, ...], capacity: int, where: str) -> Tensor:
    where = f"{where}: tensor '{name}'"
    if not isinstance(raw, dict):
        raise PxglError(f"{where} must be an object with offset, shape, scale, zero_point")
    missing = {"offset", "shape", "scale", "zero_point"} - raw.keys()
    if missing:
        raise PxglError(f"{where} lacks {', '.join(sorted(missing))}")
    offset = _int(raw, "offset", where, 0, capacity)
    zero_point = _int(raw, "zero_point", where, 0, 255)
    got_shape = raw["shape"]
    if not isinstance(got_shape, list) or tuple(got_shape) != shape:
        raise PxglError(f"{where}: shape {got_shape!r} does not match the model's dimensions {list(shape)}")
    scale = raw["scale"]
    if not _is_float32_scale(scale):
        raise PxglError(
            f"{where}: scale must be a positive number that float32 holds (no overflow, no underflow "
            f"to 0), got {scale!r}"
        )
    tensor = Tensor(name, offset, shape, float(scale), zero_point)
    if offset + tensor.size > capacity:
        raise PxglError(f"{where}: bytes {offset}..{offset + tensor.size} run past the image's {capacity} bytes")
    return tensor


def _is_plain_file_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def spec_from_meta(meta: Any, where: str = "meta") -> ModelSpec:
    """Validate a parsed meta document and build the spec; every problem is one PxglError naming it."""
    if not isinstance(meta, dict):
        raise PxglError(f"{where}: expected a JSON object")
    required = {
        "format",
        "version",
        "vocab_size",
        "embed_dim",
        "hidden_dim",
        "context_window",
        "image",
        "tensors",
        "tokenizer",
    }
    missing = required - meta.keys()
    if missing:
        raise PxglError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    version = meta["version"]
    if meta["format"] != FORMAT or isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise PxglError(
            f"{where}: format {meta['format']!r} version {meta['version']!r}; pxgl reads {FORMAT!r} version {VERSION}"
        )
    vocab = _int(meta, "vocab_size", where, 2, MAX_VOCAB)
    embed = _int(meta, "embed_dim", where, 1, MAX_DIM)
    hidden = _int(meta, "hidden_dim", where, 1, MAX_DIM)
    window = _int(meta, "context_window", where, 1, MAX_CONTEXT_WINDOW)
    image = meta["image"]
    if not isinstance(image, dict):
        raise PxglError(f"{where}: 'image' must be an object with width and height")
    width = _int(image, "width", f"{where}: image", 1, MAX_IMAGE_SIDE)
    height = _int(image, "height", f"{where}: image", 1, MAX_IMAGE_SIDE)
    tokenizer = meta["tokenizer"]
    if not isinstance(tokenizer, str) or not _is_plain_file_name(tokenizer):
        raise PxglError(f"{where}: 'tokenizer' must be a plain file name beside the meta, got {tokenizer!r}")
    raw_tensors = meta["tensors"]
    if not isinstance(raw_tensors, dict) or set(raw_tensors) != set(TENSOR_ORDER):
        got = sorted(raw_tensors) if isinstance(raw_tensors, dict) else raw_tensors
        raise PxglError(f"{where}: 'tensors' must name exactly {', '.join(TENSOR_ORDER)}; got {got}")
    capacity = width * height * 3
    shapes = expected_shapes(vocab, embed, hidden)
    tensors = {n: _tensor(n, raw_tensors[n], shapes[n], capacity, where) for n in TENSOR_ORDER}
    spans = sorted((t.offset, t.offset + t.size, t.name) for t in tensors.values())
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise PxglError(f"{where}: tensors '{a}' and '{b}' overlap (bytes {start}..{end})")
    evaluation = meta.get("eval", {})
    if not isinstance(evaluation, dict):
        raise PxglError(f"{where}: 'eval' must be an object")
    return ModelSpec(vocab, embed, hidden, window, width, height, tensors, tokenizer, evaluation)


def read_meta(path: Path) -> ModelSpec:
    text = read_text(path, "meta file", " (a weights .pxi needs its .meta.json beside it)")
    return spec_from_meta(parse_json(text, str(path)), str(path))


def write_meta(path: Path, spec: ModelSpec) -> None:
    text = json.dumps(spec.to_meta(), indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def layout_tensors(
    vocab: int, embed: int, hidden: int, quant: dict[str, tuple[float, int]]
) -> tuple[dict[str, Tensor], int, int]:
    """Pack the tensors back to back in TENSOR_ORDER; returns (tensors, image width, image height)."""
    tensors, offset = {}, 0
    for name, shape in expected_shapes(vocab, embed, hidden).items():
        scale, zero_point = quant[name]
        tensors[name] = Tensor(name, offset, shape, scale, zero_point)
        offset += tensors[name].size
    width, height = image_size_for(offset)
    return tensors, width, height
