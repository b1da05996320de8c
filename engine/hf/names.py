"""Hugging Face tensor names ↔ pxgl's (docs/FORMATS.md §10.2, §14.2): which tensors of a folder a version-2
architecture reads, each one's shape, and how pxgl's tensors are made from them (GPT-2's Conv1D weights
transposed, its fused c_attn split into q, k, v) and back."""

from collections.abc import Callable

import numpy as np

from ..transformer.meta import TransformerArchitecture
from .config import GPT2

DROPPED = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
"""Buffers older checkpoints saved beside the weights (GPT-2's causal masks, Llama's RoPE frequencies): the
spec computes them, so they are read past."""

LLAMA_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q.": "self_attn.q_proj.",
    "attn.k.": "self_attn.k_proj.",
    "attn.v.": "self_attn.v_proj.",
    "attn.out.": "self_attn.o_proj.",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.": "mlp.gate_proj.",
    "mlp.up.": "mlp.up_proj.",
    "mlp.down.": "mlp.down_proj.",
}
GPT2_NAMES = {
    "attn_norm.": "ln_1.",
    "attn.out.": "attn.c_proj.",
    "mlp_norm.": "ln_2.",
    "mlp.up.": "mlp.c_fc.",
    "mlp.down.": "mlp.c_proj.",
}
GPT2_TRANSPOSED = ("attn.out.weight", "mlp.up.weight", "mlp.down.weight")
"""Conv1D stores [in, out]: transposed into §14.2's [out, in]."""


def _block_name(name: str, table: dict[str, str], prefix: str) -> str:
    block, _, rest = name.partition(".")
    for ours, theirs in table.items():
        if rest.startswith(ours):
            return f"{prefix}{block.removeprefix('block')}.{theirs}{rest.removeprefix(ours)}"
    raise KeyError(name)


def _gpt2_fused(name: str) -> tuple[str, int] | None:
    """(c_attn's name, which third: q 0, k 1, v 2) of a q/k/v tensor; None for any other."""
    block, _, rest = name.partition(".")
    for third, part in enumerate(("q", "k", "v")):
        if rest.startswith(f"attn.{part}."):
            return f"h.{block.removeprefix('block')}.attn.c_attn.{rest.rsplit('.', 1)[1]}", third
    return None


def hf_name(family: str, name: str, prefix: str) -> str:
    """The folder's tensor a pxgl tensor comes from (GPT-2's q/k/v: the fused c_attn). `prefix` is GPT-2's
    `transformer.` when the folder's names carry it."""
    if family == GPT2:
        fused = _gpt2_fused(name)
        fixed = {"embed": "wte.weight", "pos": "wpe.weight", "head.weight": "lm_head.weight"}
        if name == "head.weight":
            return fixed[name]
        if name in fixed:
            return prefix + fixed[name]
        if name.startswith("final_norm."):
            return prefix + "ln_f." + name.rsplit(".", 1)[1]
        if fused is not None:
            return prefix + fused[0]
        return _block_name(name, GPT2_NAMES, prefix + "h.")
    fixed = {
        "embed": "model.embed_tokens.weight",
        "final_norm.weight": "model.norm.weight",
        "head.weight": "lm_head.weight",
    }
    return fixed[name] if name in fixed else _block_name(name, LLAMA_NAMES, "model.layers.")


def hf_shapes(family: str, architecture: TransformerArchitecture, prefix: str) -> dict[str, tuple[int, ...]]:
    """Every tensor the folder must hold for this architecture, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in architecture.shapes().items():
        theirs = hf_name(family, name, prefix)
        if family == GPT2 and _gpt2_fused(name) is not None:
            width = architecture.width
            shapes[theirs] = (width, 3 * width) if name.endswith("weight") else (3 * width,)
        elif family == GPT2 and name.endswith(GPT2_TRANSPOSED):
            shapes[theirs] = shape[::-1]
        else:
            shapes[theirs] = shape
    return shapes


def pxgl_tensor(family: str, name: str, prefix: str, read: Callable[[str], np.ndarray]) -> np.ndarray:
    """pxgl's tensor `name`, made from the folder's tensors that `read` gives (each as float32)."""
    theirs = read(hf_name(family, name, prefix))
    if family != GPT2:
        return theirs
    fused = _gpt2_fused(name)
    if fused is not None:
        third = fused[1]
        if theirs.ndim == 2:
            width = theirs.shape[0]
            return np.ascontiguousarray(theirs[:, third * width : (third + 1) * width].T)
        width = theirs.shape[0] // 3
        return theirs[third * width : (third + 1) * width]
    return np.ascontiguousarray(theirs.T) if name.endswith(GPT2_TRANSPOSED) else theirs


def hf_tensors(family: str, architecture: TransformerArchitecture, tensor: Callable[[str], np.ndarray]):
    """(the folder's name, its float32 array) of every tensor an export writes, pxgl's `tensor(name)` laid out
    as the family stores it (GPT-2's names with `transformer.`, q/k/v fused, Conv1D [in, out]), one at a time."""
    prefix = "transformer." if family == GPT2 else ""
    fused_done: set[str] = set()
    for name in architecture.shapes():
        theirs = hf_name(family, name, prefix)
        if family == GPT2 and _gpt2_fused(name) is not None:
            if theirs in fused_done:
                continue
            fused_done.add(theirs)
            block, part = name.split(".")[0], name.rsplit(".", 1)[1]
            pieces = [tensor(f"{block}.attn.{p}.{part}") for p in ("q", "k", "v")]
            yield theirs, np.concatenate(pieces, axis=0).T.copy() if part == "weight" else np.concatenate(pieces)
        elif family == GPT2 and name.endswith(GPT2_TRANSPOSED):
            yield theirs, np.ascontiguousarray(tensor(name).T)
        else:
            yield theirs, tensor(name)
