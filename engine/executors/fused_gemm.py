"""Batches as a GEMM: each part of a fused_tiles chunk runs as two dispatches. fused_tiles compiled HIDDEN_OUT
computes the part's last hidden layer into device memory (and each prompt's validity); then
glsl/fused_logits.comp, a GEMM-class kernel (both operands staged through shared memory, an 8 x 8 register
tile of logits a thread, 128 x 64 tiles), computes the logits with the fused online softmax and writes the
prediction words. fused_tiles alone keeps a tile's hidden units in shared memory, which caps its tile at
48 KiB / (4 bytes x width) prompts (8 for pixellm_v1's 1,024 units) and its register tile at what those few
prompts allow; here the hidden units stream through shared memory like the weights do."""

import math
from dataclasses import dataclass

from ..gl import Buffer, BufferRange, GLBackend, GpuProgram
from ..kernel import Constants, Kernel, Shared, Storage, Uniform, ceil_div
from .fused_loops import logits_loops
from .fused_weights import grid

FUSED_LOGITS = Kernel(
    "fused_logits",
    (
        Storage("hidden"),
        Storage("valid"),
        Storage("states"),
        Storage("biases"),
        Storage("out_weights"),
        Storage("predictions"),
        Uniform("count"),
        Uniform("slices"),
    ),
    shared=(Shared("gemm_shared", "vec4", "GEMM_SHARED_VEC4"),),
    loops=logits_loops,
)
FUSED_MERGE = Kernel(
    "fused_logits",
    (Storage("valid"), Storage("states"), Storage("predictions"), Uniform("count"), Uniform("slices")),
    loops=logits_loops,
)
MERGE_THREADS = 256
GEMM_KS = (4, 8, 16)
PART_MULTIPLE = 64
"""A part's prompts come in multiples of this, so its words start at 256-byte boundaries (a multiple of every
GPU's storage offset alignment that fused_config's chunks are checked against)."""


@dataclass(frozen=True)
class GemmConfig:
    """The work shape of fused_logits.comp (bench/variants/sweep.py times the alternatives)."""

    m: int = 128  # prompts a work group
    n: int = 64  # vocabulary columns a step (H200: 143 M v0 prompts/s, 136 with 128)
    tm: int = 8  # prompts a thread (a multiple of 4)
    tn: int = 8  # columns a thread (a multiple of 4)
    k: int = 8  # hidden rows staged at a time
    hidden_threads: int = 256
    """Threads of a work group of the hidden-layer dispatch (fused_tiles, HIDDEN_OUT)."""
    min_groups: int = 1024
    """A part with fewer blocks of prompts is cut into vocabulary slices until it has this many work groups (or
    a slice is one step of columns): enough to fill a large GPU several times over."""
    part_bytes: int = 64 << 20
    """A part's hidden units take at most this much device memory (a part is at least one tile of prompts)."""

    @property
    def threads(self) -> int:
        return (self.m // self.tm) * (self.n // self.tn)

    def check(self) -> None:
        if self.tm % 4 or self.tn % 4 or self.m % self.tm or self.n % self.tn or self.k not in GEMM_KS:
            raise ValueError(f"{self}: tm and tn must be multiples of 4 dividing m and n, k one of {GEMM_KS}")

    def fits(self, gpu: GLBackend) -> bool:
        """Whether this GPU's work groups hold the shape's threads and shared memory."""
        limits = gpu.limits
        largest = min(limits.max_work_group_invocations, limits.max_work_group_size[0])
        return max(self.threads, self.hidden_threads) <= largest and 16 * self.shared_vec4() <= limits.max_shared_memory

    def shared_vec4(self) -> int:
        stage = self.k * (self.m + self.n) // 4
        return max(2 * stage, self.m * (self.n // self.tn))

    def k_pad(self, last_hidden: int) -> int:
        return ceil_div(last_hidden, self.k) * self.k

    def constants(self, base: Constants) -> Constants:
        """fused_logits' constants, from the fused executor's (the model's and the prepared weights' layout)."""
        keep = ("VOCAB", "VOCAB_PAD", "LAST_HIDDEN", "OUT_BIAS_AT")
        return Constants({name: base[name] for name in keep}) | {
            "GEMM_M": self.m,
            "GEMM_N": self.n,
            "GEMM_TM": self.tm,
            "GEMM_TN": self.tn,
            "GEMM_K": self.k,
            "K_PAD": self.k_pad(base.int("LAST_HIDDEN")),
            "GEMM_SHARED_VEC4": self.shared_vec4(),
            "MERGE": 0,
        }


DEFAULT_GEMM = GemmConfig()


class GemmParts:
    """The device buffers of one part's hidden units and validity, and the two dispatches that use them."""

    def __init__(self, gpu: GLBackend, config: GemmConfig, base: Constants, tile_m: int, prompts: int) -> None:
        """Buffers for parts of up to `prompts` prompts (the most a run gives at once), at most part_bytes of
        hidden units."""
        self.gpu, self.config, self.tile_m = gpu, config, tile_m
        constants = config.constants(base)
        self.logits_program = gpu.program(FUSED_LOGITS, constants, config.threads)
        self.merge_program = gpu.program(FUSED_MERGE, constants | {"MERGE": 1}, MERGE_THREADS)
        k_pad = config.k_pad(base.int("LAST_HIDDEN"))
        unit = math.lcm(config.m, tile_m, PART_MULTIPLE)
        self.largest_part = max(unit, config.part_bytes // (4 * k_pad) // unit * unit)
        self.part = min(ceil_div(prompts, unit) * unit, self.largest_part)
        blocks = ceil_div(self.part, config.m)
        self.steps = base.int("VOCAB_PAD") // config.n  # column steps: a slice is a divisor of them
        self.hidden: Buffer = gpu.storage_buffer(4 * k_pad * blocks * config.m, "hidden units")
        self.valid: Buffer = gpu.storage_buffer(4 * self.part, "prompt validity")
        self.states: Buffer = gpu.storage_buffer(16 * blocks * self.steps * config.m, "softmax states")

    def slices(self, count: int) -> int:
        blocks = ceil_div(count, self.config.m)
        return next(
            d
            for d in range(1, self.steps + 1)
            if self.steps % d == 0 and (blocks * d >= self.config.min_groups or d == self.steps)
        )

    def run(
        self, hidden: GpuProgram, weights: dict, prompts: BufferRange, count: int, predictions: Buffer, first: int
    ) -> None:
        """Queue the dispatches for `count` prompts of `prompts` (a chunk with its header; `hidden`: fused_tiles
        compiled HIDDEN_OUT for its layout), their prediction words at predictions[first:]."""
        gpu = self.gpu
        for offset in range(0, count, self.part):
            size = min(self.part, count - offset)
            words = BufferRange(predictions, 4 * (first + offset), 4 * size)
            gpu.run(
                hidden,
                grid(ceil_div(size, self.tile_m)),
                **weights,
                prompts=prompts,
                hidden=self.hidden,
                valid=self.valid,
                prompt_offset=offset,
                part_count=size,
            )
            gpu.storage_barrier()
            slices = self.slices(size)
            gpu.run(
                self.logits_program,
                (*grid(ceil_div(size, self.config.m))[:2], slices),
                hidden=self.hidden,
                valid=self.valid,
                states=self.states,
                biases=weights["biases"],
                out_weights=weights["out_weights"],
                predictions=words,
                count=size,
                slices=slices,
            )
            gpu.storage_barrier()  # the next part's hidden units (or the merge) follow
            if slices > 1:
                merge = dict(valid=self.valid, states=self.states, predictions=words, count=size, slices=slices)
                gpu.run(self.merge_program, (ceil_div(size, MERGE_THREADS), 1, 1), **merge)
                gpu.storage_barrier()

    def close(self) -> None:
        for buffer in (self.hidden, self.valid, self.states):
            self.gpu.release_storage(buffer)
