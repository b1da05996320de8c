"""A Hugging Face `config.json` ↔ a version-2 architecture (docs/FORMATS.md §10.2): GPT2LMHeadModel,
LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM read into §14.1's terms, and the architecture written
back as the one of them that expresses it. What the spec cannot express is refused in one line naming it."""

import math
from typing import Any

from ..errors import PxglError
from ..spec import _echo
from ..transformer.meta import MAX_CONTEXT, TransformerArchitecture, architecture_from_meta

GPT2 = "GPT2LMHeadModel"
LLAMA = "LlamaForCausalLM"
QWEN2 = "Qwen2ForCausalLM"
MISTRAL = "MistralForCausalLM"
ARCHITECTURES = (GPT2, LLAMA, QWEN2, MISTRAL)
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
ROPE_SCALINGS = ("default", "linear", "llama3")
MISTRAL_WINDOW = 4096
"""MistralConfig's sliding_window when config.json has none (null is no window)."""
UNEXPRESSED = {
    "GPTNeoForCausalLM": "GPT-Neo's local attention (a layer in two sees a window of the last 256 tokens)",
    "GPTNeoXForCausalLM": "GPT-NeoX's partial rotary embeddings and parallel attention",
    "GPTJForCausalLM": "GPT-J's partial rotary embeddings and parallel attention",
    "PhiForCausalLM": "Phi's partial rotary embeddings and parallel attention",
    "GemmaForCausalLM": "Gemma's GELU-gated MLP, (1 + weight) RMSNorm and scaled embeddings",
    "FalconForCausalLM": "Falcon's parallel attention",
}
"""Architectures people try, and what of theirs §14 has no place for."""


def _key(config: dict, key: str, default: Any = None, required: bool = False) -> Any:
    if required and key not in config:
        raise PxglError(f"config.json: '{key}' is missing")
    return config.get(key, default)


def _count(config: dict, key: str, default: Any = None) -> int:
    value = _key(config, key, default, required=default is None)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PxglError(f"config.json: '{key}' must be an integer, got {_echo(value)}")
    return value


def _refuse_unless(condition: bool, what: str) -> None:
    if not condition:
        raise PxglError(f"config.json: {what}; pxgl's version 2 (docs/FORMATS.md §14) has no place for it")


def family(config: Any) -> str:
    """The one architecture config.json names, if pxgl reads it."""
    if not isinstance(config, dict):
        raise PxglError("config.json: not a JSON object")
    names = config.get("architectures")
    if isinstance(names, list) and len(names) == 1 and isinstance(names[0], str) and names[0] in UNEXPRESSED:
        _refuse_unless(False, f"{names[0]}: {UNEXPRESSED[names[0]]}")
    if not (isinstance(names, list) and len(names) == 1 and names[0] in ARCHITECTURES):
        raise PxglError(
            f"config.json: 'architectures' is {_echo(names)}; pxgl imports exactly one of {', '.join(ARCHITECTURES)}"
        )
    return names[0]


def _gpt2(config: dict) -> tuple[dict[str, Any], int]:
    width, heads = _count(config, "n_embd"), _count(config, "n_head")
    activation = _key(config, "activation_function", "gelu_new")
    _refuse_unless(
        isinstance(activation, str) and activation in GPT2_ACTIVATIONS, f"activation_function {_echo(activation)}"
    )
    _refuse_unless(not config.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx")
    _refuse_unless(not config.get("add_cross_attention", False), "add_cross_attention")
    _refuse_unless(width > 0 and heads > 0 and width % heads == 0, f"n_embd {width} not a multiple of n_head {heads}")
    head_dim = width // heads
    scaled = _key(config, "scale_attn_weights", True)
    _refuse_unless(scaled in (True, False), f"scale_attn_weights {_echo(scaled)} (not true or false)")
    inner = config.get("n_inner")
    architecture = {
        "context_length": _count(config, "n_positions"),
        "width": width,
        "heads": heads,
        "kv_heads": heads,
        "head_dim": head_dim,
        "attention_scale": head_dim**-0.5 if scaled else 1.0,
        "layers": _count(config, "n_layer"),
        "mlp": {
            "kind": GPT2_ACTIVATIONS[activation],
            "width": 4 * width if inner is None else _count(config, "n_inner"),
        },
        "norm": {"kind": "layernorm", "eps": _key(config, "layer_norm_epsilon", 1e-5)},
        "positions": {"kind": "learned"},
        "biases": {"qkv": True, "attn_out": True, "mlp": True, "head": False},
    }
    return architecture, architecture["context_length"]


def rope_parameters(config: dict) -> dict[str, Any]:
    """θ's base and scaling: transformers 5's `rope_parameters`, or the older `rope_theta` + `rope_scaling`."""
    parameters = config.get("rope_parameters")
    if parameters is None:
        scaling = config.get("rope_scaling") or {}
        _refuse_unless(isinstance(scaling, dict), f"rope_scaling {_echo(scaling)}")
        parameters = {"rope_theta": config.get("rope_theta", 10000.0), **scaling}
    _refuse_unless(isinstance(parameters, dict), f"rope_parameters {_echo(parameters)}")
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    _refuse_unless(kind in ROPE_SCALINGS, f"RoPE scaling {_echo(kind)} (pxgl knows {', '.join(ROPE_SCALINGS)})")
    factor = parameters.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    _refuse_unless(factor == 1.0, f"partial rotary embeddings (partial_rotary_factor {_echo(factor)})")
    positions: dict[str, Any] = {"kind": "rope", "base": parameters.get("rope_theta"), "rotation": "halves"}
    if kind == "linear":
        positions["scaling"] = {"kind": "linear", "factor": parameters.get("factor")}
    elif kind == "llama3":
        positions["scaling"] = {
            "kind": "llama3",
            "factor": parameters.get("factor"),
            "low_freq_factor": parameters.get("low_freq_factor"),
            "high_freq_factor": parameters.get("high_freq_factor"),
            "original_context": parameters.get("original_max_position_embeddings"),
        }
    return positions


def _llama(config: dict, name: str) -> tuple[dict[str, Any], int]:
    width, heads = _count(config, "hidden_size"), _count(config, "num_attention_heads")
    _refuse_unless(_key(config, "hidden_act", "silu") == "silu", f"hidden_act {_echo(config.get('hidden_act'))}")
    _refuse_unless(width > 0 and heads > 0, f"hidden_size {width} in num_attention_heads {heads}")
    head_dim = width // heads if config.get("head_dim") is None else _count(config, "head_dim")
    kv_heads = heads if config.get("num_key_value_heads") is None else _count(config, "num_key_value_heads")
    context = _count(config, "max_position_embeddings")
    layers = _count(config, "num_hidden_layers")
    if name == QWEN2:
        layer_types = config.get("layer_types") or []
        _refuse_unless(isinstance(layer_types, list), f"layer_types {_echo(layer_types)} (not a list)")
        sliding = config.get("use_sliding_window", False) or "sliding_attention" in layer_types
        _refuse_unless(not sliding, "sliding-window attention (use_sliding_window)")
        biases = {"qkv": True, "attn_out": False, "mlp": False, "head": False}
    else:
        window = config.get("sliding_window", MISTRAL_WINDOW if name == MISTRAL else None)
        _refuse_unless(window is None or (type(window) is int and window >= context), f"sliding_window {window}")
        attention, mlp = config.get("attention_bias", False), config.get("mlp_bias", False)
        _refuse_unless(attention in (True, False) and mlp in (True, False), "attention_bias/mlp_bias not true/false")
        biases = {"qkv": attention, "attn_out": attention, "mlp": mlp, "head": False}
    architecture = {
        "context_length": min(context, MAX_CONTEXT),
        "width": width,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "attention_scale": head_dim**-0.5 if head_dim > 0 else 0.0,
        "layers": layers,
        "mlp": {"kind": "silu_gated", "width": _count(config, "intermediate_size")},
        "norm": {"kind": "rmsnorm", "eps": _key(config, "rms_norm_eps", 1e-6)},
        "positions": rope_parameters(config),
        "biases": biases,
    }
    return architecture, context


def architecture_from_config(config: Any) -> tuple[str, TransformerArchitecture, int]:
    """(family, architecture, the context config.json declares) of a parsed config.json: every size checked in
    §14.1's ranges before any tensor is read. A RoPE model's context is capped at §14.1's largest."""
    name = family(config)
    pieces, declared = _gpt2(config) if name == GPT2 else _llama(config, name)
    tied = config.get("tie_word_embeddings", name == GPT2)
    _refuse_unless(tied in (True, False), f"tie_word_embeddings {_echo(tied)}")
    document = {"vocab_size": _count(config, "vocab_size"), **pieces, "tied_head": tied}
    return name, architecture_from_meta(document, "config.json"), declared


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


def config_for(architecture: TransformerArchitecture, bos: int | None) -> dict[str, Any]:
    """config.json of the Hugging Face architecture that expresses this one (§10.2's export), or one line
    naming what none of them expresses."""
    a = architecture
    ids = {"bos_token_id": bos, "eos_token_id": None, "dtype": "float32"}
    if a.rope is None:
        gpt2_biases = a.biases == frozenset({"qkv", "attn_out", "mlp"})
        scaled = _close(a.attention_scale, a.head_dim**-0.5)
        expressed = (
            a.norm_kind == "layernorm"
            and a.mlp_kind in ("gelu_tanh", "gelu")
            and gpt2_biases
            and a.kv_heads == a.heads
            and a.heads * a.head_dim == a.width
            and (scaled or a.attention_scale == 1.0)
        )
        _export_unless(
            expressed,
            "learned positions need GPT-2's shape (LayerNorm, GELU, biases on every projection but the head, "
            "multi-head attention of width E, scale 1/√D or 1)",
        )
        return {
            "architectures": [GPT2],
            "model_type": "gpt2",
            "vocab_size": a.vocab_size,
            "n_positions": a.context_length,
            "n_embd": a.width,
            "n_layer": a.layers,
            "n_head": a.heads,
            "n_inner": a.mlp_width,
            "activation_function": "gelu_new" if a.mlp_kind == "gelu_tanh" else "gelu",
            "layer_norm_epsilon": a.norm_eps,
            "scale_attn_weights": scaled,
            "tie_word_embeddings": a.tied_head,
            **ids,
        }
    expressed = a.norm_kind == "rmsnorm" and a.mlp_kind == "silu_gated" and _close(a.attention_scale, a.head_dim**-0.5)
    _export_unless(expressed, "RoPE needs Llama's shape (RMSNorm, the gated SiLU MLP, scale 1/√D)")
    _export_unless("head" not in a.biases, "a bias on the output head")
    qwen2 = a.biases == frozenset({"qkv"})
    _export_unless(
        qwen2 or ("qkv" in a.biases) == ("attn_out" in a.biases),
        "biases on q/k/v without one on the attention's output (or the reverse) beside MLP biases",
    )
    rope: dict[str, Any] = {"rope_theta": a.rope.base}
    if (s := a.rope.scaling) is not None:
        rope["rope_scaling"] = {"rope_type": s.kind, "factor": s.factor}
        if s.kind == "llama3":
            rope["rope_scaling"] |= {
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_context,
            }
    config = {
        "architectures": [QWEN2 if qwen2 else LLAMA],
        "model_type": "qwen2" if qwen2 else "llama",
        "vocab_size": a.vocab_size,
        "max_position_embeddings": a.context_length,
        "hidden_size": a.width,
        "intermediate_size": a.mlp_width,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": a.norm_eps,
        **rope,
        "tie_word_embeddings": a.tied_head,
        **ids,
    }
    if not qwen2:
        config |= {"attention_bias": "qkv" in a.biases, "mlp_bias": "mlp" in a.biases}
    return config


def _export_unless(condition: bool, what: str) -> None:
    if not condition:
        raise PxglError(
            f"--format hf: no Hugging Face architecture pxgl writes (GPT-2, Llama, Qwen2) expresses this model: {what}"
        )
