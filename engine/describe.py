"""`pxgl inspect`: what a file is, told from its content, and whether pxgl would run it.

Every description is a flat record (JSON-ready): `kind`, what the kind has (dimensions, members, hashes,
tensors, rows), and a `verdict`. A file pxgl would refuse raises the PxglError that refusing it gives."""

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .cartridge import FORMAT, SUFFIX, TRANSFORMER_VERSION, cartridge_version, open_cartridge
from .errors import PxglError
from .loading import check_executor, load_model
from .model import Model
from .pxi import MAX_TOKEN_PIXELS, decode_predictions, is_prediction_image, read_rgb, token_ids, token_lengths
from .pxvm.opcodes import MAGIC
from .pxvm.program import decode_program
from .resources import bundled_models
from .spec import MAX_VOCAB, ModelSpec, meta_path_for
from .transformer.describe import describe_transformer
from .transformer.model import TransformerModel

MAX_LISTED_ROWS = 16
"""Rows of a token texture or prediction image listed one by one; the rest are summarised."""


def describe(path: Path) -> dict[str, Any]:
    if path.suffix == SUFFIX:
        return describe_cartridge(path)
    if path.suffix != ".pxi":
        raise PxglError(f"{path}: pxgl inspects cartridges (.pxa) and pixel files (.pxi)")
    # weights bytes are arbitrary, so their first pixel may be the pxVM magic: a meta beside them decides
    if meta_path_for(path).exists():
        model = load_model(path)
        if isinstance(model, TransformerModel):
            images = " + ".join(f"{width}x{height}" for width, height in model.spec.images)
            return {"file": str(path), "sha256": file_sha256(path), "image": images} | describe_transformer(model)
        return pixel_record(path, model.weights) | describe_weights(model)
    pixels = read_rgb(
        path, MAX_TOKEN_PIXELS, kind="pixel file without a meta"
    )  # programs, token textures and predictions are all this small
    height = pixels.shape[0]
    record = pixel_record(path, pixels)
    if tuple(pixels[0, 0].tolist()) == MAGIC:
        program = decode_program(pixels, str(path))
        return record | {
            "kind": "pxvm program",
            "instructions": len(program.instructions),
            "scratch_floats": program.scratch_size,
            "verdict": "valid format (its bounds are checked against a model before it runs: pxgl disasm -m MODEL)",
        }
    if is_prediction_image(pixels):
        ids, confidence = decode_predictions(pixels, str(path), MAX_VOCAB)
        rows = [
            {"row": r, "id": int(i), "confidence": round(int(c) / 255, 4)}
            for r, (i, c) in enumerate(zip(ids[:MAX_LISTED_ROWS], confidence[:MAX_LISTED_ROWS], strict=True))
        ]
        return record | {"kind": "prediction pixels", "rows": height, "predictions": rows, "verdict": "valid"}
    try:
        lengths = token_lengths(pixels, MAX_VOCAB, str(path))
    except PxglError as e:
        raise PxglError(f"{e}; so it is no pxgl pixel file (weights need their .meta.json beside them)") from None
    ids = token_ids(pixels)
    prompts = [
        {"row": r, "tokens": int(n), "ids": ids[r, : min(int(n), MAX_LISTED_ROWS)].tolist()}
        for r, n in enumerate(lengths[:MAX_LISTED_ROWS])
    ]
    return record | {
        "kind": "token texture",
        "rows": height,
        "largest_id": int(max(ids[r, :n].max() for r, n in enumerate(lengths))),
        "prompts": prompts,
        "verdict": "valid (token ids are checked against a model's vocabulary when it runs)",
    }


def pixel_record(path: Path, pixels: np.ndarray) -> dict[str, Any]:
    height, width, _ = pixels.shape
    return {"file": str(path), "sha256": file_sha256(path), "image": f"{width}x{height}"}


def describe_weights(model: Model) -> dict[str, Any]:
    spec = model.spec
    tensors = [
        {
            "name": spec.meta_name(t.name),
            "offset": t.offset,
            "shape": list(t.shape),
            "scale": t.scale,
            "zero_point": t.zero_point,
        }
        for t in spec.tensors.values()
    ]
    assert model.tokenizer_path is not None
    # Reading the tokenizer checks it as every command would: the meta's files record, its caps, its vocabulary.
    if model.tokenizer_path.is_file():
        tokenizer = f"present, {model.tokenizer.vocab_size} tokens"
    else:
        tokenizer = "missing (text commands will not work)"
    return {
        "kind": "weights",
        "model": architecture_record(spec),
        "tensors": tensors,
        "tokenizer": f"{spec.tokenizer} ({tokenizer})",
        "verdict": "valid",
    }


def describe_cartridge(path: Path) -> dict[str, Any]:
    if cartridge_version(path) == TRANSFORMER_VERSION:
        from .transformer.cartridge import describe_transformer_cartridge

        return describe_transformer_cartridge(path, file_sha256(path))
    cart = open_cartridge(path)
    manifest = cart.manifest
    check_executor(manifest.executor, f"{path}: its manifest names")
    formats = ", ".join(f"{name} {version}" for name, version in manifest.formats.items())
    record: dict[str, Any] = {
        "file": str(path),
        "sha256": file_sha256(path),
        "kind": "cartridge",
        "format": f"{FORMAT} version {manifest.version} ({formats})",
        "name": manifest.name,
        "model": architecture_record(cart.spec),
        "executor": manifest.executor,
        "program": f"{len(cart.program.instructions)} pxVM instructions, {cart.program.scratch_size} scratch "
        "floats, valid for this model",
        "members": [{"name": m.name, "size": m.size, "sha256": m.sha256} for m in manifest.members],
    }
    if cart.shaders:
        record["shaders"] = (
            f"{len(cart.shaders)} shader files of the engine that packed it, kept for the record (pxgl runs its own)"
        )
    if manifest.about is not None:
        record["about"] = manifest.about
    return record | {"verdict": "valid: runs"}


SPEC_SCORES = {"pixellm_v0": {"top1": 0.27665, "bits_per_byte": 2.04709, "perplexity": 44.0525}}
"""Held-out scores by FORMATS §9 (what `pxgl eval` computes) of a bundled model whose meta records other
ones: pixellm_v0's meta, pinned, holds pxgl 0.1's (each document's first token skipped: top-1 27.69%,
perplexity 43.97). Rounded as `pxgl train` records them."""


def bundled_records() -> list[dict[str, Any]]:
    """What `pxgl models` says of each bundled model: files, architecture, held-out scores by FORMATS §9."""
    records = []
    for index, (name, path) in enumerate(bundled_models().items()):
        spec = load_model(path).spec
        records.append(
            {
                "name": name,
                "default": index == 0,
                "weights_file": str(path),
                "cartridge": str(path.with_suffix(".pxa")),
                "architecture": spec.architecture.describe(),
                "weights": spec.architecture.weight_count(),
                "scores": heldout_scores(SPEC_SCORES.get(name) or spec.eval.get("heldout", {}).get("quantized")),
            }
        )
    return records


def heldout_scores(scores: dict[str, float] | None) -> str:
    """A bundled model's held-out scores (FORMATS §9), in words."""
    if scores is None:
        return "none recorded"
    return (
        f"held-out top-1 {scores['top1']:.2%}, {scores['bits_per_byte']:.4f} bits/byte, perplexity "
        f"{scores['perplexity']:.2f} (pxgl eval -m MODEL recomputes them on the GPU)"
    )


def architecture_record(spec: ModelSpec) -> dict[str, Any]:
    """The model as `inspect` shows it: its format version and architecture."""
    a = spec.architecture
    return {"version": spec.version, **a.to_json(), "weights": a.weight_count()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
