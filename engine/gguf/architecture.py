"""A GGUF file's architecture as pxgl's version-2 one (docs/FORMATS.md §10.3): `general.architecture` and its
`A.*` keys → §14.1's hyperparameters, llama.cpp's tensor names ↔ §14.2's, and Llama's query/key row order."""

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PxglError
from ..transformer.meta import MAX_CONTEXT, TransformerArchitecture, architecture_from_meta, few
from .header import FLOAT32, FLOAT_TYPES, INTEGER_TYPES, STRING, Header

ARCHITECTURES = ("gpt2", "llama", "qwen2")
BLOCK_NAMES = {"attn_norm": "attn_norm", "attn_q": "attn.q", "attn_k": "attn.k", "attn_v": "attn.v"}
BLOCK_NAMES |= {"attn_output": "attn.out", "ffn_norm": "mlp_norm", "ffn_gate": "mlp.gate", "ffn_up": "mlp.up"}
BLOCK_NAMES |= {"ffn_down": "mlp.down"}
"""llama.cpp's name of a block's tensor → §14.2's (blk.l.X.weight ↔ block<l>.Y.weight)."""
TOP_NAMES = {"token_embd": "embed", "position_embd": "pos", "output_norm": "final_norm", "output": "head"}
ROPE_FREQS = "rope_freqs.weight"
LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 8192}
"""What convert_hf_to_gguf.py's Llama 3 rope_freqs are made with (Llama 3.1 and 3.2), besides the factor."""


@dataclass(frozen=True)
class Layout:
    """How the file's tensors become pxgl's: the architecture name, whether q, k, v are one fused tensor
    (gpt2's attn_qkv), and whether Llama's query/key rows are stored permuted for the adjacent-pair rotation."""

    name: str
    fused_qkv: bool
    permuted_qk: bool


def key(header: Header, name: str, kinds: set[int], default: Any = None, where: str = "") -> Any:
    """A metadata value of one of `kinds` (GGUF type numbers), or `default` when absent (None: required)."""
    if name not in header.values:
        if default is None:
            raise PxglError(f"{where}: the GGUF metadata has no {name!r}, which this architecture needs")
        return default
    kind, value = header.values[name]
    if kind not in kinds:
        raise PxglError(f"{where}: {name!r} has the GGUF type {kind}; expected one of {sorted(kinds)}")
    if kind in FLOAT_TYPES and not math.isfinite(value):
        raise PxglError(f"{where}: {name!r} is {value}, not a finite number")
    return value


def integer(header: Header, name: str, where: str, default: int | None = None) -> int:
    return int(key(header, name, INTEGER_TYPES, default, where))


def number(header: Header, name: str, where: str, default: float | None = None) -> float:
    """A float32 value as the shortest decimal that rounds to it (1e-05, not 9.999999747378752e-06): what the
    writer meant, so an export imports to the same meta and a converted folder's file to the folder's."""
    value = key(header, name, FLOAT_TYPES | INTEGER_TYPES, default, where)
    if name in header.values and header.values[name][0] == FLOAT32:
        return float(str(np.float32(value)))
    return float(value)


def text(header: Header, name: str, where: str, default: str | None = None) -> str:
    return key(header, name, {STRING}, default, where)


def gguf_name(pxgl_name: str) -> str:
    """§14.2's name → llama.cpp's (q, k, v map to attn_q/k/v; gpt2's are fused by the callers)."""
    stem, _, part = pxgl_name.rpartition(".")
    if pxgl_name in ("embed", "pos"):
        return f"{'token_embd' if pxgl_name == 'embed' else 'position_embd'}.weight"
    if stem.startswith("block"):
        layer, _, inner = stem.partition(".")
        gguf = next(g for g, p in BLOCK_NAMES.items() if p == inner)
        return f"blk.{layer.removeprefix('block')}.{gguf}.{part}"
    return f"{next(g for g, p in TOP_NAMES.items() if p == stem)}.{part}"


def _biases(tensors: set[str], fused: bool) -> dict[str, bool]:
    qkv = "blk.0.attn_qkv.bias" if fused else "blk.0.attn_q.bias"
    return {
        "qkv": qkv in tensors,
        "attn_out": "blk.0.attn_output.bias" in tensors,
        "mlp": "blk.0.ffn_up.bias" in tensors,
        "head": "output.bias" in tensors,
    }


def llama3_divisors(base: float, head_dim: int, scaling: dict[str, Any]) -> np.ndarray:
    """§14.4's llama3 scaling as each frequency's divisor (θ_k / divisor_k): what rope_freqs.weight holds."""
    theta = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelength = 2 * math.pi / theta
    factor, lo, hi, c0 = (scaling[k] for k in ("factor", "low_freq_factor", "high_freq_factor", "original_context"))
    smooth = (c0 / wavelength - lo) / (hi - lo)
    middle = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelength < c0 / hi, 1.0, np.where(wavelength > c0 / lo, factor, middle))


def _rope_scaling(header: Header, a: str, base: float, head_dim: int, divisors: np.ndarray | None, where: str):
    kind = text(header, f"{a}.rope.scaling.type", where, "none")
    if divisors is not None:
        if kind not in ("none", "llama3"):
            raise PxglError(f"{where}: both rope_freqs.weight and {a}.rope.scaling.type = {kind!r}")
        c0 = integer(header, f"{a}.rope.scaling.original_context_length", where, LLAMA3_DEFAULTS["original_context"])
        scaling = LLAMA3_DEFAULTS | {"kind": "llama3", "factor": float(divisors.max()), "original_context": c0}
        expected = llama3_divisors(base, head_dim, scaling)
        if divisors.shape != expected.shape or not np.allclose(divisors, expected, rtol=1e-6, atol=0):
            raise PxglError(
                f"{where}: rope_freqs.weight holds per-frequency divisors that are not Llama 3's scaling (factor, "
                "low_freq_factor 1, high_freq_factor 4): pxgl cannot express them (FORMATS §10.3)"
            )
        return scaling
    if kind == "none":
        return None
    if kind == "linear":
        return {"kind": "linear", "factor": number(header, f"{a}.rope.scaling.factor", where)}
    raise PxglError(f"{where}: {a}.rope.scaling.type = {kind!r}; pxgl reads none, linear and Llama 3's rope_freqs")


def gguf_architecture(
    header: Header, where: str, divisors: np.ndarray | None
) -> tuple[TransformerArchitecture, Layout]:
    """§14.1's architecture of the file (FORMATS §10.3), checked as a meta's is; `divisors` is the file's
    rope_freqs.weight, if any. Every problem one line."""
    if integer(header, "split.count", where, 1) > 1:
        raise PxglError(
            f"{where}: one part of a split GGUF (split.count): join the parts first (llama-gguf-split --merge)"
        )
    a = text(header, "general.architecture", where)
    if a not in ARCHITECTURES:
        raise PxglError(f"{where}: general.architecture {a[:40]!r}; pxgl imports {', '.join(ARCHITECTURES)}")
    names = set(header.tensors)
    fused = "blk.0.attn_qkv.weight" in names
    if "token_embd.weight" not in names:
        raise PxglError(f"{where}: no token_embd.weight: a GGUF model pxgl imports has its embeddings")
    embed_dims = header.tensors["token_embd.weight"].dims
    vocab = embed_dims[-1]
    if key(header, f"{a}.vocab_size", INTEGER_TYPES, vocab, where) != vocab:
        raise PxglError(f"{where}: {a}.vocab_size disagrees with token_embd.weight's {vocab} rows")
    width = integer(header, f"{a}.embedding_length", where)
    heads = integer(header, f"{a}.attention.head_count", where)
    if heads < 1:
        raise PxglError(f"{where}: {a}.attention.head_count is {heads}")
    head_dim = integer(header, f"{a}.attention.key_length", where, width // heads)
    if integer(header, f"{a}.attention.value_length", where, head_dim) != head_dim:
        raise PxglError(f"{where}: {a}.attention.key_length and value_length differ; pxgl's heads have one D")
    if f"{a}.attention.key_length" not in header.values and width % heads:
        raise PxglError(f"{where}: {a}.embedding_length {width} is not a multiple of the head count {heads}")
    context = integer(header, f"{a}.context_length", where)
    gpt2 = a == "gpt2"
    positions: dict[str, Any] = {"kind": "learned"}
    if gpt2:
        if "position_embd.weight" in names and header.tensors["position_embd.weight"].dims[-1] != context:
            raise PxglError(f"{where}: position_embd.weight's rows are not {a}.context_length {context}")
    else:
        if context > MAX_CONTEXT:
            print(f"{where}: context {context:,} lowered to pxgl's largest, {MAX_CONTEXT:,}", file=sys.stderr)
            context = MAX_CONTEXT
        base = number(header, f"{a}.rope.freq_base", where, 10000.0)
        if integer(header, f"{a}.rope.dimension_count", where, head_dim) != head_dim:
            raise PxglError(
                f"{where}: {a}.rope.dimension_count is not the head dimension {head_dim}: pxgl rotates whole heads"
            )
        rotation = "pairs" if a == "llama" and _keeps_pairs(header, where) else "halves"
        positions = {"kind": "rope", "base": base, "rotation": rotation}
        scaling = _rope_scaling(header, a, base, head_dim, divisors, where)
        positions |= {} if scaling is None else {"scaling": scaling}
    eps_key = f"{a}.attention.layer_norm_epsilon" if gpt2 else f"{a}.attention.layer_norm_rms_epsilon"
    document = {
        "vocab_size": vocab,
        "context_length": context,
        "width": width,
        "layers": integer(header, f"{a}.block_count", where),
        "heads": heads,
        "kv_heads": integer(header, f"{a}.attention.head_count_kv", where, heads),
        "head_dim": head_dim,
        "attention_scale": 1 / math.sqrt(head_dim) if head_dim > 0 else 0.0,
        "mlp": {
            "kind": "gelu_tanh" if gpt2 else "silu_gated",
            "width": integer(header, f"{a}.feed_forward_length", where),
        },
        "norm": {"kind": "layernorm" if gpt2 else "rmsnorm", "eps": number(header, eps_key, where)},
        "positions": positions,
        "biases": _biases(names, fused),
        "tied_head": "output.weight" not in names,
    }
    architecture = architecture_from_meta(document, f"{where} (as pxgl's architecture)")
    layout = Layout(a, fused, a == "llama" and positions.get("rotation") == "halves")
    check_tensor_set(architecture, layout, header, where)
    return architecture, layout


def _keeps_pairs(header: Header, where: str) -> bool:
    rotation = text(header, "pxgl.rope.rotation", where, "halves")
    if rotation not in ("halves", "pairs"):
        raise PxglError(f"{where}: pxgl.rope.rotation {rotation[:20]!r} is neither halves nor pairs")
    return rotation == "pairs"


def expected_tensors(architecture: TransformerArchitecture, layout: Layout) -> dict[str, tuple[int, ...]]:
    """GGUF name → GGUF dimensions (row length first) of every tensor the file must hold."""
    expected: dict[str, tuple[int, ...]] = {}
    for name, shape in architecture.shapes().items():
        gguf = gguf_name(name)
        if layout.fused_qkv and ".attn_q." in gguf:
            rows = architecture.heads * architecture.head_dim + 2 * architecture.kv_heads * architecture.head_dim
            expected[gguf.replace(".attn_q.", ".attn_qkv.")] = (*shape[1:], rows)
        elif not (layout.fused_qkv and (".attn_k." in gguf or ".attn_v." in gguf)):
            expected[gguf] = tuple(reversed(shape))
    return expected


def check_tensor_set(architecture: TransformerArchitecture, layout: Layout, header: Header, where: str) -> None:
    expected = expected_tensors(architecture, layout)
    present = set(header.tensors) - {ROPE_FREQS}
    if present != set(expected):
        missing, extra = set(expected) - present, present - set(expected)
        raise PxglError(
            f"{where}: as a {layout.name} model of {architecture.layers} blocks the file lacks "
            f"{few(missing) if missing else 'nothing'} and has {few(extra) if extra else 'nothing else'}"
        )
    for name, dims in expected.items():
        got = header.tensors[name].dims
        if tuple(got) != dims:
            raise PxglError(f"{where}: tensor {name!r} has the dimensions {list(got)}; the metadata says {list(dims)}")
