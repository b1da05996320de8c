"""The version-2 kernels of the passes executor (glsl/tf_*.comp) as declarations, and the constants they are
compiled with: one compile per model shape, the tensors and positions of each run given as uniforms."""

from collections.abc import Mapping

from ...kernel import Constants, Kernel, Resource, Shared, Storage, Uniform
from ..quant import BLOCK, BLOCK_BYTES, MATRIX_QUANTS
from .loops import GROUP, KERNEL_LOOPS, attend_dims, project_constants

QUANT_CODES = {quant: code for code, quant in enumerate(MATRIX_QUANTS)}
"""The `m_quant` uniform of glsl/tf_weights.glsl."""
MATRIX = (Storage("matrix"), *(Uniform(name) for name in ("m_quant", "m_scale", "m_zero")))
"""What a kernel including tf_weights.glsl binds: one tensor's bytes and how to read them."""
TOP1_SHARED = (Shared("top_value", "float", "LOCAL_SIZE"), Shared("top_sum", "float", "LOCAL_SIZE"))
TOP1_SHARED += (Shared("top_index", "int", "LOCAL_SIZE"),)


def uniforms(*names: str) -> tuple[Uniform, ...]:
    return tuple(Uniform(name) for name in names)


def tf_kernel(shader: str, resources: tuple[Resource, ...], shared: tuple[Shared, ...] = ()) -> Kernel:
    """glsl/<shader>.comp declared with its loops (engine/kernel.py): its count in loops.py over the shape
    bounds it is compiled with (kernel_constants), every work group GROUP invocations."""
    count = KERNEL_LOOPS[shader]
    return Kernel(shader, resources, shared, loops=lambda constants, local_size: count(constants))


EMBED = tf_kernel(
    "tf_embed",
    (
        *MATRIX,
        Storage("tokens"),
        Storage("rows"),
        Storage("target"),
        *uniforms("width", "positions", "context", "by_position", "table_row0", "table_rows", "groups_x"),
    ),
)
NORM = tf_kernel(
    "tf_norm",
    (
        Storage("source"),
        Storage("target"),
        Storage("weight"),
        Storage("bias"),
        *uniforms("width", "layernorm", "eps"),
    ),
    shared=(Shared("sums", "float", "LOCAL_SIZE"),),
)
PROJECT = tf_kernel(
    "tf_project",
    (
        *MATRIX,
        Storage("source"),
        Storage("target"),
        Storage("bias"),
        *uniforms("in_dim", "out_dim", "rows", "row0", "positions", "source_row0", "column0", "columns"),
        *uniforms("has_bias", "groups_x"),
    ),
    shared=(Shared("partial", "float", "PROJECT_PARTIAL"),),
)
ROPE = tf_kernel(
    "tf_rope",
    (
        Storage("target"),
        Storage("table"),
        Storage("rows"),
        *uniforms("heads", "head_dim", "positions", "pairs", "groups_x"),
    ),
)
KV_STORE = tf_kernel(
    "tf_kv_store",
    (
        Storage("k"),
        Storage("v"),
        Storage("keys"),
        Storage("values"),
        Storage("rows"),
        *uniforms("kv_width", "row_words", "positions", "context", "groups_x"),
    ),
)
ATTEND = tf_kernel(
    "tf_attend",
    (
        Storage("q"),
        Storage("keys"),
        Storage("values"),
        Storage("partial"),
        Storage("rows"),
        *uniforms(
            "heads", "group_size", "head_dim", "row_words", "context", "first_query", "segment", "segments", "scale"
        ),
    ),
    shared=(Shared("scores", "float", "LOCAL_SIZE"), Shared("top", "float", "LOCAL_SIZE")),
)
ATTEND_COMBINE = tf_kernel(
    "tf_attend_combine",
    (Storage("partial"), Storage("target"), *uniforms("heads", "head_dim", "segments", "first_query")),
)
ACTIVATE = tf_kernel("tf_activate", (Storage("source"), Storage("target"), *uniforms("count", "exact", "groups_x")))
GATE = tf_kernel("tf_gate", (Storage("gate"), Storage("up"), Storage("target"), *uniforms("count", "groups_x")))
ADD = tf_kernel("tf_add", (Storage("target"), Storage("source"), *uniforms("count", "groups_x")))
ARGMAX = tf_kernel(
    "tf_argmax",
    (Storage("logits"), Storage("partial"), *uniforms("vocab", "segment", "segments", "row0")),
    shared=TOP1_SHARED,
)
ARGMAX_MERGE = tf_kernel(
    "tf_argmax_merge",
    (Storage("partial"), Storage("predictions"), *uniforms("segments", "out0")),
    shared=TOP1_SHARED,
)
KERNELS = (EMBED, NORM, PROJECT, ROPE, KV_STORE, ATTEND, ATTEND_COMBINE, ACTIVATE, GATE, ADD, ARGMAX, ARGMAX_MERGE)


def kernel_constants(head_dim: int, bounds: Mapping[str, int] | None = None) -> Constants:
    """What every tf_ kernel is compiled with: the quantizations' codes and block sizes, and the
    model's shape bounds its loops depend on (LoopPlan.bounds; kernels without loops need none)."""
    quants = {f"QUANT_{quant.upper()}": code for quant, code in QUANT_CODES.items()}
    blocks = {f"{quant.upper()}_BLOCK_BYTES": size for quant, size in BLOCK_BYTES.items()}
    shape = {"BLOCK": BLOCK, "ATTEND_DIMS": attend_dims(head_dim)}
    return Constants(quants | blocks | shape | dict(bounds or {}))


def project_kernel_constants(rows: int, tile: int, split: int, chunks: tuple[int, int]) -> Constants:
    """tf_project's, for one of loops.PROJECT_SHAPES and its chunks (LoopPlan.project): nothing of the model's,
    so every model of a process shares its compile. Its shared partial sums: a work group's accumulators
    where `split` invocations sum a row, else none (one float: GLSL has no empty array)."""
    quants = {f"QUANT_{quant.upper()}": code for quant, code in QUANT_CODES.items()}
    blocks = {f"{quant.upper()}_BLOCK_BYTES": size for quant, size in BLOCK_BYTES.items()}
    partial = {"BLOCK": BLOCK, "PROJECT_PARTIAL": GROUP * rows * tile if split > 1 else 1}
    return Constants(quants | blocks | partial | project_constants(rows, tile, split, chunks))
