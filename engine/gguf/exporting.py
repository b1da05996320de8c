"""`pxgl export --format gguf` (docs/FORMATS.md §10.3): a version-2 model written with llama.cpp's
`gguf.GGUFWriter` as the gpt2, llama or qwen2 architecture — q8/q4 as Q8_0/Q4_0 (their bytes), f16 as F16, u8 as
F32, norms and biases F32, a `halves` llama model's query/key rows permuted as convert_hf_to_gguf.py does — with
`pxgl.quantization` so importing the file gives the same bytes back."""

import math
from pathlib import Path

import numpy as np

from ..errors import PxglError
from ..outputs import OutputKind, atomic_write
from ..progress import report
from ..tokenizer import Tokenizer
from ..transformer.interchange import FORMAT, dequantized, export_metadata
from ..transformer.meta import TransformerArchitecture, TransformerSpec
from ..transformer.quant import tensor_nbytes
from . import gguf_package
from .architecture import LLAMA3_DEFAULTS, ROPE_FREQS, gguf_name, llama3_divisors
from .tensors import qk_permutation
from .vocabulary import gguf_tokenizer_keys

MARK = "pxgl.format"
"""The key/value written right after general.architecture: inside the first bytes an existing output is read
by (engine/outputs.py), so pxgl replaces a .gguf it wrote and no other (a user's llama.cpp model)."""
GGUF_FILE = OutputKind(
    f"a GGUF file pxgl wrote (beginning GGUF, with {MARK} among its first keys)",
    lambda head: head.startswith(b"GGUF") and MARK.encode() in head,
)
Q8_0, Q4_0 = 8, 2
RAW_TYPES = {"q8": Q8_0, "q4": Q4_0}


def architecture_name(architecture: TransformerArchitecture) -> str:
    """The GGUF architecture computing what the model computes (FORMATS §10.3), or one line saying what does
    not fit."""
    a = architecture
    if not math.isclose(a.attention_scale, 1 / math.sqrt(a.head_dim), rel_tol=1e-6):
        raise PxglError(
            f"attention_scale {a.attention_scale} is not 1/sqrt(head_dim): llama.cpp scales every head so; "
            "no GGUF architecture computes this model"
        )
    biases = set(a.biases)
    if a.mlp_kind == "gelu_tanh" and a.norm_kind == "layernorm" and a.rope is None:
        if biases == {"qkv", "attn_out", "mlp"}:
            return "gpt2"
    elif a.mlp_kind == "silu_gated" and a.norm_kind == "rmsnorm" and a.rope is not None:
        scaling = a.rope.scaling
        if (
            scaling is not None
            and scaling.kind == "llama3"
            and (scaling.low_freq_factor, scaling.high_freq_factor) != (1.0, 4.0)
        ):
            raise PxglError(
                "a llama3 rope scaling whose low/high frequency factors are not 1 and 4: convert_hf_to_gguf's "
                "rope_freqs are made with those"
            )
        if not biases:
            return "llama"
        if biases == {"qkv"} and a.rope.rotation == "halves":
            return "qwen2"
    raise PxglError(
        f"a {a.mlp_kind} MLP with {a.norm_kind}, {'rope' if a.rope else 'learned'} positions and biases "
        f"{sorted(biases) or 'none'}: no GGUF architecture pxgl writes (gpt2, llama, qwen2) computes this model"
    )


def _keys(writer, spec: TransformerSpec, name: str) -> None:
    a = spec.architecture
    writer.add_string(MARK, FORMAT)
    writer.add_uint32(f"{name}.context_length", a.context_length)
    writer.add_uint32(f"{name}.embedding_length", a.width)
    writer.add_uint32(f"{name}.block_count", a.layers)
    writer.add_uint32(f"{name}.feed_forward_length", a.mlp_width)
    writer.add_uint32(f"{name}.attention.head_count", a.heads)
    writer.add_uint32(f"{name}.attention.head_count_kv", a.kv_heads)
    writer.add_uint32(f"{name}.attention.key_length", a.head_dim)
    writer.add_uint32(f"{name}.attention.value_length", a.head_dim)
    eps = "layer_norm_epsilon" if name == "gpt2" else "layer_norm_rms_epsilon"
    writer.add_float32(f"{name}.attention.{eps}", a.norm_eps)
    if a.rope is not None:
        writer.add_float32(f"{name}.rope.freq_base", a.rope.base)
        writer.add_uint32(f"{name}.rope.dimension_count", a.head_dim)
        scaling = a.rope.scaling
        if scaling is not None and scaling.kind == "linear":
            writer.add_string(f"{name}.rope.scaling.type", "linear")
            writer.add_float32(f"{name}.rope.scaling.factor", scaling.factor)
        elif scaling is not None:
            writer.add_uint32(f"{name}.rope.scaling.original_context_length", scaling.original_context)
        if a.rope.rotation == "pairs":
            writer.add_string("pxgl.rope.rotation", "pairs")
    writer.add_string("pxgl.quantization", export_metadata(spec, None)["pxgl.quantization"])


def _rows(spec: TransformerSpec, stream: np.ndarray, name: str) -> tuple[np.ndarray, int | None]:
    """A tensor as the writer takes it: q8/q4 bytes as (rows, row bytes) uint8 with their GGUF type; f16 as
    float16; u8 and every vector as float32 (exact)."""
    t = spec.tensors[name]
    if len(t.shape) == 2 and t.quant in RAW_TYPES:
        data = stream[t.offset : t.offset + t.nbytes].reshape(t.shape[0], tensor_nbytes((1, t.shape[1]), t.quant))
        return data, RAW_TYPES[t.quant]
    if len(t.shape) == 2 and t.quant == "f16":
        return stream[t.offset : t.offset + t.nbytes].view("<f2").reshape(t.shape), None
    return dequantized(spec, stream, name).astype(np.float32), None


def _tensors(spec: TransformerSpec, stream: np.ndarray, name: str):
    """(GGUF name, array, raw type) of every tensor the file holds, table order (gpt2's q, k, v joined)."""
    a = spec.architecture
    permute = name == "llama" and a.rope is not None and a.rope.rotation == "halves"
    for pxgl in spec.tensors:
        gguf = gguf_name(pxgl)
        part = next((p for p in ("q", "k", "v") if f".attn.{p}." in pxgl), None)
        if name == "gpt2" and part is not None:
            if part != "q":
                continue
            parts = [pxgl.replace(".attn.q.", f".attn.{p}.") for p in ("q", "k", "v")]
            kinds = {spec.tensors[p].quant for p in parts}
            pieces = [_rows(spec, stream, p) for p in parts]
            if len(kinds) > 1:
                pieces = [(dequantized(spec, stream, p), None) for p in parts]
            yield gguf.replace(".attn_q.", ".attn_qkv."), np.concatenate([d for d, _ in pieces]), pieces[0][1]
            continue
        data, raw = _rows(spec, stream, pxgl)
        if permute and part in ("q", "k"):
            heads = a.heads if part == "q" else a.kv_heads
            data = data[np.argsort(qk_permutation(heads, a.head_dim))]
        yield gguf, np.ascontiguousarray(data), raw


def export_gguf(path: Path, spec: TransformerSpec, stream: np.ndarray, tokenizer: Tokenizer | None) -> str:
    """Write the model as a .gguf file (atomically); its GGUF architecture name."""
    gguf = gguf_package()
    name = architecture_name(spec.architecture)
    token_keys = gguf_tokenizer_keys(tokenizer, spec.architecture.vocab_size) if tokenizer is not None else []

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, name)
        _keys(writer, spec, name)
        for key, value in token_keys:
            writer.add_key_value(key, *value)
        for gguf_tensor, data, raw in _tensors(spec, stream, name):
            if raw is None:
                writer.add_tensor(gguf_tensor, data)
            else:
                writer.add_tensor(gguf_tensor, data, raw_dtype=gguf.GGMLQuantizationType(raw))
        rope = spec.architecture.rope
        if rope is not None and rope.scaling is not None and rope.scaling.kind == "llama3":
            scaling = LLAMA3_DEFAULTS | {
                "factor": rope.scaling.factor,
                "original_context": rope.scaling.original_context,
            }
            divisors = llama3_divisors(rope.base, spec.architecture.head_dim, scaling)
            writer.add_tensor(ROPE_FREQS, divisors.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        report("writing the GGUF file", 1, 1)

    atomic_write(path, write)
    return name
