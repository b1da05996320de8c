"""How many loop iterations one invocation of each version-2 kernel takes, from the shape (an upper bound:
every loop counted as it is written, none as unrolled), and the split of the long reductions that keeps every
kernel within what one llvmpipe invocation runs: Mesa stops an invocation's loops after ~65,535 iterations
in all, silently (engine/pxvm/dispatch.py measured it). The attention's keys and the vocabulary's argmax
are split across work groups and merged by a second dispatch; every other kernel is bounded for every shape
docs/FORMATS.md §14.1 allows (tests/test_transformer_passes.py asserts it at the extremes). Kept in one place
so the general mechanism can take them over."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...errors import PxglError
from ...kernel import DISPATCH_LOOPS
from ..meta import TransformerArchitecture
from ..quant import BLOCK

GROUP = 64
"""Invocations of every version-2 work group (OpenGL 4.3 guarantees 1,024)."""
PROJECT_SHAPES = {"cpu": ((4, 1, 1), (4, 4, 1), (4, 8, 1)), "gpu": ((1, 1, 32), (1, 4, 32), (1, 8, 32))}
"""(rows, positions, split) of tf_project: each invocation computes `rows` rows for `positions` positions over
every `split`-th block of a row, `split` invocations summing one row in shared memory; a run of n positions
takes the first whose positions reach n (one: a decode step; a few: slots decoded together), else the last;
on a renderer that runs shaders on the CPU, then on a GPU. llvmpipe
pays per SIMD lane for every storage load, so an invocation shares its weight loads across positions and its
source loads across rows, alone on its rows (measured on 2 AVX2 cores: bench/transformer_passes.py); a GPU
wants many invocations on one row, reading its blocks side by side (llama.cpp's mul_mat_vec's shape), and a
tile's source vectors (4 a position) within its registers. Not yet measured on a GPU."""
PROJECT_SHAPE_NAMES = ("PROJECT_ROWS", "PROJECT_TILE", "PROJECT_SPLIT")
HALF_VECTORS = BLOCK // 2 // 4
"""vec4s of source (and words of weights) of half a q8/q4 block."""
ELEMENTWISE = ("tf_embed", "tf_rope", "tf_kv_store", "tf_activate", "tf_gate", "tf_add")
"""Kernels of one element an invocation: no loop at all."""
DIGITS = 16
"""Bins of one pass of a top-k/top-p cut (glsl/tf_choose_bins.comp): the rank key is decided 4 bits a pass."""
TOP_MAX = 20
"""Alternatives a chosen token reports at most (docs/FORMATS.md §11's K ≤ 20)."""
ID_BITS = 24
"""Bits of a version-2 id (vocabularies up to 2^24)."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def reduction_loops(local: int = GROUP) -> int:
    """A tree reduction over a work group's shared memory."""
    return local.bit_length() - 1


def norm_loops(width: int) -> int:
    """Two means (layernorm) and the output, each over width / GROUP columns, and two reductions."""
    return 3 * ceil_div(width, GROUP) + 2 * reduction_loops()


def project_fixed_loops(rows: int, tile: int, split: int) -> int:
    """tf_project's loops outside the walk: its positions' and rows' indices, accumulators set and written,
    and (split) their tree reduction over shared memory: stored, summed in log2(split) steps, read back."""
    sums = (split.bit_length() + 1) * (1 + rows * tile) if split > 1 else 0
    return tile + rows + 2 * rows * tile + rows + sums


def project_block_loops(rows: int, tile: int) -> int:
    """One q8/q4 block: its rows' scales, then each half's source vectors and each row's 4 words' products."""
    half = 1 + tile * (1 + HALF_VECTORS) + rows * (1 + HALF_VECTORS * (1 + tile))
    return 1 + rows + 2 * half


def project_column_loops(rows: int, tile: int) -> int:
    """One u8/f16 column: its source values, each row's weight and products."""
    return 1 + tile + rows * (1 + tile)


def project_loops(blocks: int, columns: int, rows: int, tile: int, split: int) -> int:
    """One chunk of `rows` rows for `tile` positions, `split` invocations a row: q8/q4 `blocks` blocks, or
    u8/f16 `columns` columns, each invocation every split-th."""
    walk = max(
        ceil_div(blocks, split) * project_block_loops(rows, tile),
        ceil_div(columns, split) * project_column_loops(rows, tile),
    )
    return project_fixed_loops(rows, tile, split) + walk


def project_chunks(rows: int, tile: int, split: int, budget: int) -> tuple[int, int]:
    """The most q8/q4 blocks and u8/f16 columns of a row one tf_project dispatch walks within `budget` (a
    longer row is summed over several dispatches, each adding to the last's). Not the model's: every model
    shares the kernel's compile."""
    room = budget - project_fixed_loops(rows, tile, split)
    blocks, columns = room // project_block_loops(rows, tile), room // project_column_loops(rows, tile)
    return split * max(1, blocks), split * max(1, columns)


def project_constants(rows: int, tile: int, split: int, chunks: tuple[int, int]) -> dict[str, int]:
    """What tf_project is compiled with for one of PROJECT_SHAPES (its chunks from LoopPlan.project)."""
    blocks, columns = chunks
    shape = {"PROJECT_ROWS": rows, "PROJECT_TILE": tile, "PROJECT_SPLIT": split}
    return shape | {"LOOP_PROJECT_BLOCKS": blocks, "LOOP_PROJECT_COLUMNS": columns}


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


def choose_bins_loops(segment: int) -> int:
    """Zeroing its column of bins, its strided walk of the segment, and the bins' tree reduction."""
    return DIGITS + ceil_div(segment, GROUP) + reduction_loops() * (1 + DIGITS)


def choose_cut_loops(segments: int) -> int:
    """Mode 1's bins summed over the segments, digit by digit, and its scan of the digits (the largest mode)."""
    return 2 * DIGITS + segments * (1 + DIGITS)


def choose_pick_loops(segment: int, segments: int) -> int:
    """The masses summed and walked, then one segment's ids."""
    return 2 * segments + segment


def choose_top_loops(segment: int) -> int:
    return TOP_MAX * (ceil_div(segment, GROUP) + reduction_loops())


def choose_top_merge_loops(segments: int) -> int:
    return TOP_MAX * (ceil_div(segments * TOP_MAX, GROUP) + reduction_loops())


CHOOSE_ELEMENTWISE = ("tf_choose_copy", "tf_choose_penalize", "tf_choose_logp")

KERNEL_LOOPS: dict[str, Callable[[Mapping[str, int | float]], int]] = dict.fromkeys(ELEMENTWISE, lambda b: 0) | {
    "tf_norm": lambda b: norm_loops(int(b["LOOP_WIDTH"])),
    "tf_project": lambda b: project_loops(
        *(int(b[name]) for name in ("LOOP_PROJECT_BLOCKS", "LOOP_PROJECT_COLUMNS", *PROJECT_SHAPE_NAMES))
    ),
    "tf_attend": lambda b: attend_loops(int(b["LOOP_ATTEND_SEGMENT"]), int(b["LOOP_HEAD_DIM"])),
    "tf_attend_combine": lambda b: attend_combine_loops(int(b["LOOP_ATTEND_SEGMENTS"]), int(b["LOOP_HEAD_DIM"])),
    "tf_argmax": lambda b: argmax_loops(int(b["LOOP_ARGMAX_SEGMENT"])),
    "tf_argmax_merge": lambda b: argmax_merge_loops(int(b["LOOP_ARGMAX_SEGMENTS"])),
}
"""Each kernel's worst-case loops an invocation, from its shape bounds (LoopPlan.bounds)."""
CHOOSE_LOOPS: dict[str, Callable[[Mapping[str, int | float]], int]] = dict.fromkeys(CHOOSE_ELEMENTWISE, lambda b: 0) | {
    "tf_choose_bins": lambda b: choose_bins_loops(int(b["LOOP_CHOOSE_SEGMENT"])),
    "tf_choose_mass": lambda b: argmax_loops(int(b["LOOP_CHOOSE_SEGMENT"])),
    "tf_choose_cut": lambda b: choose_cut_loops(int(b["LOOP_CHOOSE_SEGMENTS"])),
    "tf_choose_pick": lambda b: choose_pick_loops(int(b["LOOP_CHOOSE_SEGMENT"]), int(b["LOOP_CHOOSE_SEGMENTS"])),
    "tf_choose_top": lambda b: choose_top_loops(int(b["LOOP_CHOOSE_SEGMENT"])),
    "tf_choose_top_merge": lambda b: choose_top_merge_loops(int(b["LOOP_CHOOSE_SEGMENTS"])),
}
"""The choosing kernels' worst-case loops an invocation (ChoosePlan.bounds); the argmaxes they also run are the
forward's (tf_argmax, tf_argmax_merge)."""


@dataclass(frozen=True)
class LoopPlan:
    """How a model's long reductions are split, and every kernel's worst-case loop count an invocation."""

    attend_segment: int
    """Keys one tf_attend work group walks."""
    argmax_segment: int
    """Logits one tf_argmax work group walks."""
    project: dict[tuple[int, int, int], tuple[int, int]]
    """For each (rows, positions, split) of PROJECT_SHAPES, the q8/q4 blocks and u8/f16 columns of a row one
    tf_project dispatch walks."""
    loops: dict[str, int]
    bounds: dict[str, int]
    """The shape numbers each kernel's loops depend on, compiled into it (engine/kernel.py's `loops` reads them
    back from its constants, so the GL layer checks the same counts before it compiles)."""


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
    shapes = {shape for kind in PROJECT_SHAPES.values() for shape in kind}
    project = {shape: project_chunks(*shape, budget) for shape in sorted(shapes)}
    bounds = {
        "LOOP_WIDTH": a.width,
        "LOOP_HEAD_DIM": d,
        "LOOP_ATTEND_SEGMENT": attend_segment,
        "LOOP_ATTEND_SEGMENTS": ceil_div(c, attend_segment),
        "LOOP_ARGMAX_SEGMENT": argmax_segment,
        "LOOP_ARGMAX_SEGMENTS": ceil_div(v, argmax_segment),
    }
    loops = {shader: count(bounds) for shader, count in KERNEL_LOOPS.items() if shader != "tf_project"}
    loops["tf_project"] = max(
        KERNEL_LOOPS["tf_project"](project_constants(*shape, chunks)) for shape, chunks in project.items()
    )
    shape = f"width {a.width}, heads {a.heads} x {d}, MLP width {a.mlp_width}, context {c}, vocabulary {v}"
    for kernel, count in loops.items():
        check_loops(kernel, count, budget, shape)
    return LoopPlan(attend_segment, argmax_segment, project, loops, bounds)


@dataclass(frozen=True)
class ChoosePlan:
    """How the vocabulary is split for choosing a token (glsl/tf_choose_*.comp): `segment` ids a work group."""

    segment: int
    segments: int
    loops: dict[str, int]
    bounds: dict[str, int]


def plan_choose(vocab_size: int, budget: int = DISPATCH_LOOPS) -> ChoosePlan:
    """The segment (a power of two times GROUP) whose worst kernel loops least, checked against `budget`: one
    clear PxglError naming the kernel when none fits."""
    best: ChoosePlan | None = None
    segment = GROUP
    while True:
        segments = ceil_div(vocab_size, segment)
        bounds = {"LOOP_CHOOSE_SEGMENT": segment, "LOOP_CHOOSE_SEGMENTS": segments}
        loops = {shader: count(bounds) for shader, count in CHOOSE_LOOPS.items()}
        if best is None or max(loops.values()) < max(best.loops.values()):
            best = ChoosePlan(segment, segments, loops, bounds)
        if segments == 1:
            break
        segment *= 2
    for kernel, count in best.loops.items():
        check_loops(kernel, count, budget, f"choosing among {vocab_size} ids")
    return best
