"""glsl/pxvm_tf.comp as a kernel declaration: every buffer and uniform of the interpreter, compiled once per
(opcode, phase) a program uses with that variant's VARIANT constant."""

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
UNIFORMS = ("pc", "row0", "rows", "start", "row_floats", "groups_x", "first_query", "segment", "segments", "token_at")
PXVM_TF = Kernel(
    "pxvm_tf",
    (*(Storage(name) for name in BUFFERS), *(Uniform(name) for name in UNIFORMS)),
    SHARED,
    # one instruction a dispatch, split as the passes kernel of its operation: at most the largest count
    loops=lambda constants, local_size: max(count(constants) for count in KERNEL_LOOPS.values()),
)
"""Every variant's declaration: glsl/pxvm_tf.comp compiled with VARIANT (variant_constant) among its constants."""


def variant_constant(name: str, phase: int) -> int:
    """The VARIANT one (opcode, phase) is compiled with: 4 · opcode + phase (glsl/pxvm_tf.comp's PHASE_OF)."""
    return 4 * BY_NAME[name].code + phase
