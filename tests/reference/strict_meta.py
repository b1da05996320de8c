"""The weights meta as docs/FORMATS.md §2.1 and §2.2 define it, written from the spec apart from the engine:
the fuzz reference for engine/spec.py. `read(document)` gives the model a valid meta describes, in the
version-1 names, or raises Refused."""

import itertools
import math
import unicodedata
from typing import Any

import numpy as np

MODES = ("mean", "concat", "attention")
V0_NAMES = {"b_hidden": "layer0.bias", "b_out": "out.bias", "embed": "embed", "hidden": "layer0.weight"}
V0_NAMES |= {"out": "out.weight"}


class Refused(Exception):
    pass


def check(condition: bool, why: str) -> None:
    if not condition:
        raise Refused(why)


def integer(value: Any, lo: int, hi: int, what: str) -> int:
    check(type(value) is int and lo <= value <= hi, f"{what}: an integer in {lo}..{hi}")
    return value


def architecture(doc: dict) -> dict:
    """vocab, embed, mode, window, concat, head, hidden, residual: §2.1's table, or §2.2's for version 0."""
    if doc["version"] == 0:
        check({"vocab_size", "embed_dim", "hidden_dim", "context_window"} <= doc.keys(), "v0 keys")
        return {
            "vocab": integer(doc["vocab_size"], 2, 65536, "vocab_size"),
            "embed": integer(doc["embed_dim"], 1, 4096, "embed_dim"),
            "mode": "mean",
            "window": integer(doc["context_window"], 1, 16384, "context_window"),
            "concat": 0,
            "head": 0,
            "hidden": (integer(doc["hidden_dim"], 1, 4096, "hidden_dim"),),
            "residual": False,
        }
    check({"vocab_size", "embed_dim", "context", "hidden", "residual"} <= doc.keys(), "v1 keys")
    context, hidden = doc["context"], doc["hidden"]
    check(isinstance(context, dict) and context.get("mode") in MODES, "context mode")
    mode = context["mode"]
    keys = {"mode", "window", "concat", "head_dim"} if mode == "attention" else {"mode", "window"}
    check(set(context) == keys, "context keys")
    window = integer(context["window"], 1, 16384, "window")
    check(isinstance(hidden, list) and 1 <= len(hidden) <= 4, "hidden list")
    check(type(doc["residual"]) is bool, "residual")
    return {
        "vocab": integer(doc["vocab_size"], 256, 65536, "vocab_size"),
        "embed": integer(doc["embed_dim"], 1, 4096, "embed_dim"),
        "mode": mode,
        "window": window,
        "concat": integer(context["concat"], 0, window, "concat") if mode == "attention" else 0,
        "head": integer(context["head_dim"], 1, 4096, "head_dim") if mode == "attention" else 0,
        "hidden": tuple(integer(width, 1, 4096, "hidden width") for width in hidden),
        "residual": doc["residual"],
    }


def layout(arch: dict, version: int, scale: float = 0.01) -> dict:
    """A valid meta of the architecture: tensors back to back in the table's order, the image near-square
    (how `pxgl train` lays a model out; any other valid layout reads the same)."""
    table, tensors, offset = shapes(arch), {}, 0
    names = {v1: v0 for v0, v1 in V0_NAMES.items()} if version == 0 else {name: name for name in table}
    order = [V0_NAMES[v0] for v0 in V0_NAMES] if version == 0 else list(table)
    for v1 in order:
        tensors[names[v1]] = {"offset": offset, "shape": list(table[v1]), "scale": scale, "zero_point": 128}
        offset += math.prod(table[v1])
    pixels = max(1, -(-offset // 3))
    width = math.isqrt(pixels - 1) + 1
    doc: dict[str, Any] = {"format": "pixellm", "version": version}
    if version == 0:
        doc |= {"vocab_size": arch["vocab"], "embed_dim": arch["embed"], "hidden_dim": arch["hidden"][0]}
        doc |= {"context_window": arch["window"]}
    else:
        context = {"mode": arch["mode"], "window": arch["window"]}
        if arch["mode"] == "attention":
            context |= {"concat": arch["concat"], "head_dim": arch["head"]}
        doc |= {"vocab_size": arch["vocab"], "embed_dim": arch["embed"], "context": context}
        doc |= {"hidden": list(arch["hidden"]), "residual": arch["residual"]}
    image = {"width": width, "height": -(-pixels // width)}
    return doc | {"image": image, "tensors": tensors, "tokenizer": "m.tokenizer.json", "eval": {}}


def shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """§2.1's tensor table in its order."""
    v, e, w = arch["vocab"], arch["embed"], arch["window"]
    x = {"mean": e, "concat": w * e, "attention": arch["concat"] * e + arch["head"]}[arch["mode"]]
    table: dict[str, tuple[int, ...]] = {"embed": (v, e)}
    if arch["mode"] == "attention":
        table |= {"attn.pos": (w, e)} | {f"attn.{p}": (e, arch["head"]) for p in ("query", "key", "value")}
    widths = (x, *arch["hidden"])
    for layer in range(len(arch["hidden"])):
        table |= {
            f"layer{layer}.weight": (widths[layer], widths[layer + 1]),
            f"layer{layer}.bias": (widths[layer + 1],),
        }
    return table | {"out.weight": (arch["hidden"][-1], v), "out.bias": (v,)}


def float32_scale(value: Any) -> float:
    check(type(value) in (int, float), "scale: a number")
    try:
        as_float = float(value)
    except OverflowError:
        raise Refused("scale overflows") from None
    with np.errstate(over="ignore", under="ignore"):
        single = np.float32(as_float)
    check(math.isfinite(as_float) and as_float > 0 and bool(np.isfinite(single)) and single > 0, "scale in float32")
    return as_float


def plain_file_name(name: Any) -> bool:
    """No `/` or `\\`, not `.` or `..`, not empty, no control characters (Unicode category Cc)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in "/\\" or unicodedata.category(c) == "Cc" for c in name)
    )


def read(doc: Any) -> dict:
    """{"version", "arch", "width", "height", "tensors": {v1 name: (offset, shape, scale, zero_point)},
    "tokenizer", "eval"} of a valid meta; Refused otherwise."""
    check(isinstance(doc, dict), "an object")
    check({"format", "version", "image", "tensors", "tokenizer"} <= doc.keys(), "keys")
    check(doc["format"] == "pixellm" and type(doc["format"]) is str, "format")
    check(type(doc["version"]) is int and doc["version"] in (0, 1), "version")
    arch = architecture(doc)
    image = doc["image"]
    check(isinstance(image, dict), "image")
    width = integer(image.get("width"), 1, 16384, "width")
    height = integer(image.get("height"), 1, 16384, "height")
    check(width * height <= 1 << 26, "pixels")
    check(plain_file_name(doc["tokenizer"]), "tokenizer")
    check(isinstance(doc.get("eval", {}), dict), "eval")
    table = shapes(arch)
    names = V0_NAMES if doc["version"] == 0 else {name: name for name in table}
    raw = doc["tensors"]
    check(isinstance(raw, dict) and set(raw) == set(names), "tensor names")
    capacity, tensors = width * height * 3, {}
    for name, v1 in names.items():
        entry = raw[name]
        check(isinstance(entry, dict) and {"offset", "shape", "scale", "zero_point"} <= entry.keys(), "entry")
        shape = entry["shape"]
        check(isinstance(shape, list) and all(type(d) is int for d in shape) and tuple(shape) == table[v1], "shape")
        offset = integer(entry["offset"], 0, capacity, "offset")
        check(offset + math.prod(table[v1]) <= capacity, "inside the image")
        scale = float32_scale(entry["scale"])
        tensors[v1] = (offset, table[v1], scale, integer(entry["zero_point"], 0, 255, "zero_point"))
    spans = sorted((offset, offset + math.prod(shape)) for offset, shape, _, _ in tensors.values())
    check(all(end <= start for (_, end), (start, _) in itertools.pairwise(spans)), "overlap")
    return {
        "version": doc["version"],
        "arch": arch,
        "width": width,
        "height": height,
        "tensors": tensors,
        "tokenizer": doc["tokenizer"],
        "eval": doc.get("eval", {}),
    }
