"""A version-2 model's files (docs/FORMATS.md §14, §2.3): laying float weights out as quantized bytes in one
image, writing the set (weights, tokenizer, meta last with its `files` record), reading it back checked, and
random-weight members for tests and benchmarks (no pretrained transformer can be fetched on pxgl's machines)."""

import json
from pathlib import Path

import numpy as np

from ..errors import PxglError
from ..model import WRITTEN, WRITTEN_LIMITS, check_written, file_record
from ..outputs import write_files
from ..pxi import MAX_PIXELS, bytes_to_pixels, encode_rgb, image_size_for, read_rgb
from ..spec import MAX_IMAGE_SIDE, meta_path_for, read_meta_document
from ..tokenizer import Tokenizer
from .meta import QuantizedTensor, TransformerArchitecture, TransformerSpec, transformer_spec_from_meta
from .quant import first_nonfinite, quantize


def lay_out(
    architecture: TransformerArchitecture,
    values: dict[str, np.ndarray],
    quants: str | dict[str, str],
    bos: int | None = None,
    tokenizer: str | None = None,
) -> tuple[TransformerSpec, bytes]:
    """The spec and weight bytes of float weights: tensors in table order, each at a multiple of 4, in the
    near-square image that holds them. `quants` is every matrix's quantization or one per tensor; norms and
    biases are float16 whatever it says."""
    tensors, chunks, offset = {}, [], 0
    for name, shape in architecture.shapes().items():
        quant = "f16" if len(shape) == 1 else quants if isinstance(quants, str) else quants[name]
        offset = -(-offset // 4) * 4
        data, scale, zero_point = quantize(np.asarray(values[name]).reshape(shape), quant, name)
        tensors[name] = QuantizedTensor(name, offset, shape, quant, scale, zero_point)
        chunks.append((offset, data))
        offset += len(data)
    width, height = image_size_for(offset)
    if width * height > MAX_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise PxglError(f"{offset:,} weight bytes are past one image's {MAX_PIXELS:,} pixels (§14.7)")
    stream = np.zeros(offset, np.uint8)
    for start, data in chunks:
        stream[start : start + len(data)] = data
    return TransformerSpec(architecture, width, height, tensors, bos, tokenizer), stream.tobytes()


def save_transformer(path: str | Path, spec: TransformerSpec, weight_bytes: bytes, tokenizer: Tokenizer | None = None):
    """Write the weight image, the tokenizer (when the spec names one) and the meta as one set (§2.3)."""
    path = Path(path)
    meta_path = meta_path_for(path)
    transformer_spec_from_meta(spec.to_meta(), str(meta_path))  # never write a model no reader accepts
    contents = {path: encode_rgb(bytes_to_pixels(weight_bytes, spec.image_width, spec.image_height))}
    written = {"weights": file_record(contents[path])}
    if spec.tokenizer is not None:
        if tokenizer is None or tokenizer.vocab_size != spec.architecture.vocab_size:
            raise ValueError("a spec naming a tokenizer is written with a tokenizer of its vocabulary")
        contents[path.with_name(spec.tokenizer)] = (
            json.dumps(tokenizer.to_json(), separators=(",", ":")) + "\n"
        ).encode()
        written["tokenizer"] = file_record(contents[path.with_name(spec.tokenizer)])
    contents[meta_path] = (json.dumps(spec.to_meta() | {WRITTEN: written}, indent=2) + "\n").encode()
    write_files({target: lambda tmp, data=data: tmp.write_bytes(data) for target, data in contents.items()})


def read_transformer(path: str | Path) -> tuple[TransformerSpec, np.ndarray]:
    """A version-2 `name.pxi` and its meta, checked against each other and the `files` record; the weight
    pixels (H, W, 3). A non-finite float16 in a tensor is refused, naming it (§14.1)."""
    path = Path(path)
    meta_path = meta_path_for(path)
    document = read_meta_document(meta_path)
    spec = transformer_spec_from_meta(document, str(meta_path))
    written = document.get(WRITTEN, {})
    recorded = isinstance(written, dict) and "weights" in written and set(written) <= WRITTEN_LIMITS.keys()
    if WRITTEN in document and not recorded:
        raise PxglError(f"{meta_path}: {WRITTEN!r} must be an object recording the weights (and the tokenizer), §2.3")
    check_written(path, written, "weights")
    pixels = read_rgb(path, expect=(spec.image_width, spec.image_height))
    stream = pixels.reshape(-1)
    for t in spec.tensors.values():
        bad = first_nonfinite(stream[t.offset : t.offset + t.nbytes], t.quant)
        if bad is not None:
            raise PxglError(f"{path}: tensor '{t.name}' holds a float16 that is not finite (its number {bad})")
    return spec, pixels


def random_values(architecture: TransformerArchitecture, rng: np.random.Generator, head_gain: float = 1.0):
    """Float weights whose activations stay O(1) through the blocks: matrices N(0, 1/in), embeddings N(0, 1),
    norm weights near 1, small biases; `head_gain` scales the output head (tied: the embeddings), which
    widens the logits' margins."""
    values = {}
    for name, shape in architecture.shapes().items():
        normal = rng.standard_normal(shape, dtype=np.float32)  # float32 draws: half the time and memory of float64
        if len(shape) == 1:
            values[name] = (1.0 if name.endswith("norm.weight") else 0.0) + np.float32(0.2) * normal
        elif name in ("embed", "head.weight"):
            values[name] = normal * np.float32(head_gain if name == "head.weight" or architecture.tied_head else 1)
        else:
            values[name] = normal * np.float32(0.5 if name == "pos" else shape[1] ** -0.5)
    return values


def write_random_transformer(
    path: str | Path,
    architecture: TransformerArchitecture,
    quants: str | dict[str, str],
    seed: int,
    bos: int | None = None,
    head_gain: float = 1.0,
) -> TransformerSpec:
    """A random-weight version-2 model written as its set (no tokenizer: token pixels only)."""
    values = random_values(architecture, np.random.default_rng(seed), head_gain)
    spec, weight_bytes = lay_out(architecture, values, quants, bos)
    save_transformer(path, spec, weight_bytes)
    return spec
