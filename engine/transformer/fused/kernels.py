"""The fused executor's kernels (glsl/tff_*.comp) as declarations, their loop counts and the constants they are
compiled with: one compile per model shape and tile, the model's dimensions compiled in."""

from dataclasses import dataclass

from ...errors import PxglError
from ...kernel import Constants, Kernel, Shared, Storage, Uniform
from ..gpu.kernels import QUANT_CODES
from ..gpu.loops import GROUP, attend_chunk_loops, attend_dims, ceil_div, reduction_loops
from ..meta import TransformerArchitecture
from ..quant import BLOCK, BLOCK_BYTES

CHUNKS = (256, 128, 64, 32)
"""Input columns tff_matvec stages in shared memory at a time (multiples of BLOCK): the largest whose loops
fit one dispatch's budget."""
TILES = (1, 8)
"""Rows one tff_matvec work group computes: 1 for a single decode row, 8 for a prefill or a batched step."""
INPUT_KINDS = ("plain", "norm", "attention")
EPILOGUES = ("qkv", "residual", "gelu", "gated", "logits")
BLOCK_LOOPS = BLOCK // 4 * (1 + 4 + 4)
"""tff_matvec's block_dot of one row at its longest: u8/f16, BLOCK / 4 quads, each 4 elements read and 4 of
add_quads' columns (q8 and q4 walk 8 and 4 words)."""

MATVEC_RESOURCES = tuple(
    Storage(name) for name in ("weights", "params", "source", "target", "rows", "keys", "values", "table", "scratch")
)
MATVEC = Kernel(
    "tff_matvec",
    (*MATVEC_RESOURCES, Uniform("run"), Uniform("split")),
    (
        Shared("staged", "vec4", "STAGED"),
        Shared("reduced", "float", "LOCAL_SIZE"),
        Shared("statistics", "float", "STATISTICS"),
    ),
    loops=lambda constants, local: matvec_loops(constants, local),
)
ATTEND = Kernel(
    "tff_attend",
    (*(Storage(name) for name in ("q", "keys", "values", "rows", "partial")), Uniform("run")),
    (Shared("scores", "float", "LOCAL_SIZE"), Shared("top", "float", "LOCAL_SIZE")),
    loops=lambda constants, local: (
        attend_dims(constants.int("HEAD_DIM")) * 2
        + ceil_div(constants.int("ATTEND_SEGMENT"), local) * attend_chunk_loops(constants.int("HEAD_DIM"))
    ),
)
EMBED = Kernel(
    "tff_embed",
    (*(Storage(name) for name in ("weights", "params", "tokens", "rows", "target")), Uniform("run")),
    loops=lambda constants, local: 0,
)


def matvec_chunk_loops(tile: int, segments: int, chunk: int, local: int = GROUP) -> int:
    """One staged chunk: its TILE x CHUNK inputs (an attention input merges its segments, two loops each), then
    per block both rows' products."""
    staging = ceil_div(tile * chunk, local) * (1 + 2 * segments)
    return staging + chunk // BLOCK * 2 * BLOCK_LOOPS


def matvec_fixed_loops(tile: int, width: int, local: int = GROUP) -> int:
    """Outside the chunks: the parts looked up, a norm's two means per row, the sums carried in and out."""
    return 3 + tile * (2 * ceil_div(width, local) + 2 * reduction_loops(local) + 1) + 2 * tile


def matvec_loops(constants: Constants, local: int) -> int:
    tile, segments, chunk = constants.int("TILE"), constants.int("SEGMENTS"), constants.int("CHUNK")
    chunks = constants.int("SPAN") // chunk
    fixed = matvec_fixed_loops(tile, constants.int("WIDTH"), local)
    return fixed + chunks * matvec_chunk_loops(tile, segments, chunk, local)


@dataclass(frozen=True)
class FusedPlan:
    """How one model's work is split to fit one dispatch's loops, and the constants its kernels compile with."""

    attend_segment: int
    """Cached keys one tff_attend work group walks."""
    segments: int
    """Attention segments of the longest row: the out projection merges up to this many."""
    chunks: dict[int, int]
    """Tile → tff_matvec's CHUNK."""
    spans: dict[int, int]
    """Tile → input columns one tff_matvec dispatch walks (a multiple of its CHUNK); longer sums take several."""
    constants: Constants


def plan_fused(
    architecture: TransformerArchitecture, budget: int, matrix_quants: frozenset[str] = frozenset(QUANT_CODES)
) -> FusedPlan:
    """The splits for this architecture within `budget` loop iterations an invocation; one clear PxglError
    when a kernel cannot be made to fit (never for a shape §14.1 allows at the default budget). `matrix_quants`:
    the quantizations of the model's matrices, whose code the kernels compile."""
    a = architecture
    d = a.head_dim
    shape = f"width {a.width}, heads {a.heads} x {d}, MLP width {a.mlp_width}, context {a.context_length}"
    chunks = (budget - 2 * attend_dims(d)) // attend_chunk_loops(d)
    if chunks < 1:
        raise PxglError(f"glsl/tff_attend.comp: a head of {d} dimensions is past {budget:,} loops an invocation")
    attend_segment = GROUP * min(chunks, ceil_div(a.context_length, GROUP))
    segments = ceil_div(a.context_length, attend_segment)
    chunks, spans = {}, {}
    for tile in TILES:
        room = budget - matvec_fixed_loops(tile, a.width)
        fitting = [chunk for chunk in CHUNKS if room >= matvec_chunk_loops(tile, segments, chunk)]
        if not fitting:
            raise PxglError(
                f"glsl/tff_matvec.comp: one chunk of {CHUNKS[-1]} columns is past {budget:,} loop iterations an "
                f"invocation for {shape}; this model's shape is not supported by the fused executor"
            )
        chunks[tile] = fitting[0]
        spans[tile] = fitting[0] * (room // matvec_chunk_loops(tile, segments, fitting[0]))
    quants = {f"QUANT_{quant.upper()}": code for quant, code in QUANT_CODES.items()}
    blocks = {f"{quant.upper()}_BLOCK_BYTES": size for quant, size in BLOCK_BYTES.items()}
    kinds = {f"INPUT_{kind.upper()}": code for code, kind in enumerate(INPUT_KINDS)}
    kinds |= {f"EPILOGUE_{kind.upper()}": code for code, kind in enumerate(EPILOGUES)}
    rope = a.rope is not None
    model = {
        "HAS_Q8": int("q8" in matrix_quants),
        "HAS_Q4": int("q4" in matrix_quants),
        "HAS_ELEMENTS": int(bool(matrix_quants & {"u8", "f16"})),
    }
    model |= {
        "BLOCK": BLOCK,
        "WIDTH": a.width,
        "HEADS": a.heads,
        "KV_HEADS": a.kv_heads,
        "HEAD_DIM": d,
        "Q_WIDTH": a.heads * d,
        "KV_ROW_WORDS": ceil_div(a.kv_heads * d, 2),
        "CONTEXT": a.context_length,
        "ROPE": int(rope),
        "ROPE_PAIRS": int(rope and a.rope.rotation == "pairs"),
        "LAYERNORM": int(a.norm_kind == "layernorm"),
        "NORM_EPS": a.norm_eps,
        "GELU_EXACT": int(a.mlp_kind == "gelu"),
        "SCALE": a.attention_scale,
        "ATTEND_SEGMENT": attend_segment,
        "ATTEND_DIMS": attend_dims(d),
        "SEGMENTS": segments,
    }
    return FusedPlan(attend_segment, segments, chunks, spans, Constants(quants | blocks | kinds | model))


def matvec_constants(plan: FusedPlan, tile: int, input_kind: str, epilogue: str) -> Constants:
    chosen = {"INPUT_KIND": INPUT_KINDS.index(input_kind), "EPILOGUE": EPILOGUES.index(epilogue)}
    chunk = plan.chunks[tile]
    sizes = {"TILE": tile, "CHUNK": chunk, "SPAN": plan.spans[tile], "STAGED": tile * chunk // 4}
    sizes["STATISTICS"] = 2 * tile
    return plan.constants | chosen | sizes
