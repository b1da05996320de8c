"""A Hugging Face model folder read as untrusted input (docs/FORMATS.md §10.2): config.json, then
model.safetensors or the shards model.safetensors.index.json names — every shard a plain file inside the
folder, every header checked (engine/interchange.py) before a tensor is read, every tensor in exactly one
shard — and the tensors read one at a time, as float32."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from ..reading import in_folder, open_regular, parse_json
from ..spec import _echo, _is_plain_file_name
from ..transformer.interchange import MAX_SAFETENSORS_BYTES, Header, peek_header, read_tensor
from ..transformer.meta import few

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MAX_JSON_BYTES = 16 << 20
"""config.json and the shard index: a large model's index names a few thousand tensors (under 1 MB)."""
MAX_SHARDS = 1024


def read_json(path: Path, what: str) -> Any:
    with open_regular(in_folder(path.parent, path), what, MAX_JSON_BYTES) as handle:
        data = handle.read(MAX_JSON_BYTES + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PxglError(f"{path}: the {what} is not UTF-8 ({e.reason})") from None
    return parse_json(text, str(path))


def inside(folder: Path, name: Any, what: str) -> Path:
    """`name` as a plain file of the folder: no directory part, no `..`, no link leading out of it."""
    if not (isinstance(name, str) and _is_plain_file_name(name)):
        raise PxglError(f"{folder / INDEX}: {what} {_echo(name)} is not a plain file name inside the folder")
    return in_folder(folder, folder / name)


def shard_names(folder: Path) -> dict[str, str] | None:
    """The index's tensor name → shard file, checked; None when the folder has one model.safetensors."""
    if not os.path.lexists(folder / INDEX):  # a dangling link is read, and refused, as the index
        return None
    index = read_json(folder / INDEX, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PxglError(f"{folder / INDEX}: no 'weight_map' object of tensor name → shard file")
    for name in weight_map.values():
        inside(folder, name, "shard")
    files = set(weight_map.values())
    if len(files) > MAX_SHARDS:
        raise PxglError(f"{folder / INDEX}: {len(files)} shards, past the limit of {MAX_SHARDS}")
    return weight_map


@dataclass(frozen=True)
class Located:
    path: Path
    header: Header
    entry: dict[str, Any]


def locate(folder: Path) -> dict[str, Located]:
    """Every tensor of the folder's weights, where it lies: each shard's header read and checked, every tensor
    in exactly one shard and where the index says."""
    index = shard_names(folder)
    files = [WEIGHTS] if index is None else sorted(set(index.values()))
    located: dict[str, Located] = {}
    for name in files:
        path = inside(folder, name, "shard")
        if not path.exists():
            raise PxglError(f"{path}: no such file{f' (named by {INDEX})' if index is not None else ''}")
        header = peek_header(path)
        if header is None:
            raise PxglError(f"{path}: not a .safetensors file")
        for tensor, entry in header.entries.items():
            if tensor in located:
                raise PxglError(f"{path}: tensor {tensor!r} is also in {located[tensor].path.name}: each once")
            if index is not None and index.get(tensor) != name:
                raise PxglError(f"{path}: holds tensor {tensor!r}, which {INDEX} places in {_echo(index.get(tensor))}")
            located[tensor] = Located(path, header, entry)
    if index is not None and (missing := set(index) - set(located)):
        raise PxglError(f"{folder / INDEX}: names tensors no shard holds: {few(missing)}")
    return located


class TensorReader:
    """The folder's tensors by name, each read from its shard when asked, as float32 (finiteness is the
    caller's check)."""

    def __init__(self, located: dict[str, Located]) -> None:
        self.located = located
        self._last: tuple[str, np.ndarray] | None = None

    def __call__(self, name: str) -> np.ndarray:
        if self._last is not None and self._last[0] == name:  # GPT-2's c_attn, read for q, k and v in turn
            return self._last[1]
        where = self.located[name]
        with open_regular(where.path, "tensor file", MAX_SAFETENSORS_BYTES) as handle:
            values = read_tensor(handle, where.header.data_start, where.entry, name, str(where.path))
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf, refused by the caller
            values = values.astype(np.float32)
        self._last = (name, values)
        return values
