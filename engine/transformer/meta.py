"""The version-2 meta (docs/FORMATS.md §14.1-§14.3): a decoder-only transformer as data, read and checked
into a frozen TransformerSpec — every problem one PxglError naming the key, as §2's checks are."""

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import PxglError
from ..pxi import MAX_PIXELS
from ..spec import FORMAT, MAX_IMAGE_SIDE, _echo, _int, _is_plain_file_name, _require, is_float32_scale
from .quant import BLOCK, MATRIX_QUANTS, VECTOR_QUANTS, tensor_nbytes

VERSION = 2
MAX_VOCAB = 255 * 65536
"""(0, 0, 0) would be id 255 · 65536, one past the largest vocabulary: padding is never a token (§14.5)."""
MAX_CONTEXT = 32768
MAX_WIDTH = 8192
MAX_LAYERS = 128
MAX_HEADS = 256
MAX_HEAD_DIM = 512
MAX_MLP_WIDTH = 65536
MAX_IMAGES = 32
"""A stream past one image spans at most 32 (§14.7): 6.4 GB, past 2 B weights at f16."""
MLP_KINDS = ("gelu_tanh", "gelu", "silu_gated")
NORM_KINDS = ("layernorm", "rmsnorm")
ROTATIONS = ("halves", "pairs")
SCALING_KEYS = {
    "linear": {"kind", "factor"},
    "llama3": {"kind", "factor", "low_freq_factor", "high_freq_factor", "original_context"},
}
BIAS_KEYS = ("qkv", "attn_out", "mlp", "head")
TOP_LEVEL = {"format", "version", "vocab_size", "context_length", "width", "layers", "heads", "kv_heads", "head_dim"}
TOP_LEVEL |= {"attention_scale", "mlp", "norm", "positions", "biases", "tied_head", "tensors"}


@dataclass(frozen=True)
class RopeScaling:
    kind: str
    factor: float
    low_freq_factor: float = 0.0
    high_freq_factor: float = 0.0
    original_context: int = 0


@dataclass(frozen=True)
class Rope:
    base: float
    rotation: str
    scaling: RopeScaling | None = None


@dataclass(frozen=True)
class TransformerArchitecture:
    vocab_size: int
    context_length: int
    width: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    attention_scale: float
    mlp_kind: str
    mlp_width: int
    norm_kind: str
    norm_eps: float
    rope: Rope | None
    """None: learned positions (the `pos` table)."""
    biases: frozenset[str]
    tied_head: bool

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor (§14.2), name → shape, in table order."""
        v, e, f = self.vocab_size, self.width, self.mlp_width
        hd, kd = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes: dict[str, tuple[int, ...]] = {"embed": (v, e)}
        if self.rope is None:
            shapes["pos"] = (self.context_length, e)
        norm_parts = ("weight", "bias") if self.norm_kind == "layernorm" else ("weight",)
        gated = self.mlp_kind == "silu_gated"
        for layer in range(self.layers):
            b = f"block{layer}"
            shapes |= {f"{b}.attn_norm.{p}": (e,) for p in norm_parts}
            shapes |= {f"{b}.attn.q.weight": (hd, e), f"{b}.attn.k.weight": (kd, e), f"{b}.attn.v.weight": (kd, e)}
            if "qkv" in self.biases:
                shapes |= {f"{b}.attn.q.bias": (hd,), f"{b}.attn.k.bias": (kd,), f"{b}.attn.v.bias": (kd,)}
            shapes[f"{b}.attn.out.weight"] = (e, hd)
            if "attn_out" in self.biases:
                shapes[f"{b}.attn.out.bias"] = (e,)
            shapes |= {f"{b}.mlp_norm.{p}": (e,) for p in norm_parts}
            if gated:
                shapes[f"{b}.mlp.gate.weight"] = (f, e)
            shapes |= {f"{b}.mlp.up.weight": (f, e), f"{b}.mlp.down.weight": (e, f)}
            if "mlp" in self.biases:
                shapes |= {f"{b}.mlp.gate.bias": (f,)} if gated else {}
                shapes |= {f"{b}.mlp.up.bias": (f,), f"{b}.mlp.down.bias": (e,)}
        shapes |= {f"final_norm.{p}": (e,) for p in norm_parts}
        if not self.tied_head:
            shapes["head.weight"] = (v, e)
        if "head" in self.biases:
            shapes["head.bias"] = (v,)
        return shapes

    def to_json(self) -> dict[str, Any]:
        positions: dict[str, Any] = {"kind": "learned"}
        if self.rope is not None:
            positions = {"kind": "rope", "base": self.rope.base, "rotation": self.rope.rotation}
            if (s := self.rope.scaling) is not None:
                positions["scaling"] = {"kind": s.kind, "factor": s.factor}
                if s.kind == "llama3":
                    positions["scaling"] |= {
                        "low_freq_factor": s.low_freq_factor,
                        "high_freq_factor": s.high_freq_factor,
                    }
                    positions["scaling"]["original_context"] = s.original_context
        return {
            "vocab_size": self.vocab_size,
            "context_length": self.context_length,
            "width": self.width,
            "layers": self.layers,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "attention_scale": self.attention_scale,
            "mlp": {"kind": self.mlp_kind, "width": self.mlp_width},
            "norm": {"kind": self.norm_kind, "eps": self.norm_eps},
            "positions": positions,
            "biases": {key: key in self.biases for key in BIAS_KEYS},
            "tied_head": self.tied_head,
        }


@dataclass(frozen=True)
class QuantizedTensor:
    name: str
    offset: int
    shape: tuple[int, ...]
    quant: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.quant)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"offset": self.offset, "shape": list(self.shape), "quant": self.quant}
        return entry | ({"scale": self.scale, "zero_point": self.zero_point} if self.quant == "u8" else {})


@dataclass(frozen=True)
class TransformerSpec:
    architecture: TransformerArchitecture
    images: tuple[tuple[int, int], ...]
    """(width, height) of each weight image, image 0 first (§14.7: the byte stream is their concatenation)."""
    tensors: dict[str, QuantizedTensor]
    bos: int | None = None
    tokenizer: str | None = None
    """None: the model takes and gives token pixels only."""
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def image_bytes(self) -> list[int]:
        """Each image's share of the weight byte stream: its whole width x height x 3 bytes."""
        return [width * height * 3 for width, height in self.images]

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, **self.architecture.to_json()}
        meta |= {} if self.bos is None else {"bos": self.bos}
        sizes = [{"width": width, "height": height} for width, height in self.images]
        meta |= {"image": sizes[0]} if len(sizes) == 1 else {"images": sizes}
        meta["tensors"] = {name: t.to_json() for name, t in self.tensors.items()}
        meta |= {} if self.tokenizer is None else {"tokenizer": self.tokenizer}
        return meta | ({"eval": self.evaluation} if self.evaluation else {})


def few(names: set[str], shown: int = 4) -> str:
    """Sorted names, the first `shown` of them and how many in all past that: a line, not a model's table."""
    listed = [_echo(name) for name in sorted(names)[:shown]]
    return f"[{', '.join(listed)}{f', … {len(names)} in all' if len(names) > shown else ''}]"


def _number(raw: dict, key: str, where: str, lo: float, hi: float, open_lo: bool = False) -> float:
    """A finite JSON number in [lo, hi] ((lo, hi] when open_lo)."""
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PxglError(f"{where}: '{key}' must be a finite number, got {_echo(value)}")
    if not (lo < value if open_lo else lo <= value) or value > hi:
        raise PxglError(f"{where}: '{key}' = {value} is outside {'(' if open_lo else '['}{lo:g}, {hi:g}]")
    return float(value)


def _object(raw: Any, keys: set[str], where: str) -> dict:
    if not isinstance(raw, dict) or set(raw) != keys:
        got = ", ".join(sorted(map(str, raw))) if isinstance(raw, dict) else _echo(raw)
        raise PxglError(f"{where} must be an object with exactly {', '.join(sorted(keys))}; got {got}")
    return raw


def _kind(raw: Any, kinds: tuple[str, ...] | dict, where: str) -> str:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if not isinstance(kind, str) or kind not in kinds:
        raise PxglError(f"{where}: 'kind' must be one of {', '.join(kinds)}, got {_echo(kind)}")
    return kind


def _bool(raw: dict, key: str, where: str) -> bool:
    if not isinstance(raw[key], bool):
        raise PxglError(f"{where}: '{key}' must be true or false, got {_echo(raw[key])}")
    return raw[key]


def _rope(raw: dict, where: str) -> Rope:
    base = _number(raw, "base", where, 1, 1e9, open_lo=True)
    if raw["rotation"] not in ROTATIONS:
        raise PxglError(f"{where}: 'rotation' must be one of {', '.join(ROTATIONS)}, got {_echo(raw['rotation'])}")
    if "scaling" not in raw:
        return Rope(base, raw["rotation"])
    at = f"{where}.scaling"
    kind = _kind(raw["scaling"], SCALING_KEYS, at)
    scaling = _object(raw["scaling"], SCALING_KEYS[kind], at)
    factor = _number(scaling, "factor", at, 1, 1024)
    if kind == "linear":
        return Rope(base, raw["rotation"], RopeScaling(kind, factor))
    lo = _number(scaling, "low_freq_factor", at, 0, 1024, open_lo=True)
    hi = _number(scaling, "high_freq_factor", at, lo, 1024, open_lo=True)
    original = _int(scaling, "original_context", at, 1, 1 << 24)
    return Rope(base, raw["rotation"], RopeScaling(kind, factor, lo, hi, original))


def architecture_from_meta(meta: dict, where: str) -> TransformerArchitecture:
    vocab = _int(meta, "vocab_size", where, 2, MAX_VOCAB)
    heads = _int(meta, "heads", where, 1, MAX_HEADS)
    kv_heads = _int(meta, "kv_heads", where, 1, heads)
    if heads % kv_heads:
        raise PxglError(f"{where}: 'heads' {heads} is not a multiple of 'kv_heads' {kv_heads}")
    mlp_kind = _kind(meta["mlp"], MLP_KINDS, f"{where}: mlp")
    mlp = _object(meta["mlp"], {"kind", "width"}, f"{where}: mlp")
    norm_kind = _kind(meta["norm"], NORM_KINDS, f"{where}: norm")
    norm = _object(meta["norm"], {"kind", "eps"}, f"{where}: norm")
    positions_kind = _kind(meta["positions"], ("learned", "rope"), f"{where}: positions")
    rope = None
    if positions_kind == "rope":
        keys = set(meta["positions"]) & {"scaling"} | {"kind", "base", "rotation"}
        rope = _rope(_object(meta["positions"], keys, f"{where}: positions"), f"{where}: positions")
    else:
        _object(meta["positions"], {"kind"}, f"{where}: positions")
    head_dim = _int(meta, "head_dim", where, 1, MAX_HEAD_DIM)
    if rope is not None and head_dim % 2:
        raise PxglError(f"{where}: 'head_dim' {head_dim} must be even: RoPE rotates pairs of elements")
    biases = _object(meta["biases"], set(BIAS_KEYS), f"{where}: biases")
    return TransformerArchitecture(
        vocab_size=vocab,
        context_length=_int(meta, "context_length", where, 2, MAX_CONTEXT),
        width=_int(meta, "width", where, 1, MAX_WIDTH),
        layers=_int(meta, "layers", where, 1, MAX_LAYERS),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        attention_scale=_number(meta, "attention_scale", where, 0, 16, open_lo=True),
        mlp_kind=mlp_kind,
        mlp_width=_int(mlp, "width", f"{where}: mlp", 1, MAX_MLP_WIDTH),
        norm_kind=norm_kind,
        norm_eps=_number(norm, "eps", f"{where}: norm", 1e-12, 1),
        rope=rope,
        biases=frozenset(key for key in BIAS_KEYS if _bool(biases, key, f"{where}: biases")),
        tied_head=_bool(meta, "tied_head", where),
    )


def _tensor(name: str, raw: Any, shape: tuple[int, ...], capacity: int, where: str) -> QuantizedTensor:
    where = f"{where}: tensor '{name}'"
    quant = raw.get("quant") if isinstance(raw, dict) else None
    allowed = MATRIX_QUANTS if len(shape) == 2 else VECTOR_QUANTS
    if quant not in allowed:
        raise PxglError(f"{where}: 'quant' must be one of {', '.join(allowed)}, got {_echo(quant)}")
    keys = {"offset", "shape", "quant"} | ({"scale", "zero_point"} if quant == "u8" else set())
    raw = _object(raw, keys, where)
    got_shape = raw["shape"]
    if not (isinstance(got_shape, list) and all(type(d) is int for d in got_shape)) or tuple(got_shape) != shape:
        raise PxglError(f"{where}: shape {_echo(got_shape)} does not match the model's dimensions {list(shape)}")
    if quant in ("q8", "q4") and shape[-1] % BLOCK:
        raise PxglError(f"{where}: {quant} blocks need rows of a multiple of {BLOCK} weights, not {shape[-1]}")
    offset = _int(raw, "offset", where, 0, capacity)
    if offset % 4:
        raise PxglError(f"{where}: offset {offset} is not a multiple of 4")
    scale, zero_point = 0.0, 0
    if quant == "u8":
        if not is_float32_scale(raw["scale"]):
            raise PxglError(f"{where}: scale must be a positive number that float32 holds, got {_echo(raw['scale'])}")
        scale = float(raw["scale"])
        zero_point = _int(raw, "zero_point", where, 0, 255)
    tensor = QuantizedTensor(name, offset, shape, quant, scale, zero_point)
    if offset + tensor.nbytes > capacity:
        raise PxglError(f"{where}: bytes {offset}..{offset + tensor.nbytes} run past the images' {capacity} bytes")
    return tensor


def transformer_spec_from_meta(meta: Any, where: str = "meta") -> TransformerSpec:
    """Validate a parsed version-2 meta document (§14.1) and build its spec."""
    if not isinstance(meta, dict):
        raise PxglError(f"{where}: expected a JSON object")
    if meta.get("format") != FORMAT or type(meta.get("version")) is not int or meta["version"] != VERSION:
        raise PxglError(f"{where}: not a {FORMAT} version-{VERSION} meta (docs/FORMATS.md §14)")
    _require(meta, TOP_LEVEL, where)
    images = _images(meta, where)
    architecture = architecture_from_meta(meta, where)
    bos = _int(meta, "bos", where, 0, architecture.vocab_size - 1) if "bos" in meta else None
    tokenizer = meta.get("tokenizer")
    if "tokenizer" in meta and not (isinstance(tokenizer, str) and _is_plain_file_name(tokenizer)):
        raise PxglError(f"{where}: 'tokenizer' must be a plain file name beside the meta, got {_echo(tokenizer)}")
    shapes = architecture.shapes()
    raw_tensors = meta["tensors"]
    if not isinstance(raw_tensors, dict) or set(raw_tensors) != set(shapes):
        got = set(raw_tensors) if isinstance(raw_tensors, dict) else set()
        missing, extra = few(set(shapes) - got), few(got - set(shapes))
        raise PxglError(f"{where}: 'tensors' must name exactly the architecture's: missing {missing}, extra {extra}")
    capacity = sum(width * height * 3 for width, height in images)
    tensors = {name: _tensor(name, raw_tensors[name], shape, capacity, where) for name, shape in shapes.items()}
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values())
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise PxglError(f"{where}: tensors '{a}' and '{b}' overlap (bytes {start}..{end})")
    evaluation = meta.get("eval", {})
    if not isinstance(evaluation, dict):
        raise PxglError(f"{where}: 'eval' must be an object")
    return TransformerSpec(architecture, images, tensors, bos, tokenizer, evaluation)


def _image_size(raw: Any, where: str) -> tuple[int, int]:
    image = _object(raw, {"width", "height"}, where)
    width = _int(image, "width", where, 1, MAX_IMAGE_SIDE)
    height = _int(image, "height", where, 1, MAX_IMAGE_SIDE)
    if width * height > MAX_PIXELS:
        raise PxglError(f"{where}: a {width}x{height} image is past the pixel-file limit of {MAX_PIXELS} pixels")
    return width, height


def _images(meta: dict, where: str) -> tuple[tuple[int, int], ...]:
    """`image`, or `images` for a stream past one image (§14.7): exactly one of the two."""
    if ("image" in meta) == ("images" in meta):
        raise PxglError(
            f"{where}: a meta has 'image' (one weight image) or 'images' (several images, §14.7): exactly one"
        )
    if "image" in meta:
        return (_image_size(meta["image"], f"{where}: image"),)
    raw = meta["images"]
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_IMAGES:
        got = f"{len(raw)} entries" if isinstance(raw, list) else _echo(raw)
        raise PxglError(f"{where}: 'images' must be a list of 2 to {MAX_IMAGES} image sizes, got {got}")
    return tuple(_image_size(size, f"{where}: images[{k}]") for k, size in enumerate(raw))


def architecture_record(a: TransformerArchitecture) -> dict[str, Any]:
    """The architecture in flat words and numbers (inspect prints a dict a line)."""
    if a.rope is None:
        positions = "learned"
    else:
        scaling = "" if a.rope.scaling is None else f", {a.rope.scaling.kind} scaling factor {a.rope.scaling.factor:g}"
        positions = f"rope base {a.rope.base:g} {a.rope.rotation}{scaling}"
    return {
        "version": 2,
        "vocab_size": a.vocab_size,
        "context_length": a.context_length,
        "width": a.width,
        "layers": a.layers,
        "heads": a.heads,
        "kv_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "mlp": f"{a.mlp_kind} {a.mlp_width}",
        "norm": f"{a.norm_kind} eps {a.norm_eps:g}",
        "positions": positions,
        "biases": ",".join(sorted(a.biases)) or "none",
        "tied_head": a.tied_head,
        "weights": sum(math.prod(shape) for shape in a.shapes().values()),
    }
