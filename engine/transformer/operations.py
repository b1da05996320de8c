"""The one list of operations of a version-2 model (docs/FORMATS.md §14.4), built from its architecture.

Every executor walks this list — the numpy mirror of the oracle here, the GPU executors, the pxVM compiler
and the visuals later — so adding an operation is its declaration in OPERATION_KINDS, then one kernel per
executor and its numpy reference. An operation reads named activations (per position: `x` the residual
stream, `q`, `k`, `v`, …), the tensors it names, and writes one activation."""

from dataclasses import dataclass

from .meta import TransformerArchitecture

OPERATION_KINDS: dict[str, str] = {
    "embed": "x = embed[t] (+ pos[p] for learned positions)",
    "norm": "layernorm or rmsnorm of the input over its width, then ⊙ weight (+ bias)",
    "project": "W · input (+ bias), W stored [out, in] and dequantized from its q8/q4/u8/f16 bytes",
    "rope": "rotate each head of the input by its position: halves or pairs, scaled θ",
    "attend": "store k, v (float16) in the layer's cache; per head, causal softmax(q · K * scale) · V",
    "activate": "gelu_tanh or gelu, elementwise",
    "gate": "silu(gate) ⊙ up",
    "add": "the residual stream plus the input",
    "logits": "head · h (+ head.bias); head = embed when tied",
}
"""Kind → what it computes."""


@dataclass(frozen=True)
class Operation:
    kind: str
    output: str
    """The activation written (the same name as an input: in place)."""
    inputs: tuple[str, ...]
    tensors: tuple[str, ...] = ()
    """Weights read, in the kernel's order (weight before bias)."""
    layer: int | None = None
    """The block: which KV cache `attend` uses, and which block a visual draws it in."""


def activation_widths(architecture: TransformerArchitecture) -> dict[str, int]:
    """Elements per position of every activation the list names."""
    a = architecture
    e, f = a.width, a.mlp_width
    widths = {"x": e, "a": e, "q": a.heads * a.head_dim, "k": a.kv_heads * a.head_dim, "v": a.kv_heads * a.head_dim}
    widths |= {"o": a.heads * a.head_dim, "y": e, "m": e, "up": f, "gate": f, "inner": f, "h": e}
    return widths | {"logits": a.vocab_size}


def _present(names: tuple[str, ...], shapes: dict[str, tuple[int, ...]]) -> tuple[str, ...]:
    return tuple(name for name in names if name in shapes)


def operations(architecture: TransformerArchitecture) -> tuple[Operation, ...]:
    """The forward pass of §14.4 as operations, in order."""
    shapes = architecture.shapes()
    listed: list[Operation] = [Operation("embed", "x", ("tokens",), _present(("embed", "pos"), shapes))]

    def norm(output: str, name: str, layer: int | None) -> None:
        tensors = _present((f"{name}.weight", f"{name}.bias"), shapes)
        listed.append(Operation("norm", output, ("x",), tensors, layer))

    def project(output: str, source: str, name: str, layer: int) -> None:
        tensors = _present((f"{name}.weight", f"{name}.bias"), shapes)
        listed.append(Operation("project", output, (source,), tensors, layer))

    for layer in range(architecture.layers):
        b = f"block{layer}"
        norm("a", f"{b}.attn_norm", layer)
        for part in ("q", "k", "v"):
            project(part, "a", f"{b}.attn.{part}", layer)
        if architecture.rope is not None:
            listed += [Operation("rope", part, (part,), (), layer) for part in ("q", "k")]
        listed.append(Operation("attend", "o", ("q", "k", "v"), (), layer))
        project("y", "o", f"{b}.attn.out", layer)
        listed.append(Operation("add", "x", ("x", "y"), (), layer))
        norm("m", f"{b}.mlp_norm", layer)
        if architecture.mlp_kind == "silu_gated":
            project("gate", "m", f"{b}.mlp.gate", layer)
            project("up", "m", f"{b}.mlp.up", layer)
            listed.append(Operation("gate", "inner", ("gate", "up"), (), layer))
        else:
            project("up", "m", f"{b}.mlp.up", layer)
            listed.append(Operation("activate", "inner", ("up",), (), layer))
        project("y", "inner", f"{b}.mlp.down", layer)
        listed.append(Operation("add", "x", ("x", "y"), (), layer))
    norm("h", "final_norm", None)
    head = "embed" if architecture.tied_head else "head.weight"
    listed.append(Operation("logits", "logits", ("h",), _present((head, "head.bias"), shapes)))
    return tuple(listed)
