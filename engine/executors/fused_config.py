"""The fused executor's kernels as declarations (what each binds and shares), their constants, and the work
shapes they run in (FusedConfig), fitted to a GPU's limits. engine/executors/fused.py runs them."""

import math
from dataclasses import dataclass, replace

from ..errors import PxglError
from ..gl import GLBackend
from ..kernel import DISPATCH_LOOPS, Constants, Kernel, Shared, Storage, Uniform, ceil_div
from ..spec import ModelSpec
from .fused_gemm import DEFAULT_GEMM, FUSED_LOGITS, GemmConfig
from .fused_loops import small_loops, tiles_loops
from .fused_weights import STAGE_MAX, supports, weights_layout
from .protocol import model_constants

WEIGHTS = tuple(Storage(name) for name in ("first", "head", "dense", "biases", "out_weights"))
RUN = (*WEIGHTS, Storage("prompts"), Storage("predictions"))
SCORES = (Storage("targets"), Storage("logprobs"))
STAGING = (
    Shared("staged_count", "int", "GROUP_PROMPTS"),
    Shared("staged_first", "int", "GROUP_PROMPTS"),
    Shared("staged_valid", "bool", "GROUP_PROMPTS"),
    Shared("staged_ids", "uint", "STAGED_IDS"),
)
"""The shared arrays of glsl/fused_common.glsl's token staging."""
HEAD_SHARED = (
    Shared("head_q", "float", "HEAD_SPAN"),
    Shared("head_s", "float", "SCORE_SPAN"),
    Shared("head_out", "float", "HEAD_SPAN"),
)
SMALL_SHARED = (
    *STAGING,
    *HEAD_SHARED,
    Shared("head_keys", "float", "KEYS_SPAN"),
    Shared("head_values", "float", "KEYS_SPAN"),
    Shared("h", "float", "HIDDEN_MAX"),
    Shared("h_next", "float", "NEXT_MAX"),
    Shared("partial_sums", "vec4", "LOCAL_SIZE"),
    Shared("states", "vec4", "COLUMN_THREADS"),
    Shared("last_arrival", "bool", 1),
)
TILES_SHARED = (
    *STAGING,
    *HEAD_SHARED,
    Shared("pool", "vec4", "POOL_VEC4"),
    Shared("pool_next", "vec4", "NEXT_VEC4"),
    Shared("stage", "vec4", "STAGE_BUFFERS_VEC4"),
)
FUSED_SMALL = Kernel("fused_small", (*RUN, Storage("scratch")), shared=SMALL_SHARED, loops=small_loops)
FUSED_SMALL_SCORING = Kernel("fused_small", (*RUN, Storage("scratch"), *SCORES), shared=SMALL_SHARED, loops=small_loops)
FUSED_TILES = Kernel("fused_tiles", RUN, shared=TILES_SHARED, loops=tiles_loops)
FUSED_TILES_SCORING = Kernel("fused_tiles", (*RUN, *SCORES), shared=TILES_SHARED, loops=tiles_loops)
HIDDEN_OUTPUTS = (Storage("hidden"), Storage("valid"), Uniform("prompt_offset"), Uniform("part_count"))
FUSED_HIDDEN = Kernel(
    "fused_tiles", (*WEIGHTS, Storage("prompts"), *HIDDEN_OUTPUTS), shared=TILES_SHARED, loops=tiles_loops
)

HEADER_BYTES = 16
"""Prompts: [n, row_len, 0, 0] before the rows (injected into glsl/fused_common.glsl as HEADER_WORDS)."""
STAGE_KS = (4, 8, 16)
HIDDEN_ROWS = 8
"""Prompts a thread of the direct hidden-layer dispatch computes a unit of, each weight read once for them."""
CHUNK_MULTIPLE = 64
"""Prompts per fused_tiles dispatch come in multiples of this, keeping each chunk's predictions aligned."""
PIXELS, IDS = "pixels", "ids"
LAYOUTS = (PIXELS, IDS)


@dataclass(frozen=True)
class FusedConfig:
    """Work shapes of the fused kernels (bench/variants/sweep.py and batch.py time the alternatives)."""

    tile_m: int = 64
    """Prompts per work group of fused_tiles (shrunk until it fits shared memory; 0: none fits)."""
    tm: int = 8  # prompts per thread (a multiple of 4)
    tn: int = 4  # consecutive vocabulary columns per thread (a multiple of 4)
    tile_n: int = 128  # columns a work group sweeps per step
    stage_k: int = 8
    """Hidden rows of output weights staged in shared memory at a time (fused_tiles)."""
    small_threads: int = 128  # threads of a fused_small work group (a power of two)
    split: int = 4  # vocabulary slices (work groups) per prompt in fused_small
    small_max: int = 64
    """Runs of up to this many prompts use fused_small."""
    chunk: int = 1 << 17
    """Prompts a batch uploads and dispatches at a time (the host prepares the next and reads the one before
    while the GPU runs one); a multiple of CHUNK_MULTIPLE."""
    sync: str = "poll"
    """How a fused_small run is waited for: "poll" its prediction words, or "fence"."""
    subgroups: bool = True
    """One-prompt generation merges through subgroup shuffles where the GPU has them (GL_KHR_shader_subgroup)."""
    resident: bool = True
    """Single prompts go to a kernel left running (fused_resident.py) where the GPU and the model allow."""
    resident_split: int = 0
    """Work groups of the resident kernel (vocabulary slices); 0: the fewest whose output weights fit."""
    keys_in_shared: bool = True
    """fused_small reads an attention window's keys and values from shared memory (off where they do not fit)."""
    gemm: GemmConfig | None = DEFAULT_GEMM
    """Batches not scored run as hidden layers then a GEMM (fused_gemm.py); None: fused_tiles alone."""
    hidden_tile_m: int = 64
    """Prompts per work group of the GEMM path's hidden-layer dispatch where it keeps no hidden units in shared
    memory (one layer, the window staged at once: `direct_hidden`); shrunk to fit; 0: fused_tiles' tile."""

    @property
    def tile_threads(self) -> int:
        return (self.tile_m // self.tm) * (self.tile_n // self.tn)

    def with_tile_m(self, tile_m: int) -> "FusedConfig":
        """Tiles of `tile_m` prompts, a thread's rows cut to keep rows of threads (v1, tiles of 8: 2x faster)."""
        return replace(self, tile_m=tile_m, tm=min(self.tm, max(4, tile_m // 16 * 4)))

    def fitted(self, gpu: GLBackend, spec: ModelSpec) -> "FusedConfig":
        """This configuration shrunk to the GPU's limits: shared memory (measured on the kernels'
        declarations), work group size, storage alignment."""
        for name in ("tm", "tn"):
            if getattr(self, name) % 4:
                raise ValueError(f"{name} must be a multiple of 4")
        if self.hidden_tile_m % HIDDEN_ROWS or self.hidden_tile_m < 0:
            raise ValueError(f"hidden_tile_m must be 0 or a positive multiple of {HIDDEN_ROWS} (a thread's prompts)")
        if self.stage_k not in STAGE_KS:
            raise ValueError(f"stage_k must be one of {STAGE_KS} (glsl/fused_tiles.comp writes its steps out)")
        for tile, per_thread in (("tile_m", "tm"), ("tile_n", "tn")):
            if getattr(self, tile) % getattr(self, per_thread):
                raise ValueError(
                    f"{tile}={getattr(self, tile)} must be a multiple of {per_thread}={getattr(self, per_thread)}"
                )
        limits = gpu.limits
        alignment = limits.storage_offset_alignment
        if self.chunk <= 0 or self.chunk % CHUNK_MULTIPLE or (4 * self.chunk) % alignment:
            raise ValueError(
                f"chunk={self.chunk} must be a positive multiple of {CHUNK_MULTIPLE} whose predictions (4 bytes "
                f"a prompt) start at multiples of this GPU's storage offset alignment, {alignment} bytes"
            )
        largest = min(limits.max_work_group_invocations, limits.max_work_group_size[0])

        def small_bytes(config: FusedConfig) -> int:
            constants = small_constants(kernel_constants(spec, config), PIXELS, scoring=True)
            return FUSED_SMALL.shared_bytes(constants, config.small_threads)

        def tile_bytes(config: FusedConfig) -> int:
            constants = tile_constants(kernel_constants(spec, config), config, PIXELS, scoring=True)
            return FUSED_TILES.shared_bytes(constants, config.tile_threads)

        fitted = replace(self, small_threads=min(self.small_threads, largest))
        if fitted.keys_in_shared and small_bytes(fitted) > limits.max_shared_memory:
            fitted = replace(fitted, keys_in_shared=False)  # rather than fewer threads
        while fitted.small_threads > 1 and small_bytes(fitted) > limits.max_shared_memory:
            fitted = replace(fitted, small_threads=fitted.small_threads // 2)
        if small_bytes(fitted) > limits.max_shared_memory:
            raise PxglError(
                f"the fused executor cannot hold this model's hidden layers ({spec.architecture.describe()}) in "
                f"this GPU's {limits.max_shared_memory} bytes of shared memory; the passes executor runs it"
            )
        while fitted.tile_m >= 4 and tile_bytes(fitted) > limits.max_shared_memory:
            fitted = fitted.with_tile_m(fitted.tile_m // 2)
        if fitted.tile_m < 4 or fitted.tile_m % fitted.tm or fitted.tile_threads > largest:
            fitted = replace(fitted, tile_m=0)
        if self.gemm:
            self.gemm.check()
        if not fitted.tile_m or (fitted.gemm and not fitted.gemm.fits(gpu)):
            fitted = replace(fitted, gemm=None)
        if not fitted.gemm or not direct_hidden(spec):
            return replace(fitted, hidden_tile_m=0)

        def hidden_bytes(config: FusedConfig) -> int:
            assert config.gemm is not None
            constants = hidden_constants(kernel_constants(spec, config), config, PIXELS)
            return FUSED_HIDDEN.shared_bytes(constants, config.gemm.hidden_threads)

        while fitted.hidden_tile_m >= HIDDEN_ROWS and hidden_bytes(fitted) > limits.max_shared_memory:
            fitted = replace(fitted, hidden_tile_m=fitted.hidden_tile_m // 2 // HIDDEN_ROWS * HIDDEN_ROWS)
        return fitted if fitted.hidden_tile_m >= HIDDEN_ROWS else replace(fitted, hidden_tile_m=0)


def refusal(spec: ModelSpec, gpu: GLBackend) -> str | None:
    """Why the fused executor would not run this model on this GPU (its envelope, its shared memory), or
    None when it runs it."""
    reason = supports(spec, gpu)
    if reason is not None:
        return reason
    try:
        config = FusedConfig().fitted(gpu, spec)
    except PxglError as e:
        return str(e)
    return loop_refusal(spec, config)


def loop_refusal(spec: ModelSpec, config: FusedConfig) -> str | None:
    """Why a kernel of the fused executor, in this configuration, would loop past DISPATCH_LOOPS in one
    invocation for this model (docs/FORMATS.md §3.1, the fused envelope), or None when none would."""
    base = kernel_constants(spec, config)
    programs = [(FUSED_SMALL_SCORING, small_constants(base, layout, True), config.small_threads) for layout in LAYOUTS]
    if config.tile_m:
        tiles = FUSED_TILES_SCORING
        programs += [(tiles, tile_constants(base, config, layout, True), config.tile_threads) for layout in LAYOUTS]
    if config.gemm:
        threads = config.gemm.hidden_threads
        programs += [(FUSED_HIDDEN, hidden_constants(base, config, layout), threads) for layout in LAYOUTS]
        programs.append((FUSED_LOGITS, config.gemm.constants(base), config.gemm.threads))
    for kernel, constants, threads in programs:
        loops = kernel.loops(constants, threads)
        if loops > DISPATCH_LOOPS:
            return (
                f"the fused executor's glsl/{kernel.shader}.comp would loop {loops:,} times in one GPU invocation "
                f"for this model ({spec.architecture.describe()}), past the {DISPATCH_LOOPS:,} every driver runs"
            )
    return None


def stage_width(spec: ModelSpec) -> int:
    return min(spec.context_window, STAGE_MAX)


def vocab_padding(spec: ModelSpec, config: FusedConfig) -> int:
    pad = math.lcm(4 * config.split, config.tile_n if config.tile_m else 4, config.gemm.n if config.gemm else 4)
    return ceil_div(spec.vocab_size, pad) * pad


def kernel_constants(spec: ModelSpec, config: FusedConfig) -> Constants:
    """What the run kernels share: the model's constants, its prepared weights' layout, the work shape."""
    a = spec.architecture
    vocab_pad = vocab_padding(spec, config)
    slice4 = vocab_pad // 4 // config.split
    return (
        model_constants(spec)
        | weights_layout(spec, vocab_pad).constants()
        | {
            "HIDDEN0": a.hidden[0],
            "HIDDEN_MAX": max(a.hidden),
            "DEPTH": len(a.hidden),
            "LAYER_WIDTHS": tuple(a.hidden),
            "LAYER_RESIDUALS": tuple(int(a.is_residual(layer)) for layer in range(len(a.hidden))),
            "VOCAB_PAD": vocab_pad,
            "COLUMN_THREADS": min(1 << (slice4.bit_length() - 1), config.small_threads),
            "STAGE_W": stage_width(spec),
            "SMALL_THREADS": config.small_threads,
            "SPLIT": config.split,
            "SMALL_MAX": config.small_max,
            "HEADER_WORDS": HEADER_BYTES // 4,
            "KEYS_SPAN": max(1, spec.context_window * spec.context.head_dim) if config.keys_in_shared else 1,
        }
    )


def run_constants(base: Constants, group_prompts: int, layout: str, scoring: bool) -> Constants:
    """A run kernel's own: how many prompts a work group stages, the prompt layout, scoring, the head's
    shared spans."""
    attention = base.int("CONTEXT_MODE") == base.int("MODE_ATTENTION")
    return base | {
        "PROMPTS_AS_PIXELS": int(layout == PIXELS),
        "SCORING": int(scoring),
        "GENERATE": 0,
        "RESIDENT": 0,
        "HIDDEN_OUT": 0,
        "GROUP_PROMPTS": group_prompts,
        "STAGED_IDS": group_prompts * base.int("STAGE_W"),
        "HEAD_SPAN": group_prompts * base.int("HEAD_DIM") if attention else 1,
        "SCORE_SPAN": group_prompts * base.int("CONTEXT_WINDOW") if attention else 1,
    }


def small_constants(base: Constants, layout: str, scoring: bool = False) -> Constants:
    deep = base.int("DEPTH") > 1
    return run_constants(base, 1, layout, scoring) | {"NEXT_MAX": base.int("HIDDEN_MAX") if deep else 1}


def tile_constants(base: Constants, config: FusedConfig, layout: str, scoring: bool = False) -> Constants:
    row_threads = config.tile_n // config.tn
    stage_vec4 = config.stage_k * config.tile_n // 4
    hidden_vec4 = ceil_div(base.int("HIDDEN_MAX") * config.tile_m, 4)
    return run_constants(base, config.tile_m, layout, scoring) | {
        "TILE_M": config.tile_m,
        "TM": config.tm,
        "TN": config.tn,
        "TILE_N": config.tile_n,
        "STAGE_K": config.stage_k,
        "TILE_THREADS": config.tile_threads,
        "STAGE_VEC4": stage_vec4,
        "STAGE_BUFFERS_VEC4": 2 * stage_vec4,
        "POOL_VEC4": max(hidden_vec4, config.tile_m * row_threads),
        # the hidden units of a tile, later reused for the threads' softmax states
        "NEXT_VEC4": hidden_vec4 if base.int("DEPTH") > 1 else 1,
        "DIRECT_HIDDEN": 0,
        "HIDDEN_ROWS": 1,
    }


def direct_hidden(spec: ModelSpec) -> bool:
    """Whether the GEMM path's hidden layer goes from registers straight to memory (fused_tiles.comp's
    DIRECT_HIDDEN): one layer, the whole window staged at once, no attention head. On the H200 (2026-12-02)
    this took pixellm_v0's hidden layers from 1.17 to 0.18 ms a 256 Ki batch; pixellm_v1's attention tiles of
    64 prompts ran slower than fused_tiles' pooled ones of 8 (7.1 vs 8.6 M prompts/s end to end)."""
    return len(spec.hidden) == 1 and spec.context_window <= stage_width(spec) and spec.context.mode != "attention"


def hidden_constants(base: Constants, config: FusedConfig, layout: str) -> Constants:
    """fused_tiles compiled HIDDEN_OUT: the GEMM path's hidden-layer dispatch (config.gemm set), in tiles of
    config.hidden_tile_m prompts kept in registers (DIRECT_HIDDEN) or, where that is 0, fused_tiles' own."""
    gemm = config.gemm
    assert gemm is not None
    direct = config.hidden_tile_m > 0
    tiles = tile_constants(base, replace(config, tile_m=config.hidden_tile_m) if direct else config, layout)
    return tiles | {
        "HIDDEN_OUT": 1,
        "DIRECT_HIDDEN": int(direct),
        "HIDDEN_ROWS": HIDDEN_ROWS if direct else 1,
        "GEMM_M": gemm.m,
        "K_PAD": gemm.k_pad(base.int("LAST_HIDDEN")),
        "TILE_THREADS": gemm.hidden_threads,
        "STAGE_BUFFERS_VEC4": 1,  # no output weights staged
        **({"POOL_VEC4": 1, "NEXT_VEC4": 1} if direct else {}),
    }
