"""Shrunk Hugging Face checkpoints of the families `pxgl import` reads (docs/FORMATS.md §10.2), built with
`transformers` from a config and random weights and saved with `save_pretrained` (no pretrained weights can be
fetched on pxgl's machines), and their logits as transformers computes them."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference extra: pip install -e '.[reference]'")
transformers = pytest.importorskip("transformers", reason="the reference extra: pip install -e '.[reference]'")

CONTEXT = 288
HEAD_GAIN = 0.3
"""The output head (tied: the embeddings) is N(0, HEAD_GAIN² / E): logits of standard deviation ~HEAD_GAIN, the
largest (a strong row's) ~8. The float16 KV cache moves logits by ~1e-3 of the largest (measured on these
members), so they stay within f16's bound of 1e-2."""
STRONG_ROWS = 8
STRONG_GAIN = 5.0
"""STRONG_ROWS output-head rows scaled by STRONG_GAIN: the top logit is one of them and stands clear of the next
(among 150,000 plain N(0, 1) rows the top two lie a fifth of a standard deviation apart, under q8's noise), so
top-1 is meaningful."""

FAMILIES = {
    # the real vocabulary sizes; widths, layers and heads shrunk
    "gpt2": (
        "GPT2LMHeadModel",
        dict(vocab_size=50257, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2, activation_function="gelu_new"),
    ),
    "smollm2": (
        "LlamaForCausalLM",
        dict(
            vocab_size=49152,
            max_position_embeddings=CONTEXT,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "qwen2": (
        "Qwen2ForCausalLM",
        dict(
            vocab_size=151936,
            max_position_embeddings=CONTEXT,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
    ),
    "tinyllama": (
        "LlamaForCausalLM",
        dict(
            vocab_size=32000,
            max_position_embeddings=CONTEXT,
            hidden_size=32,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    "mistral": (
        "MistralForCausalLM",
        dict(
            vocab_size=500,
            max_position_embeddings=CONTEXT,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            sliding_window=None,
        ),
    ),
}
VARIANTS = {
    # what the four families above leave out, at a small vocabulary: name → (family, config overrides)
    "gpt2_gelu_untied_unscaled": (
        "gpt2",
        dict(vocab_size=500, activation_function="gelu", tie_word_embeddings=False, scale_attn_weights=False),
    ),
    "llama_biases_linear": (
        "tinyllama",
        dict(vocab_size=500, attention_bias=True, mlp_bias=True, rope_scaling={"rope_type": "linear", "factor": 4.0}),
    ),
    "mistral_head_dim_past_width": ("mistral", {}),
}
RESIDUAL_OUTPUTS = ("c_proj", "o_proj", "down_proj")
RESIDUAL_SCALE = 0.5
"""The projections into the residual stream scaled by 1/√(2 L) (L = 2 layers), as GPT-2's own initialisation
does: each block an update of the stream, not its replacement."""
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build(family: str, rng: np.random.Generator, **overrides):
    """A random-weight model of the family: activations O(1) through the blocks (matrices N(0, 1/in), those into
    the residual stream scaled by RESIDUAL_SCALE, norms near 1, small biases), the embeddings and head as
    HEAD_GAIN and STRONG_ROWS say."""
    architecture, settings = FAMILIES[family]
    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config").replace("LMHeadModel", "Config"))
    model = getattr(transformers, architecture)(config_class(**(settings | overrides))).eval()
    vocab = model.config.vocab_size
    strong = rng.choice(vocab, STRONG_ROWS, replace=False)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = tuple(parameter.shape)
            normal = rng.standard_normal(shape).astype(np.float32)
            if len(shape) == 1:
                values = (1.0 if "ln" in name or "norm" in name else 0.0) + 0.2 * normal
            elif shape[0] == vocab:  # the embeddings, and the head (tied: the same tensor)
                values = normal * HEAD_GAIN * model.config.hidden_size**-0.5
                values[strong] *= STRONG_GAIN
            elif "wpe" in name:
                values = 0.5 * normal
            else:  # nn.Linear is [out, in]; GPT-2's Conv1D [in, out]
                fan_in = shape[0] if family == "gpt2" else shape[1]
                values = normal * fan_in**-0.5
                if any(part in name for part in RESIDUAL_OUTPUTS):
                    values *= RESIDUAL_SCALE
            parameter.copy_(torch.from_numpy(values))
    return model


def save(model, folder: Path, dtype: str = "float32", shard: str | None = None) -> Path:
    """save_pretrained in `dtype` (sharded when `shard` gives a max shard size)."""
    model.to(DTYPES[dtype]).save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    return folder


def reference(folder: Path):
    """transformers' model of the folder, run in float32 on the values saved (a float16 or bfloat16 folder's
    values widened exactly)."""
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def logits(model, window: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(window[None])).logits[0].numpy()
