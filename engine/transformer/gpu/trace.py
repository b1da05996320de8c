"""A trace of one version-2 forward on the GPU, for the pictures of `pxgl viz` (docs/FORMATS.md §14.8): the passes
executor runs the prompt from position 0 with a hook after each operation that reads back the residual stream
after the embeddings and after every block, and computes each layer's attention weights — which tf_attend
never writes — from the layer's q and float16 key cache with glsl/tf_trace_attention.comp; then every
position's logits and the GPU's predictions. Bounded: a trace holds at most trace_capacity() positions."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import PxglError
from ...kernel import Constants, Kernel, Shared, Storage, Uniform, ceil_div, log2
from ..meta import TransformerArchitecture
from ..operations import Operation
from .base import Step
from .executor import PassesTransformer
from .loops import GROUP

MAX_TRACE_POSITIONS = 256
"""Positions a trace holds at most: a head's picture is at most 256 x 256 pixels."""
MAX_TRACE_WEIGHTS = 1 << 24
"""Attention weights a trace holds at most (layers · heads · n², float32: 64 MiB)."""
MAX_TRACE_VALUES = 1 << 25
"""Logits (n · V) and residual values ((layers + 1) · n · width) a trace holds at most, each (128 MiB)."""


def trace_attention_loops(keys: int, head_dim: int, local_size: int) -> int:
    """One invocation: its share of the keys three times (scores with their dot products, exps, quotients)
    and two tree reductions."""
    share = ceil_div(keys, local_size)
    return share * (head_dim + 2) + 2 * log2(local_size)


TRACE_ATTENTION = Kernel(
    "tf_trace_attention",
    (
        Storage("q"),
        Storage("keys"),
        Storage("weights"),
        *(Uniform(name) for name in ("heads", "group_size", "head_dim", "row_words", "slot_row", "rows")),
        Uniform("scale"),
    ),
    (Shared("reduce", "float", "LOCAL_SIZE"),),
    loops=lambda constants, local_size: trace_attention_loops(
        constants.int("LOOP_TRACE_KEYS"), constants.int("LOOP_TRACE_HEAD_DIM"), local_size
    ),
)


def trace_capacity(architecture: TransformerArchitecture) -> int:
    """The most positions one trace of this model holds: MAX_TRACE_POSITIONS, fewer where the attention
    weights, the logits or the residual stream would pass their caps, and never past the context."""
    a = architecture
    by_weights = math.isqrt(MAX_TRACE_WEIGHTS // (a.layers * a.heads))
    by_values = MAX_TRACE_VALUES // max(a.vocab_size, (a.layers + 1) * a.width)
    return max(1, min(MAX_TRACE_POSITIONS, a.context_length, by_weights, by_values))


def check_trace_length(architecture: TransformerArchitecture, n: int) -> None:
    most = trace_capacity(architecture)
    if not 1 <= n <= most:
        raise PxglError(
            f"{n} tokens to trace: a picture of this model holds 1 to {most} (docs/FORMATS.md §14.8); "
            "give a shorter prompt"
        )


@dataclass(frozen=True)
class TransformerTrace:
    """What the GPU computed for one sequence of n tokens at positions 0..n-1, read back."""

    tokens: np.ndarray
    """(n,) the ids run."""
    residual: np.ndarray
    """(layers + 1, n, width) float32: x after the embeddings (stage 0) and after block l (stage l + 1)."""
    attention: np.ndarray
    """(layers, heads, n, n) float32: p[l, h, i, j], 0 for j > i."""
    logits: np.ndarray
    """(n, V) float32: every position's logits."""
    ids: np.ndarray
    """(n,) the GPU's argmax of each position's logits (lowest id on ties)."""
    sums: np.ndarray
    """(n,) Σ exp(logit - top) of each position: 1 / the confidence."""


class Tracer:
    """The hook: reads what a picture needs after the operations that make it."""

    def __init__(self, model: PassesTransformer, n: int, slot: int) -> None:
        self.model, self.n, self.slot = model, n, slot
        a = model.architecture
        last_of_layer = {op.layer: index for index, op in enumerate(model.operations) if op.layer is not None}
        self.block_ends = {id(model.operations[index]): layer for layer, index in last_of_layer.items()}
        self.residual = np.zeros((a.layers + 1, n, a.width), np.float32)
        self.attention = np.zeros((a.layers, a.heads, n, n), np.float32)
        constants = Constants({"LOOP_TRACE_KEYS": trace_capacity(a), "LOOP_TRACE_HEAD_DIM": a.head_dim})
        self.program = model.gpu.program(TRACE_ATTENTION, constants, GROUP)
        self.weights = model.gpu.storage_buffer(4 * a.heads * n * n, "trace attention weights")

    def __call__(self, op: Operation, step: Step) -> None:
        if op.kind == "embed":
            self.residual[0] = self.read(step, "x")
        elif op.kind == "attend":
            self.attend(op, step)
        if id(op) in self.block_ends:
            self.residual[self.block_ends[id(op)] + 1] = self.read(step, "x")

    def read(self, step: Step, name: str) -> np.ndarray:
        width = self.model.widths[name]
        data = self.model.gpu.read_storage(step.buffers[name], 4 * self.n * width)
        return np.frombuffer(data, np.float32).reshape(self.n, width)

    def attend(self, op: Operation, step: Step) -> None:
        model, a, n = self.model, self.model.architecture, self.n
        model.gpu.run(
            self.program,
            (n, a.heads, 1),
            q=step.buffers[op.inputs[0]],
            keys=model.keys[op.layer],
            weights=self.weights,
            heads=a.heads,
            group_size=a.heads // a.kv_heads,
            head_dim=a.head_dim,
            row_words=model.row_words,
            slot_row=self.slot * model.context,
            rows=n,
            scale=a.attention_scale,
        )
        model.gpu.barrier()
        data = model.gpu.read_storage(self.weights, 4 * a.heads * n * n)
        self.attention[op.layer] = np.frombuffer(data, np.float32).reshape(a.heads, n, n)

    def close(self) -> None:
        self.model.gpu.release_storage(self.weights)


def trace_tokens(model: PassesTransformer, tokens: Sequence[int], slot: int = 0) -> TransformerTrace:
    """Run `tokens` in `slot` from position 0 and read back the trace; the slot is emptied before and after
    (truncated to 0: a caller traces in a slot no sequence holds). More tokens than trace_capacity() is one
    clear PxglError."""
    ids = np.asarray(tokens, dtype=np.int64)
    check_trace_length(model.architecture, len(ids))
    model.truncate(slot, 0)
    tracer = Tracer(model, len(ids), slot)
    model.after_operation = tracer
    try:
        run = model.prefill(slot, ids, all_logits=True)
    finally:
        model.after_operation = None
        model.truncate(slot, 0)
        tracer.close()
    return TransformerTrace(ids, tracer.residual, tracer.attention, run.logits, run.ids, run.sums)
