"""Random pixellm models written straight from the spec (docs/FORMATS.md §1, §2): the five uint8 tensors
back to back in the meta's order, as a near-square RGB PNG, with the meta JSON beside it. Independent of
engine/, so a reader bug cannot hide behind a writer that shares its code."""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from tests.reference import oracle

TENSOR_ORDER = ("b_hidden", "b_out", "embed", "hidden", "out")


def shapes(vocab: int, embed: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "b_hidden": (hidden,),
        "b_out": (vocab,),
        "embed": (vocab, embed),
        "hidden": (embed, hidden),
        "out": (hidden, vocab),
    }


def image_size(n_bytes: int) -> tuple[int, int]:
    pixels = max(1, -(-n_bytes // 3))
    width = math.isqrt(pixels - 1) + 1
    return width, -(-pixels // width)


def write_random_model(
    directory: Path,
    rng: np.random.Generator,
    vocab: int = 1024,
    embed: int = 128,
    hidden: int = 128,
    window: int = 16,
    name: str = "random",
) -> Path:
    """Random uint8 weights; scales chosen so activations stay O(1) and logits spread enough that the
    softmax confidence takes many values (uniform bytes around the zero point have a spread of ~74).
    Returns the weights path (`name.pxi`, with `name.meta.json` beside it)."""
    spread = {"b_hidden": 1.0, "b_out": 1.0, "embed": 1.0, "hidden": embed**-0.5, "out": hidden**-0.5}
    tensors, offset = {}, 0
    for tensor, shape in shapes(vocab, embed, hidden).items():
        scale = float(np.float32(spread[tensor] / 74 * rng.uniform(0.5, 4.0)))
        tensors[tensor] = {
            "offset": offset,
            "shape": list(shape),
            "scale": scale,
            "zero_point": int(rng.integers(112, 144)),
        }
        offset += math.prod(shape)
    width, height = image_size(offset)
    stream = np.zeros(width * height * 3, dtype=np.uint8)
    stream[:offset] = rng.integers(0, 256, offset, dtype=np.uint8)
    path = directory / f"{name}.pxi"
    Image.fromarray(stream.reshape(height, width, 3), "RGB").save(path, "PNG")
    meta = {
        "format": "pixellm",
        "version": 0,
        "vocab_size": vocab,
        "embed_dim": embed,
        "hidden_dim": hidden,
        "context_window": window,
        "image": {"width": width, "height": height},
        "tensors": tensors,
        "tokenizer": f"{name}.tokenizer.json",
        "eval": {},
    }
    (directory / f"{name}.meta.json").write_text(json.dumps(meta, indent=2))
    return path


def meta_beside(weights: Path) -> dict:
    return json.loads(weights.with_name(weights.name.removesuffix(".pxi") + ".meta.json").read_text())


def params_at(weights: Path) -> dict[str, np.ndarray]:
    """The oracle's float32 weights of a model on disk, read with Pillow and json alone."""
    with Image.open(weights) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return oracle.dequantize(meta_beside(weights), pixels)


def random_rows(rng: np.random.Generator, n: int, vocab: int, max_len: int = 200) -> list[np.ndarray]:
    return [rng.integers(0, vocab, int(rng.integers(1, max_len + 1))) for _ in range(n)]
