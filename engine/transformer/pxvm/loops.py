"""glsl/pxvm_tf.comp's work split and loop counts (docs/FORMATS.md §3.1, §7.7): how many loop iterations one
invocation of each opcode's code runs, from the shape bounds the shader is compiled with, and the constants it
is compiled with. Counted here for this shader's own loops (its MATVEC walks a block or column at a time, as
tf_project first did); the attention's and the prediction's segments are the passes executor's plan."""

from collections.abc import Mapping

from ...kernel import Constants
from ..gpu.loops import (
    GROUP,
    argmax_loops,
    argmax_merge_loops,
    attend_combine_loops,
    attend_dims,
    attend_loops,
    ceil_div,
    norm_loops,
    plan_loops,
    reduction_loops,
)
from ..meta import TransformerArchitecture
from ..quant import BLOCK, BLOCK_BYTES, MATRIX_QUANTS

TILE = 8
"""Rows one MATVEC work group computes, each weight dequantized once for them all."""
QUANT_CODES = {quant: code for code, quant in enumerate(MATRIX_QUANTS)}
"""A tensor table entry's quantization code (QUANT_* in the shader)."""


def matvec_loops(in_len: int) -> int:
    """A row's weights walked — u8/f16 a column at a time (its TILE rows an inner loop); q8/q4 a block at a time
    (its partial sums, its words, their 4 or 8 quants, each one's TILE rows) — then the tile's partials reduced."""
    columns = ceil_div(in_len, GROUP) * (1 + TILE)
    blocks = ceil_div(ceil_div(in_len, BLOCK), GROUP) * (2 * TILE + BLOCK // 4 + BLOCK * (1 + TILE))
    return 2 * TILE + max(columns, blocks) + reduction_loops() * (1 + TILE)


def variant_loops(bounds: Mapping[str, int | float]) -> int:
    """The most loop iterations one invocation of any variant runs, compiled with these bounds (one
    instruction a dispatch: its own loops only; the elementwise opcodes have none)."""
    b = {name: int(value) for name, value in bounds.items() if name.startswith("LOOP_")}
    d = b["LOOP_HEAD_DIM"]
    return max(
        matvec_loops(b["LOOP_MATVEC_IN"]),
        norm_loops(b["LOOP_WIDTH"]),
        attend_loops(b["LOOP_ATTEND_SEGMENT"], d),
        attend_combine_loops(b["LOOP_ATTEND_SEGMENTS"], d),
        argmax_loops(b["LOOP_PREDICT_SEGMENT"]),
        argmax_merge_loops(b["LOOP_PREDICT_SEGMENTS"]),
    )


def shader_constants(architecture: TransformerArchitecture, budget: int) -> tuple[Constants, int, int]:
    """What every variant is compiled with, and the keys one ATTEND and the logits one PREDICT work group
    walk (the passes executor's segments, within `budget` loops an invocation: plan_loops refuses a shape
    it cannot split in one line)."""
    a = architecture
    plan = plan_loops(a, budget)
    bounds = {
        "LOOP_WIDTH": a.width,
        "LOOP_MATVEC_IN": max(a.width, a.heads * a.head_dim, a.mlp_width),
        "LOOP_HEAD_DIM": a.head_dim,
        "LOOP_ATTEND_SEGMENT": plan.attend_segment,
        "LOOP_ATTEND_SEGMENTS": ceil_div(a.context_length, plan.attend_segment),
        "LOOP_PREDICT_SEGMENT": plan.argmax_segment,
        "LOOP_PREDICT_SEGMENTS": ceil_div(a.vocab_size, plan.argmax_segment),
    }
    quants = {f"QUANT_{quant.upper()}": code for quant, code in QUANT_CODES.items()}
    blocks = {f"{quant.upper()}_BLOCK_BYTES": size for quant, size in BLOCK_BYTES.items()}
    shape = {"BLOCK": BLOCK, "TILE": TILE, "PARTIAL_FLOATS": TILE * GROUP, "ATTEND_DIMS": attend_dims(a.head_dim)}
    return Constants(quants | blocks | shape | bounds), plan.attend_segment, plan.argmax_segment
