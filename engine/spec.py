"""The model's shape and byte layout: a frozen ModelSpec built from the meta JSON (docs/FORMATS.md §2).

A spec describes one member of the pixellm family — context mode, window, widths, depth — and where each
of its uint8 tensors sits in the weight image. Version-0 metas (pixellm_v0) read as the version-1 member
they are: mean context, one hidden layer, their five tensors renamed (V0_NAMES)."""

import itertools
import math
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .pxi import MAX_PIXELS, image_size_for, parse_json, read_text

FORMAT = "pixellm"
VERSION = 1
"""The newest meta version this engine reads and writes (0 is read too, and written back as 0)."""
MODES = ("mean", "concat", "attention")
MIN_VOCAB = 256
"""Version 1: every byte is a token (the tokenizer's first 256 ids)."""
MAX_VOCAB = 65536
"""Token ids travel in two bytes (R = id % 256, G = id // 256)."""
MAX_DIM = 4096
MAX_LAYERS = 4
MAX_IMAGE_SIDE = 16384
MAX_CONTEXT_WINDOW = MAX_IMAGE_SIDE
"""The token texture the GPU reads is context_window pixels wide, so no texture limit may be exceeded."""
V0_NAMES = {
    "b_hidden": "layer0.bias",
    "b_out": "out.bias",
    "embed": "embed",
    "hidden": "layer0.weight",
    "out": "out.weight",
}
"""A version-0 meta's tensor names, in its byte order, and the version-1 names they are."""
ATTENTION_TENSORS = ("attn.pos", "attn.query", "attn.key", "attn.value")


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
class Context:
    """How the last tokens become the first layer's input (docs/FORMATS.md §3)."""

    mode: str
    window: int
    concat: int = 0
    """attention only: the last embeddings set beside the head's output."""
    head_dim: int = 0
    """attention only: width of the query, key and value."""

    def width(self, embed_dim: int) -> int:
        """X: the first layer's input width."""
        if self.mode == "mean":
            return embed_dim
        if self.mode == "concat":
            return self.window * embed_dim
        return self.concat * embed_dim + self.head_dim

    def to_json(self) -> dict[str, Any]:
        if self.mode == "attention":
            return {"mode": self.mode, "window": self.window, "concat": self.concat, "head_dim": self.head_dim}
        return {"mode": self.mode, "window": self.window}


@dataclass(frozen=True)
class Architecture:
    """A family member's shape, without its weights' layout: what `pxgl train` and `pxgl evolve` choose."""

    vocab_size: int
    embed_dim: int
    context: Context
    hidden: tuple[int, ...]
    residual: bool = False

    @property
    def context_dim(self) -> int:
        return self.context.width(self.embed_dim)

    def layer_dims(self) -> list[tuple[int, int]]:
        """(in, out) of each hidden layer."""
        ins = (self.context_dim, *self.hidden[:-1])
        return list(zip(ins, self.hidden, strict=True))

    def is_residual(self, layer: int) -> bool:
        """Layer l ≥ 1 adds its input when residual and its widths are equal."""
        n_in, n_out = self.layer_dims()[layer]
        return self.residual and layer > 0 and n_in == n_out

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, in the tensor table's order (docs/FORMATS.md §2.1)."""
        v, e, c = self.vocab_size, self.embed_dim, self.context
        shapes: dict[str, tuple[int, ...]] = {"embed": (v, e)}
        if c.mode == "attention":
            shapes |= {"attn.pos": (c.window, e), "attn.query": (e, c.head_dim)}
            shapes |= {"attn.key": (e, c.head_dim), "attn.value": (e, c.head_dim)}
        for layer, (n_in, n_out) in enumerate(self.layer_dims()):
            shapes |= {f"layer{layer}.weight": (n_in, n_out), f"layer{layer}.bias": (n_out,)}
        return shapes | {"out.weight": (self.hidden[-1], v), "out.bias": (v,)}

    def weight_count(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())

    def to_json(self) -> dict[str, Any]:
        """The architecture as a v1 meta writes it (docs/FORMATS.md §2.2)."""
        return {
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
            "context": self.context.to_json(),
            "hidden": list(self.hidden),
            "residual": self.residual,
        }

    def flops(self) -> int:
        """Multiply-adds of one prediction (the context's table reads not counted)."""
        c, e = self.context, self.embed_dim
        head = 3 * c.window * e * c.head_dim + 2 * c.window * c.head_dim if c.mode == "attention" else 0
        return head + sum(a * b for a, b in self.layer_dims()) + self.hidden[-1] * self.vocab_size

    def describe(self) -> str:
        c = self.context
        mode = f"{c.mode} {c.window}" + (f" (concat {c.concat}, head {c.head_dim})" if c.mode == "attention" else "")
        widths = "x".join(str(h) for h in self.hidden)
        return f"vocab {self.vocab_size}, embed {self.embed_dim}, {mode}, hidden {widths}" + (
            ", residual" if self.residual else ""
        )


@dataclass(frozen=True)
class ModelSpec:
    version: int
    """The meta's version as read (0 for pixellm_v0); a spec is written back in the same version."""
    architecture: Architecture
    image_width: int
    image_height: int
    tensors: dict[str, Tensor]
    """By version-1 name, in the tensor table's order."""
    tokenizer: str
    eval: dict[str, Any]

    # --- the architecture's numbers, by the names the engine uses --------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.architecture.vocab_size

    @property
    def embed_dim(self) -> int:
        return self.architecture.embed_dim

    @property
    def context(self) -> Context:
        return self.architecture.context

    @property
    def context_window(self) -> int:
        return self.architecture.context.window

    @property
    def context_dim(self) -> int:
        return self.architecture.context_dim

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.architecture.hidden

    @property
    def logits_side(self) -> int:
        """Side of the square logits texture: ceil(sqrt(vocab))."""
        return math.isqrt(self.vocab_size - 1) + 1

    @property
    def image_bytes(self) -> int:
        return self.image_width * self.image_height * 3

    def meta_name(self, name: str) -> str:
        """A tensor's name as this spec's meta spells it (version 0 has its own five names)."""
        if self.version == 0:
            return next(v0 for v0, v1 in V0_NAMES.items() if v1 == name)
        return name

    @property
    def tensor_order(self) -> tuple[str, ...]:
        """The tensor table (pxVM version 1 addresses tensors by index in it)."""
        return tuple(self.tensors)

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
        """The meta document, in the version it was read in."""
        a = self.architecture
        tensors = {
            name: {"offset": t.offset, "shape": list(t.shape), "scale": t.scale, "zero_point": t.zero_point}
            for name, t in self.tensors.items()
        }
        head: dict[str, Any] = {"format": FORMAT, "version": self.version, "vocab_size": a.vocab_size}
        if self.version == 0:
            by_v1 = {v1: v0 for v0, v1 in V0_NAMES.items()}
            head |= {"embed_dim": a.embed_dim, "hidden_dim": a.hidden[0], "context_window": a.context.window}
            tensors = {by_v1[name]: tensors[name] for name in sorted(tensors, key=lambda n: self.tensors[n].offset)}
        else:
            head |= a.to_json()
        return head | {
            "image": {"width": self.image_width, "height": self.image_height},
            "tensors": tensors,
            "tokenizer": self.tokenizer,
            "eval": self.eval,
        }


def meta_path_for(weights: Path) -> Path:
    """`name.pxi` → `name.meta.json` beside it."""
    return weights.with_name(weights.name.removesuffix(".pxi") + ".meta.json")


# --- reading ----------------------------------------------------------------------------------------


def _int(meta: dict, key: str, where: str, lo: int, hi: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PxglError(f"{where}: '{key}' must be an integer, got {_echo(value)}")
    if not lo <= value <= hi:
        raise PxglError(f"{where}: '{key}' = {value} is outside {lo}..{hi}")
    return value


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def is_float32_scale(value: Any) -> bool:
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
    integers = isinstance(got_shape, list) and all(type(d) is int for d in got_shape)  # not 64.0, not true
    if not integers or tuple(got_shape) != shape:
        raise PxglError(f"{where}: shape {_echo(got_shape)} does not match the model's dimensions {list(shape)}")
    scale = raw["scale"]
    if not is_float32_scale(scale):
        raise PxglError(
            f"{where}: scale must be a positive number that float32 holds (no overflow, no underflow "
            f"to 0), got {_echo(scale)}"
        )
    tensor = Tensor(name, offset, shape, float(scale), zero_point)
    if offset + tensor.size > capacity:
        raise PxglError(f"{where}: bytes {offset}..{offset + tensor.size} run past the image's {capacity} bytes")
    return tensor


def _is_plain_file_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(c in "/\\" or unicodedata.category(c) == "Cc" for c in name)


def _require(meta: dict, keys: set[str], where: str) -> None:
    missing = keys - meta.keys()
    if missing:
        raise PxglError(f"{where}: missing key(s) {', '.join(sorted(missing))}")


def _context(raw: Any, where: str) -> Context:
    where = f"{where}: context"
    if not isinstance(raw, dict) or "mode" not in raw:
        raise PxglError(f"{where} must be an object with mode and window (docs/FORMATS.md §2.1)")
    mode = raw["mode"]
    if mode not in MODES:
        raise PxglError(f"{where}: mode {_echo(mode)} is not one of {', '.join(MODES)}")
    keys = {"mode", "window", "concat", "head_dim"} if mode == "attention" else {"mode", "window"}
    if set(raw) != keys:
        expected, got = ", ".join(sorted(keys)), ", ".join(sorted(map(str, raw)))
        raise PxglError(f"{where}: the {mode} context has exactly {expected}; got {got}")
    window = _int(raw, "window", where, 1, MAX_CONTEXT_WINDOW)
    if mode != "attention":
        return Context(mode, window)
    concat = _int(raw, "concat", where, 0, window)
    head_dim = _int(raw, "head_dim", where, 1, MAX_DIM)
    return Context(mode, window, concat, head_dim)


def _hidden(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        raise PxglError(f"{where}: 'hidden' must list 1 to {MAX_LAYERS} layer widths, got {_echo(raw)}")
    for layer, width in enumerate(raw):
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_DIM:
            raise PxglError(f"{where}: hidden layer {layer} width {_echo(width)} is outside 1..{MAX_DIM}")
    return tuple(raw)


def architecture_from_meta(meta: dict, where: str) -> Architecture:
    """The architecture a validated-format meta of either version describes."""
    version = meta["version"]
    if version == 0:
        _require(meta, {"vocab_size", "embed_dim", "hidden_dim", "context_window"}, where)
        vocab = _int(meta, "vocab_size", where, 2, MAX_VOCAB)
        embed = _int(meta, "embed_dim", where, 1, MAX_DIM)
        hidden = _int(meta, "hidden_dim", where, 1, MAX_DIM)
        window = _int(meta, "context_window", where, 1, MAX_CONTEXT_WINDOW)
        return Architecture(vocab, embed, Context("mean", window), (hidden,))
    _require(meta, {"vocab_size", "embed_dim", "context", "hidden", "residual"}, where)
    vocab = _int(meta, "vocab_size", where, MIN_VOCAB, MAX_VOCAB)
    embed = _int(meta, "embed_dim", where, 1, MAX_DIM)
    context = _context(meta["context"], where)
    hidden = _hidden(meta["hidden"], where)
    if not isinstance(meta["residual"], bool):
        raise PxglError(f"{where}: 'residual' must be true or false, got {_echo(meta['residual'])}")
    return Architecture(vocab, embed, context, hidden, meta["residual"])


def spec_from_meta(meta: Any, where: str = "meta") -> ModelSpec:
    """Validate a parsed meta document and build the spec; every problem is one PxglError naming it."""
    if not isinstance(meta, dict):
        raise PxglError(f"{where}: expected a JSON object")
    _require(meta, {"format", "version", "image", "tensors", "tokenizer"}, where)
    version = meta["version"]
    if meta["format"] != FORMAT or isinstance(version, bool) or not isinstance(version, int) or not version >= 0:
        raise PxglError(
            f"{where}: format {_echo(meta['format'])} version {_echo(version)}; pxgl reads {FORMAT!r} versions "
            f"0 to {VERSION}"
        )
    if version > VERSION:
        raise PxglError(f"{where}: pixellm meta version {version}; this pxgl reads 0 to {VERSION}: upgrade pxgl")
    architecture = architecture_from_meta(meta, where)
    image = meta["image"]
    if not isinstance(image, dict):
        raise PxglError(f"{where}: 'image' must be an object with width and height")
    width = _int(image, "width", f"{where}: image", 1, MAX_IMAGE_SIDE)
    height = _int(image, "height", f"{where}: image", 1, MAX_IMAGE_SIDE)
    if width * height > MAX_PIXELS:
        raise PxglError(f"{where}: a {width}x{height} image is past the pixel-file limit of {MAX_PIXELS} pixels")
    tokenizer = meta["tokenizer"]
    if not isinstance(tokenizer, str) or not _is_plain_file_name(tokenizer):
        raise PxglError(f"{where}: 'tokenizer' must be a plain file name beside the meta, got {_echo(tokenizer)}")
    shapes = architecture.shapes()
    names = {v0: v1 for v0, v1 in V0_NAMES.items()} if version == 0 else {name: name for name in shapes}
    raw_tensors = meta["tensors"]
    if not isinstance(raw_tensors, dict) or set(raw_tensors) != set(names):
        got = sorted(raw_tensors) if isinstance(raw_tensors, dict) else _echo(raw_tensors)
        raise PxglError(f"{where}: 'tensors' must name exactly {', '.join(names)}; got {got}")
    capacity = width * height * 3
    read = {raw: _tensor(raw, raw_tensors[raw], shapes[v1], capacity, where) for raw, v1 in names.items()}
    spans = sorted((t.offset, t.offset + t.size, raw) for raw, t in read.items())
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise PxglError(f"{where}: tensors '{a}' and '{b}' overlap (bytes {start}..{end})")
    by_v1 = {v1: replace(read[raw], name=v1) for raw, v1 in names.items()}
    tensors = {name: by_v1[name] for name in shapes}
    evaluation = meta.get("eval", {})
    if not isinstance(evaluation, dict):
        raise PxglError(f"{where}: 'eval' must be an object")
    return ModelSpec(version, architecture, width, height, tensors, tokenizer, evaluation)


def read_meta_document(path: Path) -> Any:
    """The meta file's parsed JSON, not yet validated."""
    text = read_text(path, "meta file", " (a weights .pxi needs its .meta.json beside it)")
    return parse_json(text, str(path))


def read_meta(path: Path) -> ModelSpec:
    return spec_from_meta(read_meta_document(path), str(path))


# --- laying a model out -----------------------------------------------------------------------------


def layout(
    architecture: Architecture, quant: dict[str, tuple[float, int]], tokenizer: str, evaluation: dict[str, Any]
) -> ModelSpec:
    """A version-1 spec with the tensors back to back in the table's order, in the near-square image that
    holds them; `quant` gives each tensor's (scale, zero_point). Refused past the pixel-file limit."""
    tensors, offset = {}, 0
    for name, shape in architecture.shapes().items():
        scale, zero_point = quant[name]
        tensors[name] = Tensor(name, offset, shape, scale, zero_point)
        offset += tensors[name].size
    width, height = image_size_for(offset)
    if width * height > MAX_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise PxglError(
            f"{architecture.describe()}: {offset:,} weight bytes need a {width}x{height} image, past the "
            f"pixel-file limit of {MAX_PIXELS:,} pixels"
        )
    return ModelSpec(VERSION, architecture, width, height, tensors, tokenizer, evaluation)
