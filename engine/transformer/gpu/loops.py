"""How many loop iterations one invocation of each version-2 kernel takes, from the shape (an upper bound:
every loop counted as it is written, none as unrolled), and the split of the long reductions that keeps every
kernel within what one llvmpipe invocation runs: Mesa stops an invocation's loops after ~65,535 iterations
in all, silently (engine/pxvm/dispatch.py measured it). The attention's keys and the vocabulary's argmax
are split across work groups and merged by a second dispatch; every other kernel is bounded for every shape
docs/FORMATS.md §14.1 allows (tests/test_transformer_passes.py asserts it at the extremes). Kept in one place
so the general mechanism can take them over."""

from dataclasses import dataclass

from ...errors import PxglError
from ...pxvm.dispatch import DISPATCH_LOOPS
from ..meta import TransformerArchitecture
from ..quant import BLOCK

GROUP = 64
"""Invocations of every version-2 work group (OpenGL 4.3 guarantees 1,024)."""
TILE = 8
"""Positions one project work group computes, each weight dequantized once for them all."""
ELEMENTWISE = ("tf_embed", "tf_rope", "tf_kv_store", "tf_activate", "tf_gate", "tf_add")
"""Kernels of one element an invocation: no loop at all."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def reduction_loops(local: int = GROUP) -> int:
    """A tree reduction over a work group's shared memory."""
    return local.bit_length() - 1


def norm_loops(width: int) -> int:
    """Two means (layernorm) and the output, each over width / GROUP columns, and two reductions."""
    return 3 * ceil_div(width, GROUP) + 2 * reduction_loops()


def project_loops(in_dim: int) -> int:
    """The weights' walk — u8/f16 a column at a time (its TILE positions an inner loop); q8/q4 a block at a
    time (its partial sums, its words, their 4 or 8 quants, each one's TILE positions) — then the tile's
    partials and their reduction."""
    columns = ceil_div(in_dim, GROUP) * (1 + TILE)
    blocks = ceil_div(ceil_div(in_dim, BLOCK), GROUP) * (2 * TILE + BLOCK // 4 + BLOCK * (1 + TILE))
    return 2 * TILE + max(columns, blocks) + reduction_loops() * (1 + TILE)


def attend_dims(head_dim: int) -> int:
    """Output dimensions each invocation of tf_attend owns."""
    return ceil_div(head_dim, GROUP)


def attend_chunk_loops(head_dim: int) -> int:
    """One chunk of GROUP keys: a score's dot product, the max's reduction, every key folded into the
    invocation's dimensions, and their rescaling."""
    dims = attend_dims(head_dim)
    return head_dim + reduction_loops() + GROUP * (1 + dims) + dims


def attend_loops(segment: int, head_dim: int) -> int:
    dims = attend_dims(head_dim)
    return 2 * dims + ceil_div(segment, GROUP) * attend_chunk_loops(head_dim)


def attend_combine_loops(segments: int, head_dim: int) -> int:
    return 2 * segments + ceil_div(head_dim, GROUP) * (1 + segments)


def argmax_loops(segment: int) -> int:
    return ceil_div(segment, GROUP) + reduction_loops()


def argmax_merge_loops(segments: int) -> int:
    return ceil_div(segments, GROUP) + reduction_loops()


@dataclass(frozen=True)
class LoopPlan:
    """How a model's long reductions are split, and every kernel's worst-case loop count an invocation."""

    attend_segment: int
    """Keys one tf_attend work group walks."""
    argmax_segment: int
    """Logits one tf_argmax work group walks."""
    loops: dict[str, int]


def check_loops(kernel: str, loops: int, budget: int, shape: str) -> None:
    if loops > budget:
        raise PxglError(
            f"glsl/{kernel}.comp: {loops:,} loop iterations an invocation for {shape}, past the {budget:,} one "
            "dispatch may run (llvmpipe stops at 65,535); this model's shape is not supported by the passes executor"
        )


def plan_loops(architecture: TransformerArchitecture, budget: int = DISPATCH_LOOPS) -> LoopPlan:
    """The splits for this architecture within `budget` iterations an invocation, each kernel's count checked:
    one clear PxglError naming the kernel and shape when one cannot be made to fit."""
    a = architecture
    d, c, v = a.head_dim, a.context_length, a.vocab_size
    chunks = (budget - 2 * attend_dims(d)) // attend_chunk_loops(d)
    attend_segment = GROUP * max(1, min(chunks, ceil_div(c, GROUP)))
    argmax_segment = GROUP * max(1, min(budget - reduction_loops(), ceil_div(v, GROUP)))
    widest_input = max(a.width, a.heads * d, a.mlp_width)
    loops = dict.fromkeys(ELEMENTWISE, 0) | {
        "tf_norm": norm_loops(a.width),
        "tf_project": project_loops(widest_input),
        "tf_attend": attend_loops(attend_segment, d),
        "tf_attend_combine": attend_combine_loops(ceil_div(c, attend_segment), d),
        "tf_argmax": argmax_loops(argmax_segment),
        "tf_argmax_merge": argmax_merge_loops(ceil_div(v, argmax_segment)),
    }
    shape = f"width {a.width}, heads {a.heads} x {d}, MLP width {a.mlp_width}, context {c}, vocabulary {v}"
    for kernel, count in loops.items():
        check_loops(kernel, count, budget, shape)
    return LoopPlan(attend_segment, argmax_segment, loops)
