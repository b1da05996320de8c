"""glsl/pxvm_tf.comp as a kernel declaration: every buffer and uniform of the interpreter, compiled once per
(opcode, phase) a program uses with that variant's VARIANT constant."""

from ...kernel import Kernel, Shared, Storage, Uniform
from .loops import variant_loops
from .opcodes import BY_NAME

BUFFERS = ("weights", "table", "program", "act", "keys", "values", "tokens", "rope_table", "partial", "predictions")
SHARED = (
    Shared("tile_sums", "float", "PARTIAL_FLOATS"),
    Shared("sums", "float", "LOCAL_SIZE"),
    Shared("scores", "float", "LOCAL_SIZE"),
    Shared("top", "float", "LOCAL_SIZE"),
    Shared("top_value", "float", "LOCAL_SIZE"),
    Shared("top_sum", "float", "LOCAL_SIZE"),
    Shared("top_index", "int", "LOCAL_SIZE"),
)
UNIFORMS = ("pc", "row0", "rows", "start", "row_floats", "groups_x", "first_query", "segment", "segments", "token_at")
PXVM_TF = Kernel(
    "pxvm_tf",
    (*(Storage(name) for name in BUFFERS), *(Uniform(name) for name in UNIFORMS)),
    SHARED,
    loops=lambda constants, local_size: variant_loops(constants),
)
"""Every variant's declaration: glsl/pxvm_tf.comp compiled with VARIANT (variant_constant) among its constants."""


def variant_constant(name: str, phase: int) -> int:
    """The VARIANT one (opcode, phase) is compiled with: 4 · opcode + phase (glsl/pxvm_tf.comp's PHASE_OF)."""
    return 4 * BY_NAME[name].code + phase
