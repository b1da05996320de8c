"""glsl/pxvm_tf.comp's variants as kernel declarations: one per (opcode, phase), each binding every buffer of
the interpreter and the uniforms its code reads (a uniform a variant does not read is compiled away)."""

from ...kernel import Kernel, Shared, Storage, Uniform
from ..gpu.kernels import TOP1_SHARED
from ..gpu.loops import KERNEL_LOOPS
from .opcodes import BY_NAME

BUFFERS = ("weights", "table", "program", "act", "keys", "values", "tokens", "rope_table", "partial", "predictions")
SHARED = (
    Shared("tile_sums", "float", "PARTIAL_FLOATS"),
    Shared("sums", "float", "LOCAL_SIZE"),
    Shared("scores", "float", "LOCAL_SIZE"),
    Shared("top", "float", "LOCAL_SIZE"),
    *TOP1_SHARED,
)
ELEMENTWISE = ("pc", "rows", "row0", "row_floats", "groups_x")
VARIANT_UNIFORMS: dict[tuple[str, int], tuple[str, ...]] = {
    ("EMBED", 0): (*ELEMENTWISE, "start"),
    ("ADD_POSITION", 0): (*ELEMENTWISE, "start"),
    ("LAYERNORM", 0): ("pc", "row0", "row_floats"),
    ("RMSNORM", 0): ("pc", "row0", "row_floats"),
    ("MATVEC", 0): ELEMENTWISE,
    ("ADD_VECTOR", 0): ELEMENTWISE,
    ("ROPE", 0): (*ELEMENTWISE, "start"),
    ("ATTEND", 0): (*ELEMENTWISE, "start"),
    ("ATTEND", 1): ("pc", "row0", "start", "row_floats", "first_query", "segment", "segments"),
    ("ATTEND", 2): ("pc", "row0", "row_floats", "first_query", "segments"),
    ("GELU_TANH", 0): ELEMENTWISE,
    ("GELU", 0): ELEMENTWISE,
    ("SILU_GATE", 0): ELEMENTWISE,
    ("ADD", 0): ELEMENTWISE,
    ("PREDICT", 0): ("pc", "row0", "row_floats", "segment", "segments"),
    ("PREDICT", 1): ("pc", "rows", "segments", "token_at"),
}
"""Every (opcode, phase) the interpreter runs → the uniforms its code reads."""


def variant_constant(name: str, phase: int) -> int:
    """The VARIANT a variant is compiled with: 4 · opcode + phase (glsl/pxvm_tf.comp's PHASE_OF)."""
    return 4 * BY_NAME[name].code + phase


VARIANTS = {
    key: Kernel(
        "pxvm_tf",
        (*(Storage(name) for name in BUFFERS), *(Uniform(name) for name in uniforms)),
        SHARED,
        # one instruction a dispatch, split as the passes kernel of its operation: at most the largest count
        loops=lambda constants, local_size: max(count(constants) for count in KERNEL_LOOPS.values()),
    )
    for key, uniforms in VARIANT_UNIFORMS.items()
}
