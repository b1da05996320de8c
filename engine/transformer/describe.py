"""What `pxgl inspect` says of a version-2 weights file (docs/FORMATS.md §14): the architecture, every tensor's
quantization and bytes, the float16 KV cache one sequence of the full context takes (`kv_cache_bytes`: a
slot's), the tokenizer."""

from typing import TYPE_CHECKING, Any

from .meta import architecture_record
from .model import TransformerModel

if TYPE_CHECKING:
    from ..model import Model


def describe_transformer(model: TransformerModel) -> dict[str, Any]:
    spec = model.spec
    tensors = [
        {"name": t.name, "offset": t.offset, "shape": list(t.shape), "quant": t.quant, "bytes": t.nbytes}
        for t in spec.tensors.values()
    ]
    quants: dict[str, int] = {}
    for t in spec.tensors.values():
        quants[t.quant] = quants.get(t.quant, 0) + t.nbytes
    if model.tokenizer_path is None:
        tokenizer = "none (token pixels in and out only; text commands refuse)"
    else:  # reading it checks it as every command would: the files record, its caps, its vocabulary
        tokenizer = f"{spec.tokenizer} (present, {model.tokenizer.vocab_size} tokens)"
    return {
        "kind": "weights",
        "model": architecture_record(spec.architecture),
        "bos": "none" if spec.bos is None else spec.bos,
        "weight_bytes": dict(sorted(quants.items())),
        "kv_cache_bytes": model.cache_bytes_per_slot,
        "tensors": tensors,
        "tokenizer": tokenizer,
        "verdict": "valid",
    }


def gpu_record(model: "Model | TransformerModel", storage_block: int) -> dict[str, Any]:
    """What `pxgl info -m MODEL` adds: the model, and for version 2 its weight bytes, its KV cache a slot and
    how many slots one storage block of keys (every slot's, a layer) holds on this GPU."""
    if not isinstance(model, TransformerModel):
        return {"model": model.source, "model_version": model.spec.version}
    return {
        "model": model.source,
        "model_version": 2,
        "weight_bytes": sum(t.nbytes for t in model.spec.tensors.values()),
        "kv_cache_bytes_per_slot": model.cache_bytes_per_slot,
        "kv_slots_per_storage_block": storage_block // model.slot_key_bytes,
    }
