"""The fused kernels' loops: how many iterations one invocation runs (docs/FORMATS.md §3.1), from the
constants a kernel is compiled with and its local size. Every loop whose trip count is a model dimension or
a uniform is counted, with its exit test; a loop whose trip count is a constant of the work shape (TM, TN / 4,
the four lanes of a vec4, a STAGE_K step written out) is unrolled by the compiler and is not (measured on
llvmpipe: tests/test_loop_limits.py). The fused envelope is the members whose kernels all stay within
DISPATCH_LOOPS; generation runs as many steps a dispatch as stay within it."""

from itertools import pairwise

from ..kernel import DISPATCH_LOOPS, Constants, LoopCount, ceil_div

MAX_ROW_TOKENS = 256
"""Longest row of ids the fused kernels read whole (a longer one is cut to its window on the host)."""


def strided(n: int, threads: int) -> int:
    """Iterations of `for (i = t; i < n; i += threads)`, its exit test included."""
    return ceil_div(n, threads) + 1


def _int(c: Constants, name: str) -> int:
    return int(c[name])


def row_loops(c: Constants) -> int:
    """A staged prompt's scan: its length (pixels) and its ids' validity, a row of at most this many tokens."""
    return 2 * (max(_int(c, "CONTEXT_WINDOW"), MAX_ROW_TOKENS) + 1)


def hidden_loops(c: Constants, threads: int, prompts: int) -> int:
    """The hidden layers of `prompts` prompts over `threads` threads: the window's tokens staged STAGE_W at a
    time and their table rows summed, the attention head, the first activation and the dense layers."""
    window, stage, h0, head = (_int(c, n) for n in ("CONTEXT_WINDOW", "STAGE_W", "HIDDEN0", "HEAD_DIM"))
    loops = strided(prompts, threads) * row_loops(c) + strided(prompts * h0, threads)
    own_row = c.int("GENERATE") and prompts == 1  # one thread stages a generated row (fused_common.glsl)
    staging = prompts * stage + 1 if own_row else strided(prompts * stage, threads)
    loops += (ceil_div(window, stage) + 1) * (staging + strided(prompts * h0, threads) * (stage + 1))
    if _int(c, "CONTEXT_MODE") == _int(c, "MODE_ATTENTION"):
        loops += strided(prompts * head, threads) * 2 + strided(prompts * window * head, threads)
        loops += strided(prompts * window, threads) * (head + 1) + strided(prompts * head, threads) * (2 * window + 2)
        loops += strided(prompts * h0, threads) * (head + 1)
    loops += strided(prompts * h0, threads)
    widths = c["LAYER_WIDTHS"]
    assert isinstance(widths, tuple)
    for width_in, width in pairwise(widths):
        loops += strided(prompts * width, threads) * (width_in + 1) + strided(prompts * width, threads) + 1
    return loops


def steps(c: Constants, per_step: int, once: int) -> int:
    """A generating kernel runs its forward pass DISPATCH_STEPS times a dispatch, after `once`."""
    return once + c.int("DISPATCH_STEPS") * (per_step + 1) if c.int("GENERATE") else per_step


def small_loops(c: Constants, threads: int) -> int:
    """glsl/fused_small.comp: one prompt's hidden layers, then its vocabulary slice in rounds of columns, each
    thread summing PART_ROWS hidden rows (and its column's partial sums), and the merges."""
    slice4 = _int(c, "VOCAB_PAD") // 4 // _int(c, "SPLIT")
    column_threads = _int(c, "COLUMN_THREADS")
    hidden_split = threads // column_threads
    rounds = ceil_div(slice4, column_threads) + 1
    logits = rounds * (ceil_div(_int(c, "LAST_HIDDEN"), hidden_split) + hidden_split + 2)
    merges = 2 * (column_threads.bit_length() + 1) + _int(c, "SPLIT") + 1
    return steps(c, hidden_loops(c, threads, 1) + logits + merges, _int(c, "CONTEXT_WINDOW") + 1)


def tiles_loops(c: Constants, threads: int) -> int:
    """glsl/fused_tiles.comp: a tile's hidden layers, then (unless HIDDEN_OUT) its vocabulary sweep, TILE_N
    columns a step and STAGE_K hidden rows a stage, and the merge of a prompt's ROW_THREADS states."""
    tile_m = _int(c, "TILE_M")
    if c.int("DIRECT_HIDDEN"):
        rows, stage = _int(c, "HIDDEN_ROWS"), _int(c, "STAGE_W")
        hidden = strided(tile_m, threads) * row_loops(c) + strided(tile_m * stage, threads)
        return hidden + strided(tile_m // rows * _int(c, "K_PAD"), threads) * (2 * rows * (stage + 1)) + tile_m
    loops = hidden_loops(c, threads, tile_m)
    if c.int("HIDDEN_OUT"):
        return loops + strided(tile_m * _int(c, "K_PAD"), threads) + strided(tile_m, threads)
    sweep = (ceil_div(_int(c, "VOCAB_PAD"), _int(c, "TILE_N")) + 1) * (
        ceil_div(_int(c, "LAST_HIDDEN"), _int(c, "STAGE_K")) + 2
    )
    merge = strided(tile_m, threads) * (_int(c, "TILE_N") // _int(c, "TN") + 1)
    return steps(c, loops + sweep + merge, 0)


def logits_loops(c: Constants, threads: int) -> int:
    """glsl/fused_logits.comp: the whole vocabulary (one slice, the most), GEMM_N columns a step and GEMM_K
    hidden rows a stage, then the merge of a prompt's states; MERGE: a prompt's slices (one a column step)."""
    column_steps = ceil_div(_int(c, "VOCAB_PAD"), _int(c, "GEMM_N")) + 1
    if c.int("MERGE"):
        return column_steps
    stages = ceil_div(_int(c, "K_PAD"), _int(c, "GEMM_K")) + 1
    return column_steps * stages + strided(_int(c, "GEMM_M"), threads) * (_int(c, "GEMM_N") // _int(c, "GEMM_TN") + 1)


def tables_loops(c: Constants, threads: int) -> int:
    """glsl/fused_tables.comp: one product's sum over an embedding row (k = EMBED_DIM)."""
    return _int(c, "EMBED_DIM") + 1


def dispatch_steps(loops: LoopCount, c: Constants, threads: int, most: int) -> int:
    """The most generation steps (up to `most`) one dispatch of a kernel compiled with `c` runs within
    DISPATCH_LOOPS (0 when not even one)."""
    once = loops(c | {"DISPATCH_STEPS": 0}, threads)
    per_step = loops(c | {"DISPATCH_STEPS": 1}, threads) - once
    return max(0, min(most, (DISPATCH_LOOPS - once) // per_step))
