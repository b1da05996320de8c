"""Random-weight version-2 models of the known shapes, with a tokenizer when given one: what the README and the
tests run (no pretrained transformer weights can be fetched on pxgl's machines, docs/FORMATS.md §14)."""

from pathlib import Path

import numpy as np

from ..tokenizer import Tokenizer
from .files import lay_out, random_values, save_transformer
from .meta import TransformerArchitecture, TransformerSpec


def gpt2_architecture(
    vocab_size: int = 50257, context_length: int = 1024, width: int = 768, layers: int = 12, heads: int = 12
) -> TransformerArchitecture:
    """GPT-2's shape (124M at the defaults): learned positions, LayerNorm, gelu_tanh MLP of 4 E, biases on
    every projection but the head, the head tied to the embeddings."""
    return TransformerArchitecture(
        vocab_size=vocab_size,
        context_length=context_length,
        width=width,
        layers=layers,
        heads=heads,
        kv_heads=heads,
        head_dim=width // heads,
        attention_scale=(width // heads) ** -0.5,
        mlp_kind="gelu_tanh",
        mlp_width=4 * width,
        norm_kind="layernorm",
        norm_eps=1e-5,
        rope=None,
        biases=frozenset({"qkv", "attn_out", "mlp"}),
        tied_head=True,
    )


def write_random_model(
    path: str | Path,
    architecture: TransformerArchitecture,
    quants: str | dict[str, str],
    seed: int,
    tokenizer: Tokenizer | None = None,
    bos: int | None = None,
    head_gain: float = 1.0,
) -> TransformerSpec:
    """A random-weight model written as its set: weights, meta and, when given one of the model's vocabulary,
    the tokenizer (`name.tokenizer.json`), so the text verbs run on it."""
    path = Path(path)
    values = random_values(architecture, np.random.default_rng(seed), head_gain)
    name = None if tokenizer is None else path.name.removesuffix(".pxi") + ".tokenizer.json"
    spec, weight_bytes = lay_out(architecture, values, quants, bos, name)
    save_transformer(path, spec, weight_bytes, tokenizer)
    return spec
