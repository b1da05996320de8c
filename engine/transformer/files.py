"""A version-2 model's files (docs/FORMATS.md §14, §14.7, §2.3): laying float weights out as quantized bytes in
one image or, past one, several; writing the set (every image, tokenizer, meta last with its `files` record);
reading it back checked, an image at a time, into one byte stream; and random-weight members for tests and
benchmarks (no pretrained transformer can be fetched on pxgl's machines)."""

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from ..model import WRITTEN, WRITTEN_LIMITS, file_record
from ..outputs import write_files
from ..pxi import bytes_to_pixels, decode_rgb_into, encode_rgb, image_size_for
from ..reading import MAX_PIXEL_FILE_BYTES, read_bounded
from ..spec import meta_path_for, read_meta_document
from ..tokenizer import Tokenizer
from .meta import MAX_IMAGES, QuantizedTensor, TransformerArchitecture, TransformerSpec, transformer_spec_from_meta
from .quant import BLOCK_BYTES, first_nonfinite, quantize, tensor_nbytes

FULL_IMAGE_SIDE = 8192
"""Every image of a stream past one image but the last is 8,192 x 8,192: 2^26 pixels (§14.7). Tests lower it
(monkeypatch) to cut a tiny model into several images."""
QUANTIZE_PIECE = 1 << 20
"""Weights quantized at a time: numpy's temporaries stay small and in cache (q8 of 32 M weights: 0.44 s in
pieces, 1.9 s whole)."""

Values = Mapping[str, np.ndarray] | Callable[[str], np.ndarray]
"""Float weights by tensor name: a mapping, or a function making each when it is laid out (one at a time)."""


def image_paths(path: str | Path, count: int) -> list[Path]:
    """`name.pxi`, then `name.k.pxi` for image k ≥ 1 (§14.7)."""
    path = Path(path)
    stem = path.name.removesuffix(".pxi")
    return [path] + [path.with_name(f"{stem}.{k}.pxi") for k in range(1, count)]


def image_sizes(n_bytes: int) -> tuple[tuple[int, int], ...]:
    """The images holding a stream of n_bytes (§14.7): one near-square image while it holds them, else full
    FULL_IMAGE_SIDE squares and the near-square image of the bytes that remain."""
    full = 3 * FULL_IMAGE_SIDE * FULL_IMAGE_SIDE
    if n_bytes <= full:
        return (image_size_for(n_bytes),)
    count = -(-n_bytes // full)
    if count > MAX_IMAGES:
        raise PxglError(
            f"{n_bytes:,} weight bytes need {count} images of {full:,} bytes; a model spans at most {MAX_IMAGES} "
            "(§14.7): quantize to fewer bytes (--quant q8 or q4)"
        )
    return ((FULL_IMAGE_SIDE, FULL_IMAGE_SIDE),) * (count - 1) + (image_size_for(n_bytes - (count - 1) * full),)


def _quantize_into(
    out: np.ndarray, values: np.ndarray, quant: str, name: str, grid: tuple[float, int] | None = None
) -> tuple[float, int]:
    """Write a tensor's bytes into `out` (its tensor_nbytes), a piece of rows at a time for the blockwise and
    float16 kinds (their bytes are row by row); u8's grid needs the whole tensor, unless it is given (§10:
    an exported tensor's own grid). (scale, zero_point)."""
    if quant == "u8" and grid is not None:
        scale, zero_point = grid
        out[:] = np.clip(np.round(values / np.float32(scale)) + zero_point, 0, 255).reshape(-1)
        return scale, zero_point
    if quant == "u8" or values.ndim == 1:
        data, scale, zero_point = quantize(values, quant, name)
        out[:] = data
        return scale, zero_point
    rows = max(1, QUANTIZE_PIECE // max(1, values.shape[1]))
    row_bytes = tensor_nbytes((1, values.shape[1]), quant)
    for start in range(0, values.shape[0], rows):
        data, _, _ = quantize(values[start : start + rows], quant, name)
        out[start * row_bytes : start * row_bytes + len(data)] = data
    return 0.0, 0


def tensor_quants(architecture: TransformerArchitecture, quants: str | dict[str, str]) -> dict[str, str]:
    """Every tensor's quantization: `quants` for a matrix (one for all, or by name), f16 for norms and biases."""
    return {
        name: "f16" if len(shape) == 1 else quants if isinstance(quants, str) else quants[name]
        for name, shape in architecture.shapes().items()
    }


def tensor_offsets(architecture: TransformerArchitecture, kinds: dict[str, str]) -> dict[str, int]:
    """Each tensor's offset in the stream: table order, each at the next multiple of 4 (§14.2). A q8 or q4
    matrix whose rows are not whole blocks is refused, naming it."""
    offsets, offset = {}, 0
    for name, shape in architecture.shapes().items():
        if kinds[name] in BLOCK_BYTES and shape[-1] % 32:
            raise PxglError(f"tensor '{name}': {kinds[name]} needs rows of a multiple of 32, got {shape[-1]}")
        offsets[name] = offset = -(-offset // 4) * 4
        offset += tensor_nbytes(shape, kinds[name])
    return offsets


def lay_out(
    architecture: TransformerArchitecture,
    values: Values,
    quants: str | dict[str, str],
    bos: int | None = None,
    tokenizer: str | None = None,
    grids: dict[str, tuple[float, int]] | None = None,
) -> tuple[TransformerSpec, np.ndarray]:
    """The spec and weight byte stream (1-D uint8) of float weights: tensors in table order, each at a
    multiple of 4, in the images that hold them (§14.7). `quants` is every matrix's quantization or one per
    tensor; norms and biases are float16 whatever it says; `grids` the (scale, zero_point) of u8 tensors
    whose grid is known. The stream is filled a tensor at a time: a function `values` is asked for each
    once, so only the stream and one tensor's floats are held."""
    shapes = architecture.shapes()
    kinds = tensor_quants(architecture, quants)
    offsets = tensor_offsets(architecture, kinds)
    end = max(offsets[name] + tensor_nbytes(shape, kinds[name]) for name, shape in shapes.items())
    images = image_sizes(end)
    stream = np.zeros(end, np.uint8)
    tensor_of = values if callable(values) else values.__getitem__
    tensors = {}
    for name, shape in shapes.items():
        start, end = offsets[name], offsets[name] + tensor_nbytes(shape, kinds[name])
        x = np.asarray(tensor_of(name), dtype=np.float32).reshape(shape)
        scale, zero_point = _quantize_into(stream[start:end], x, kinds[name], name, (grids or {}).get(name))
        tensors[name] = QuantizedTensor(name, start, shape, kinds[name], scale, zero_point)
    return TransformerSpec(architecture, images, tensors, bos, tokenizer), stream


def save_transformer(
    path: str | Path, spec: TransformerSpec, weight_bytes: bytes | np.ndarray, tokenizer: Tokenizer | None = None
) -> None:
    """Write every weight image, the tokenizer (when given) and the meta as one set (§2.3, §14.7):
    each image is encoded only when its turn to be written comes, so one image's pixels are held at a time."""
    path = Path(path)
    meta_path = meta_path_for(path)
    transformer_spec_from_meta(spec.to_meta(), str(meta_path))  # never write a model no reader accepts
    stream = np.frombuffer(weight_bytes, np.uint8) if isinstance(weight_bytes, bytes) else weight_bytes.reshape(-1)
    if len(stream) > sum(spec.image_bytes):
        raise ValueError(f"{len(stream)} weight bytes do not fit the spec's images ({sum(spec.image_bytes)} bytes)")
    records: list[dict[str, Any]] = []
    writers = {}
    start = 0
    paths = image_paths(path, len(spec.images))
    for image_path, (width, height), size in zip(paths, spec.images, spec.image_bytes, strict=True):

        def write_image(tmp: Path, piece=stream[start : start + size], width=width, height=height) -> None:
            data = encode_rgb(bytes_to_pixels(piece, width, height))
            records.append(file_record(data))
            tmp.write_bytes(data)

        writers[image_path] = write_image
        start += size
    written: dict[str, Any] = {}
    if tokenizer is not None:  # None: the tokenizer the spec names stays as it is (import's in place), unrecorded
        if spec.tokenizer is None or tokenizer.vocab_size != spec.architecture.vocab_size:
            raise ValueError("a tokenizer is written with a spec naming one, of its vocabulary")
        data = (json.dumps(tokenizer.to_json(), separators=(",", ":")) + "\n").encode()
        written["tokenizer"] = file_record(data)
        writers[path.with_name(spec.tokenizer)] = lambda tmp, data=data: tmp.write_bytes(data)

    def write_meta(tmp: Path) -> None:
        weights = records[0] if len(records) == 1 else records
        tmp.write_text(json.dumps(spec.to_meta() | {WRITTEN: {"weights": weights} | written}, indent=2) + "\n")

    writers[meta_path] = write_meta
    write_files(writers)


def _weight_records(document: dict, count: int, meta_path: Path) -> list[Any] | None:
    """The meta's `files` record of each image (§2.3, §14.7), or None for a legacy meta without one."""
    if WRITTEN not in document:
        return None
    written = document[WRITTEN]
    recorded = isinstance(written, dict) and "weights" in written and set(written) <= WRITTEN_LIMITS.keys()
    if not recorded:
        raise PxglError(f"{meta_path}: {WRITTEN!r} must be an object recording the weights (and the tokenizer), §2.3")
    weights = written["weights"]
    if count == 1:
        return [weights]
    if not isinstance(weights, list) or len(weights) != count:
        raise PxglError(
            f"{meta_path}: {WRITTEN!r}.weights must list a record of each of the {count} images (§14.7); "
            "write the model again"
        )
    return weights


def _check_record(path: Path, data: bytes, record: Any) -> None:
    """FORMATS §2.3: the file is the one its meta was written with."""
    if not (isinstance(record, dict) and set(record) == {"bytes", "sha256"}):
        raise PxglError(f"{path}: its meta's '{WRITTEN}' record of the weights must be {{bytes, sha256}}")
    if file_record(data) != record:
        raise PxglError(
            f"{path}: not the weights file its meta was written with (an interrupted write, or a file replaced "
            "since): write the model again"
        )


def read_transformer(path: str | Path) -> tuple[TransformerSpec, np.ndarray]:
    """A version-2 `name.pxi` (and `name.k.pxi` past one image, §14.7) and its meta, checked against each other
    and the `files` record; the weight byte stream, one 1-D uint8 array that the tensors' offsets index. The
    images are read one at a time, straight into the stream. A non-finite float16 in a tensor is refused,
    naming it (§14.1)."""
    path = Path(path)
    meta_path = meta_path_for(path)
    document = read_meta_document(meta_path)
    spec = transformer_spec_from_meta(document, str(meta_path))
    count = len(spec.images)
    records = _weight_records(document, count, meta_path)
    stream = weight_stream(spec, str(meta_path))
    start = 0
    pieces = zip(image_paths(path, count), spec.image_bytes, spec.images, strict=True)
    for k, (image_path, size, expect) in enumerate(pieces):
        hint = f" (image {k} of the model's {count}, §14.7)" if count > 1 else ""
        data = read_bounded(image_path, "pixel file", MAX_PIXEL_FILE_BYTES, hint)
        if records is not None:
            _check_record(image_path, data, records[k])
        decode_rgb_into(data, str(image_path), stream[start : start + size], expect)
        del data
        start += size
    check_finite(spec, stream, str(path))
    return spec, stream


def weight_stream(spec: TransformerSpec, where: str) -> np.ndarray:
    """The empty byte stream of the spec's images (§14.7), or one line when this process cannot have that much
    memory (a meta may declare 32 full images, 6.4 GB, whatever its files hold)."""
    size = sum(spec.image_bytes)
    try:
        return np.empty(size, np.uint8)
    except MemoryError:
        raise PxglError(
            f"{where}: its {len(spec.images)} weight image(s) hold {size:,} bytes, more memory than this process "
            "can have: run it where more memory is free"
        ) from None


def check_finite(spec: TransformerSpec, stream: np.ndarray, where: str) -> None:
    """§14.1: a tensor holding a float16 that is not finite (an f16 value, a block's d) is refused, naming it."""
    for t in spec.tensors.values():
        bad = first_nonfinite(stream[t.offset : t.offset + t.nbytes], t.quant)
        if bad is not None:
            raise PxglError(f"{where}: tensor '{t.name}' holds a float16 that is not finite (its number {bad})")


def transformer_files(path: Path) -> list[Path] | None:
    """Every file a version-2 weights .pxi reads — its images (§14.7), its meta and the tokenizer it names — so
    no output overwrites one; None when `path` is no version-2 weights file."""
    meta_path = meta_path_for(path)
    if path.suffix != ".pxi" or not meta_path.is_file():
        return None
    document = read_meta_document(meta_path)
    if not isinstance(document, dict) or document.get("version") != 2 or isinstance(document["version"], bool):
        return None
    spec = transformer_spec_from_meta(document, str(meta_path))
    tokenizer = [] if spec.tokenizer is None else [path.with_name(spec.tokenizer)]
    return [*image_paths(path, len(spec.images)), meta_path, *tokenizer]


def random_tensor(
    architecture: TransformerArchitecture, name: str, rng: np.random.Generator, head_gain: float = 1.0
) -> np.ndarray:
    """One tensor of random_values, drawn from `rng` (tensors drawn in table order give random_values')."""
    shape = architecture.shapes()[name]
    normal = rng.standard_normal(shape, dtype=np.float32)  # float32 draws: half the time and memory of float64
    if len(shape) == 1:
        return (1.0 if name.endswith("norm.weight") else 0.0) + np.float32(0.2) * normal
    if name in ("embed", "head.weight"):
        return normal * np.float32(head_gain if name == "head.weight" or architecture.tied_head else 1)
    return normal * np.float32(0.5 if name == "pos" else shape[1] ** -0.5)


def random_values(architecture: TransformerArchitecture, rng: np.random.Generator, head_gain: float = 1.0):
    """Float weights whose activations stay O(1) through the blocks: matrices N(0, 1/in), embeddings N(0, 1),
    norm weights near 1, small biases; `head_gain` scales the output head (tied: the embeddings), which
    widens the logits' margins."""
    return {name: random_tensor(architecture, name, rng, head_gain) for name in architecture.shapes()}


def random_layout(
    architecture: TransformerArchitecture,
    quants: str | dict[str, str],
    seed: int,
    bos: int | None = None,
    head_gain: float = 1.0,
) -> tuple[TransformerSpec, np.ndarray]:
    """lay_out of random_values(seed), each tensor drawn when it is laid out: a TinyLlama-1.1B-shaped member
    holds its byte stream and one tensor's floats, never 1.1 B float32 weights."""
    rng = np.random.default_rng(seed)
    return lay_out(architecture, lambda name: random_tensor(architecture, name, rng, head_gain), quants, bos)


def write_random_transformer(
    path: str | Path,
    architecture: TransformerArchitecture,
    quants: str | dict[str, str],
    seed: int,
    bos: int | None = None,
    head_gain: float = 1.0,
) -> TransformerSpec:
    """A random-weight version-2 model written as its set (no tokenizer: token pixels only)."""
    spec, stream = random_layout(architecture, quants, seed, bos, head_gain)
    save_transformer(path, spec, stream)
    return spec
