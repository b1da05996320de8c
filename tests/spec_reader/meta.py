"""§14.1 meta checks, §14.2 tensor table, §14.7 weight images, §1 byte stream (FORMATS only)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


class SpecError(ValueError):
    """A file the spec says a reader refuses."""


TOP_KEYS = {
    "format": str,
    "version": int,
    "vocab_size": int,
    "context_length": int,
    "width": int,
    "layers": int,
    "heads": int,
    "kv_heads": int,
    "head_dim": int,
    "attention_scale": float,
    "mlp": dict,
    "norm": dict,
    "positions": dict,
    "biases": dict,
    "tied_head": bool,
}
OPTIONAL_KEYS = {"bos", "tokenizer", "files", "eval"}
MATRIX_QUANTS = ("q8", "q4", "u8", "f16")
STREAM_IMAGE_BYTES = 3 * 2**26


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _count(value: object, name: str, low: int, high: int) -> int:
    if not _is_int(value):
        raise SpecError(f"{name}: not a JSON integer")
    assert isinstance(value, int)
    if not low <= value <= high:
        raise SpecError(f"{name}: {value} outside {low}..{high}")
    return value


def _exact_keys(obj: object, keys: set[str], name: str) -> dict:
    if not isinstance(obj, dict):
        raise SpecError(f"{name}: not an object")
    if set(obj) != keys:
        raise SpecError(f"{name}: keys {sorted(obj)} are not {sorted(keys)}")
    return obj


@dataclass(frozen=True)
class Tensor:
    name: str
    offset: int
    shape: tuple[int, ...]
    quant: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        n = self.size
        return {"f16": 2 * n, "u8": n, "q8": n // 32 * 34, "q4": n // 32 * 18}[self.quant]


def tensor_table(meta: dict) -> dict[str, tuple[tuple[int, ...], bool]]:
    """§14.2: name → (shape, is_matrix) for this architecture, in table order."""
    V, C, E = meta["vocab_size"], meta["context_length"], meta["width"]
    H, K, D, F = meta["heads"], meta["kv_heads"], meta["head_dim"], meta["mlp"]["width"]
    layer_norm = meta["norm"]["kind"] == "layernorm"
    gated = meta["mlp"]["kind"] == "silu_gated"
    biases = meta["biases"]
    table: dict[str, tuple[tuple[int, ...], bool]] = {"embed": ((V, E), True)}
    if meta["positions"]["kind"] == "learned":
        table["pos"] = ((C, E), True)
    for layer in range(meta["layers"]):
        b = f"block{layer}."
        table[b + "attn_norm.weight"] = ((E,), False)
        if layer_norm:
            table[b + "attn_norm.bias"] = ((E,), False)
        table[b + "attn.q.weight"] = ((H * D, E), True)
        table[b + "attn.k.weight"] = ((K * D, E), True)
        table[b + "attn.v.weight"] = ((K * D, E), True)
        if biases["qkv"]:
            table[b + "attn.q.bias"] = ((H * D,), False)
            table[b + "attn.k.bias"] = ((K * D,), False)
            table[b + "attn.v.bias"] = ((K * D,), False)
        table[b + "attn.out.weight"] = ((E, H * D), True)
        if biases["attn_out"]:
            table[b + "attn.out.bias"] = ((E,), False)
        table[b + "mlp_norm.weight"] = ((E,), False)
        if layer_norm:
            table[b + "mlp_norm.bias"] = ((E,), False)
        if gated:
            table[b + "mlp.gate.weight"] = ((F, E), True)
        table[b + "mlp.up.weight"] = ((F, E), True)
        table[b + "mlp.down.weight"] = ((E, F), True)
        if biases["mlp"]:
            if gated:
                table[b + "mlp.gate.bias"] = ((F,), False)
            table[b + "mlp.up.bias"] = ((F,), False)
            table[b + "mlp.down.bias"] = ((E,), False)
    table["final_norm.weight"] = ((E,), False)
    if layer_norm:
        table["final_norm.bias"] = ((E,), False)
    if not meta["tied_head"]:
        table["head.weight"] = ((V, E), True)
    if biases["head"]:
        table["head.bias"] = ((V,), False)
    return table


def _check_image(obj: object, name: str) -> tuple[int, int]:
    entry = _exact_keys(obj, {"width", "height"}, name)
    width = _count(entry["width"], f"{name}.width", 1, 16384)
    height = _count(entry["height"], f"{name}.height", 1, 16384)
    if width * height > 2**26:
        raise SpecError(f"{name}: over 2^26 pixels")
    return width, height


def check_meta(meta: object) -> tuple[list[tuple[int, int]], dict[str, Tensor]]:
    """Every §14.1 check; returns the images and the tensors."""
    if not isinstance(meta, dict):
        raise SpecError("meta: not an object")
    for key, kind in TOP_KEYS.items():
        if key not in meta:
            raise SpecError(f"meta: no {key}")
        value = meta[key]
        ok = {
            str: isinstance(value, str),
            int: _is_int(value),
            float: _is_number(value),
            dict: isinstance(value, dict),
            bool: isinstance(value, bool),
        }[kind]
        if not ok:
            raise SpecError(f"meta: {key} has the wrong type")
    if meta["format"] != "pixellm" or meta["version"] != 2:
        raise SpecError("meta: not pixellm version 2")
    V = _count(meta["vocab_size"], "vocab_size", 2, 255 * 2**16)
    _count(meta["context_length"], "context_length", 2, 32768)
    _count(meta["width"], "width", 1, 8192)
    _count(meta["layers"], "layers", 1, 128)
    H = _count(meta["heads"], "heads", 1, 256)
    K = _count(meta["kv_heads"], "kv_heads", 1, H)
    if H % K:
        raise SpecError("heads: not a multiple of kv_heads")
    D = _count(meta["head_dim"], "head_dim", 1, 512)
    if not 0 < meta["attention_scale"] <= 16:
        raise SpecError("attention_scale: outside (0, 16]")
    mlp = _exact_keys(meta["mlp"], {"kind", "width"}, "mlp")
    if mlp["kind"] not in ("gelu_tanh", "gelu", "silu_gated"):
        raise SpecError("mlp.kind: unknown")
    _count(mlp["width"], "mlp.width", 1, 65536)
    norm = _exact_keys(meta["norm"], {"kind", "eps"}, "norm")
    if norm["kind"] not in ("layernorm", "rmsnorm"):
        raise SpecError("norm.kind: unknown")
    if not _is_number(norm["eps"]) or not 1e-12 <= norm["eps"] <= 1:
        raise SpecError("norm.eps: outside [1e-12, 1]")
    positions = meta["positions"]
    if not isinstance(positions, dict) or positions.get("kind") not in ("learned", "rope"):
        raise SpecError("positions.kind: unknown")
    if positions["kind"] == "learned":
        _exact_keys(positions, {"kind"}, "positions")
    else:
        keys = {"kind", "base", "rotation"} | ({"scaling"} if "scaling" in positions else set())
        _exact_keys(positions, keys, "positions")
        if not _is_number(positions["base"]) or not 1 < positions["base"] <= 1e9:
            raise SpecError("positions.base: outside (1, 1e9]")
        if positions["rotation"] not in ("halves", "pairs"):
            raise SpecError("positions.rotation: unknown")
        if D % 2:
            raise SpecError("head_dim: odd under rope")
        if "scaling" in positions:
            _check_scaling(positions["scaling"])
    biases = _exact_keys(meta["biases"], {"qkv", "attn_out", "mlp", "head"}, "biases")
    if not all(isinstance(v, bool) for v in biases.values()):
        raise SpecError("biases: not booleans")
    if "bos" in meta:
        _count(meta["bos"], "bos", 0, V - 1)
    if ("image" in meta) == ("images" in meta):
        raise SpecError("meta: exactly one of image and images")
    if "image" in meta:
        images = [_check_image(meta["image"], "image")]
    else:
        listed = meta["images"]
        if not isinstance(listed, list) or not 2 <= len(listed) <= 32:
            raise SpecError("images: not a list of 2 to 32")
        images = [_check_image(entry, f"images[{k}]") for k, entry in enumerate(listed)]
    if "tokenizer" in meta:
        name = meta["tokenizer"]
        plain = isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\")
        if not plain or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise SpecError("tokenizer: not a plain file name")
    if "eval" in meta and not isinstance(meta["eval"], dict):
        raise SpecError("eval: not an object")
    if "files" in meta:
        files = meta["files"]
        if not isinstance(files, dict) or "weights" not in files or not set(files) <= {"weights", "tokenizer"}:
            raise SpecError("files: must record weights (and may record tokenizer), nothing else")
    capacity = sum(3 * w * h for w, h in images)
    tensors = _check_tensors(meta, capacity)
    return images, tensors


def _check_scaling(scaling: object) -> None:
    if not isinstance(scaling, dict) or scaling.get("kind") not in ("linear", "llama3"):
        raise SpecError("positions.scaling: unknown kind")
    if scaling["kind"] == "linear":
        _exact_keys(scaling, {"kind", "factor"}, "positions.scaling")
    else:
        keys = {"kind", "factor", "low_freq_factor", "high_freq_factor", "original_context"}
        _exact_keys(scaling, keys, "positions.scaling")
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        if not (_is_number(low) and _is_number(high) and 0 < low < high <= 1024):
            raise SpecError("positions.scaling: need 0 < lo < hi <= 1024")
        _count(scaling["original_context"], "original_context", 1, 2**24)
    if not _is_number(scaling["factor"]) or not 1 <= scaling["factor"] <= 1024:
        raise SpecError("positions.scaling.factor: outside [1, 1024]")


def _check_tensors(meta: dict, capacity: int) -> dict[str, Tensor]:
    table = tensor_table(meta)
    entries = meta["tensors"] if isinstance(meta.get("tensors"), dict) else None
    if entries is None:
        raise SpecError("tensors: not an object")
    if set(entries) != set(table):
        raise SpecError(f"tensors: {sorted(set(entries) ^ set(table))} differ from §14.2's")
    tensors: dict[str, Tensor] = {}
    for name, (shape, is_matrix) in table.items():
        entry = entries[name]
        quant = entry.get("quant") if isinstance(entry, dict) else None
        keys = {"offset", "shape", "quant"} | ({"scale", "zero_point"} if quant == "u8" else set())
        _exact_keys(entry, keys, name)
        allowed = MATRIX_QUANTS if is_matrix else ("f16",)
        if quant not in allowed:
            raise SpecError(f"{name}: quant {quant!r} not allowed")
        if quant in ("q8", "q4") and shape[-1] % 32:
            raise SpecError(f"{name}: {quant} needs rows a multiple of 32")
        if not (isinstance(entry["shape"], list) and all(_is_int(s) for s in entry["shape"])):
            raise SpecError(f"{name}: shape not a list of integers")
        if tuple(entry["shape"]) != shape:
            raise SpecError(f"{name}: shape {entry['shape']} is not {list(shape)}")
        offset = entry["offset"]
        if not _is_int(offset) or offset < 0 or offset % 4:
            raise SpecError(f"{name}: offset not a non-negative multiple of 4")
        scale, zero_point = 0.0, 0
        if quant == "u8":
            scale, zero_point = entry["scale"], entry["zero_point"]
            if not _is_number(scale) or not scale > 0:
                raise SpecError(f"{name}: scale")
            if not math.isfinite(np.float32(scale)) or np.float32(scale) == 0:
                raise SpecError(f"{name}: scale not finite and non-zero in float32")
            _count(zero_point, f"{name}.zero_point", 0, 255)
        tensor = Tensor(name, offset, shape, quant, float(scale), zero_point)
        if offset + tensor.nbytes > capacity:
            raise SpecError(f"{name}: past the image")
        tensors[name] = tensor
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values())
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise SpecError(f"{first} and {second} overlap")
    return tensors


def image_paths(weights: Path, count: int) -> list[Path]:
    """§14.7: image 0 is name.pxi, image k is name.k.pxi."""
    stem = weights.name.removesuffix(".pxi")
    return [weights] + [weights.with_name(f"{stem}.{k}.pxi") for k in range(1, count)]


def read_stream(weights: Path, meta: dict, images: list[tuple[int, int]]) -> np.ndarray:
    """The weight byte stream (§1, §14.7), each image's size and `files` record checked."""
    records = meta.get("files", {}).get("weights") if "files" in meta else None
    if records is not None and "images" in meta:
        if not isinstance(records, list) or len(records) != len(images):
            raise SpecError("files.weights: not one record an image")
    elif records is not None:
        records = [records]
    parts = []
    for k, (path, (width, height)) in enumerate(zip(image_paths(weights, len(images)), images, strict=True)):
        if not path.is_file():
            raise SpecError(f"{path.name}: missing")
        raw = path.read_bytes()
        if records is not None:
            record = records[k]
            if record["bytes"] != len(raw) or record["sha256"] != hashlib.sha256(raw).hexdigest():
                raise SpecError(f"{path.name}: not the file the meta recorded")
        with Image.open(path) as image:
            if image.mode != "RGB" or image.size != (width, height):
                raise SpecError(f"{path.name}: not a {width}x{height} RGB image")
            parts.append(np.asarray(image, dtype=np.uint8).reshape(-1))
    return np.concatenate(parts)


def read_meta(path: Path) -> dict:
    meta = json.loads(path.read_text(encoding="utf-8"))
    check_meta(meta)
    return meta


def meta_path(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".pxi") + ".meta.json")
