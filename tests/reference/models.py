"""Random pixellm models written straight from the spec (docs/FORMATS.md §1, §2): uint8 tensors back to back
as a near-square RGB PNG, with the meta JSON beside it. Version-0 models (`write_random_model`) and any
member of the version-1 family (`write_random_member`, `random_architecture`). Independent of engine/, so a
reader bug cannot hide behind a writer that shares its code."""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from tests.reference import oracle

V0_ORDER = ("b_hidden", "b_out", "embed", "hidden", "out")
UNIFORM_SPREAD = 74
"""Uniform bytes around the zero point have a spread of ~74: scale = wanted spread / 74."""


def image_size(n_bytes: int) -> tuple[int, int]:
    pixels = max(1, -(-n_bytes // 3))
    width = math.isqrt(pixels - 1) + 1
    return width, -(-pixels // width)


def write_tensors(
    directory: Path, rng: np.random.Generator, name: str, shapes: dict, spreads: dict, head: dict
) -> Path:
    """Random bytes for each tensor (in the order given), scales giving each its spread, and the meta."""
    tensors, offset = {}, 0
    for tensor, shape in shapes.items():
        scale = float(np.float32(spreads[tensor] / UNIFORM_SPREAD * rng.uniform(0.5, 4.0)))
        zero_point = int(rng.integers(112, 144))
        tensors[tensor] = {"offset": offset, "shape": list(shape), "scale": scale, "zero_point": zero_point}
        offset += math.prod(shape)
    width, height = image_size(offset)
    stream = np.zeros(width * height * 3, dtype=np.uint8)
    stream[:offset] = rng.integers(0, 256, offset, dtype=np.uint8)
    path = directory / f"{name}.pxi"
    Image.fromarray(stream.reshape(height, width, 3), "RGB").save(path, "PNG")
    meta = head | {
        "image": {"width": width, "height": height},
        "tensors": tensors,
        "tokenizer": f"{name}.tokenizer.json",
        "eval": {},
    }
    (directory / f"{name}.meta.json").write_text(json.dumps(meta, indent=2))
    return path


def write_random_model(
    directory: Path,
    rng: np.random.Generator,
    vocab: int = 1024,
    embed: int = 128,
    hidden: int = 128,
    window: int = 16,
    name: str = "random",
) -> Path:
    """A version-0 model (pixellm_v0's family of one): random weights scaled so activations stay O(1) and
    logits spread enough that the softmax confidence takes many values. Returns the weights path."""
    shapes = {"b_hidden": (hidden,), "b_out": (vocab,), "embed": (vocab, embed), "hidden": (embed, hidden)}
    shapes["out"] = (hidden, vocab)
    spreads = {"b_hidden": 1.0, "b_out": 1.0, "embed": 1.0, "hidden": embed**-0.5, "out": hidden**-0.5}
    head = {"format": "pixellm", "version": 0, "vocab_size": vocab, "embed_dim": embed, "hidden_dim": hidden}
    return write_tensors(directory, rng, name, shapes, spreads, head | {"context_window": window})


def member_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """The tensors of a version-1 architecture, in the table's order (docs/FORMATS.md §2.1)."""
    v, e, c = arch["vocab_size"], arch["embed_dim"], arch["context"]
    x = {"mean": e, "concat": c["window"] * e}.get(c["mode"]) or c.get("concat", 0) * e + c.get("head_dim", 0)
    shapes: dict[str, tuple[int, ...]] = {"embed": (v, e)}
    if c["mode"] == "attention":
        d = c["head_dim"]
        shapes |= {"attn.pos": (c["window"], e), "attn.query": (e, d), "attn.key": (e, d), "attn.value": (e, d)}
    widths = [x, *arch["hidden"]]
    for layer in range(len(arch["hidden"])):
        shapes |= {
            f"layer{layer}.weight": (widths[layer], widths[layer + 1]),
            f"layer{layer}.bias": (widths[layer + 1],),
        }
    return shapes | {"out.weight": (arch["hidden"][-1], v), "out.bias": (v,)}


def write_random_member(directory: Path, rng: np.random.Generator, arch: dict, name: str = "member") -> Path:
    """A version-1 model of the architecture `arch` (vocab_size, embed_dim, context, hidden, residual)."""
    shapes = member_shapes(arch)
    spreads = {n: 1.0 if len(s) == 1 or n in ("embed", "attn.pos") else s[0] ** -0.5 for n, s in shapes.items()}
    head = {"format": "pixellm", "version": 1} | arch
    return write_tensors(directory, rng, name, shapes, spreads, head)


def random_architecture(rng: np.random.Generator, mode: str | None = None, depth: int | None = None) -> dict:
    """A small random family member: any mode, 1 to 4 layers, widths from 1, vocabularies that are not
    powers of two, windows that may be longer than the prompts."""
    mode = mode or str(rng.choice(["mean", "concat", "attention"]))
    depth = depth or int(rng.integers(1, 5))
    embed = int(rng.choice([1, 3, 8, 16, 24, 33]))
    window = int(rng.choice([1, 2, 3, 5, 8, 40]))
    context: dict = {"mode": mode, "window": window}
    if mode == "attention":
        context |= {"concat": int(rng.integers(0, min(window, 3) + 1)), "head_dim": int(rng.choice([1, 4, 8, 16]))}
    if mode == "concat":
        window = min(window, 8)
        context["window"] = window
    width = int(rng.choice([1, 7, 16, 40]))
    hidden = [width if rng.random() < 0.5 else int(rng.choice([1, 5, 24, 48])) for _ in range(depth)]
    vocab = int(rng.choice([256, 300, 517, 1000]))
    return {
        "vocab_size": vocab,
        "embed_dim": embed,
        "context": context,
        "hidden": hidden,
        "residual": bool(rng.random() < 0.5),
    }


def meta_beside(weights: Path) -> dict:
    return json.loads(weights.with_name(weights.name.removesuffix(".pxi") + ".meta.json").read_text())


def params_at(weights: Path) -> dict[str, np.ndarray]:
    """The oracle's float32 weights of a model on disk, read with Pillow and json alone."""
    with Image.open(weights) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return oracle.dequantize(meta_beside(weights), pixels)


def random_rows(rng: np.random.Generator, n: int, vocab: int, max_len: int = 200) -> list[np.ndarray]:
    return [rng.integers(0, vocab, int(rng.integers(1, max_len + 1))) for _ in range(n)]
