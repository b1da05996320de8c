"""Greedy generation on the fused executor (docs/FORMATS.md §11): the fused kernels compiled with GENERATE
run a chunk of steps in one dispatch. Each work group owns its rows (one prompt in fused_small, TILE_M in
fused_tiles) and loops over the steps, appending each chosen id to its rows in device memory, so no step
waits for the host or for another work group."""

from dataclasses import replace

import numpy as np

from ..generation import MAX_NEW_TOKENS
from ..gl import Buffer, GLBackend
from ..kernel import SUBGROUP_EXTENSIONS, Constants, Kernel, Storage, Uniform, ceil_div
from .fused import FusedExecutor
from .fused_config import HEADER_BYTES, IDS, RUN, SMALL_SHARED, TILES_SHARED, small_constants, tile_constants
from .fused_loops import dispatch_steps, small_loops, tiles_loops
from .fused_weights import grid
from .protocol import largest_pow2_group

STEPS = (Storage("lengths"), Storage("logprobs"), Uniform("first_step"), Uniform("last_step"))
FUSED_SMALL_GENERATE = Kernel(
    "fused_small", (*RUN, Storage("scratch"), Storage("out_bytes"), *STEPS), shared=SMALL_SHARED, loops=small_loops
)
FUSED_SMALL_GENERATE_SUBGROUPS = replace(FUSED_SMALL_GENERATE, extensions=SUBGROUP_EXTENSIONS)
FUSED_TILES_GENERATE = Kernel("fused_tiles", (*RUN, *STEPS), shared=TILES_SHARED, loops=tiles_loops)
OUT_CACHE_ROWS = 32
"""Output-weight words a thread of the one-prompt group keeps in registers for a whole dispatch, at most."""
TILES_WANTED = 256
"""Work groups a batch's generation aims for, at least (a few per multiprocessor of a large GPU)."""
GENERATE_THREADS = 1024
"""Threads of the work group that generates one prompt (fused_small, SPLIT 1): a lone stream's step is one
group's latency, so it gets more threads than a prediction's slice."""


def subgroups_fit(size: int, threads: int, column_threads: int) -> bool:
    """Subgroups of `size` can merge a group of `threads` whose columns have `column_threads` threads each:
    a column's threads within one subgroup, and one subgroup enough to merge every subgroup's state."""
    hidden_split = threads // column_threads
    return size > 0 and threads % size == 0 and hidden_split <= size and threads // size <= min(size, column_threads)


def one_group_constants(executor: FusedExecutor, threads: int) -> Constants:
    """fused_small's constants with the whole vocabulary in one work group of `threads` threads; SUBGROUP_SIZE
    is the GPU's where its shuffles can merge the group (a column's threads within one subgroup, one subgroup
    enough to merge all subgroups' states) and the output weights sit in registers, else 0: read from
    memory, they load best in the shared-memory path's order (v1 on the H200: 80.3 µs a step that way,
    87.4 with subgroups; v0, cached: 6.05 → 5.46 µs)."""
    columns4 = executor.constants.int("VOCAB_PAD") // 4
    column_threads = min(1 << (columns4.bit_length() - 1), threads)
    hidden_split = threads // column_threads
    part_rows = ceil_div(executor.spec.hidden[-1], hidden_split)
    size = executor.gpu.limits.subgroup_size if executor.config.subgroups else 0
    cached = column_threads >= columns4 and part_rows <= OUT_CACHE_ROWS
    fits = subgroups_fit(size, threads, column_threads)
    return small_constants(executor.constants, IDS) | {
        "GENERATE": 1,
        "SPLIT": 1,
        "SMALL_THREADS": threads,
        "COLUMN_THREADS": column_threads,
        "OUT_CACHED": int(cached),
        "SUBGROUP_SIZE": size if fits and cached else 0,
    }


def small_program_shape(executor: FusedExecutor) -> tuple[Kernel, Constants, int]:
    """The one-prompt generation kernel, its constants and the largest power-of-two group up to
    GENERATE_THREADS that fits the GPU's limits."""
    gpu: GLBackend = executor.gpu
    limits = gpu.limits
    threads = largest_pow2_group(gpu, GENERATE_THREADS)
    while threads > 1:
        constants = one_group_constants(executor, threads)
        if FUSED_SMALL_GENERATE.shared_bytes(constants, threads) <= limits.max_shared_memory:
            break
        threads //= 2
    else:
        constants = one_group_constants(executor, 1)
    kernel = FUSED_SMALL_GENERATE_SUBGROUPS if constants.int("SUBGROUP_SIZE") else FUSED_SMALL_GENERATE
    return kernel, with_dispatch_steps(kernel, constants, threads), threads


def with_dispatch_steps(kernel: Kernel, constants: Constants, threads: int) -> Constants:
    """A generating kernel's constants with DISPATCH_STEPS, the most steps one dispatch runs within
    DISPATCH_LOOPS (docs/FORMATS.md §3.1): a chunk of more steps runs in several dispatches."""
    return constants | {"DISPATCH_STEPS": max(1, dispatch_steps(kernel.loops, constants, threads, MAX_NEW_TOKENS))}


def out_bytes(executor: FusedExecutor) -> Buffer:
    """The output weights' quantized bytes, rows padded to VOCAB_PAD columns, four columns a word: read back
    from the weight texture once per executor (§1: byte i of the stream is channel i % 3 of pixel i / 3)."""
    cache = executor.generation_cache
    if "out_bytes" not in cache:
        spec, gpu = executor.spec, executor.gpu
        tensor = spec.tensors["out.weight"]
        stream = gpu.read_uint8(executor.weights)[..., :3].reshape(-1)
        rows = stream[tensor.offset : tensor.offset + tensor.size].reshape(tensor.shape)
        padded = np.full((tensor.shape[0], executor.constants.int("VOCAB_PAD")), tensor.zero_point, np.uint8)
        padded[:, : tensor.shape[1]] = rows
        buffer = gpu.storage_buffer(padded.nbytes, "output weight bytes")
        gpu.write_storage(buffer, padded)
        cache["out_bytes"] = buffer
    return cache["out_bytes"]


class FusedGeneration:
    """A tile's rows in device memory (uint16 ids, prompt then generated, an even number a row) and the
    program that runs steps over them."""

    def __init__(self, executor: FusedExecutor, ids: np.ndarray, lengths: np.ndarray, outputs) -> None:
        gpu = self.gpu = executor.gpu
        n = len(ids)
        row_len = 2 * ceil_div(int(lengths.max()) + outputs.steps, 2)  # even: rows never share a word
        rows = np.zeros((n, row_len), np.uint16)
        rows[:, : ids.shape[1]] = ids
        self.prompts = gpu.storage_buffer(HEADER_BYTES + rows.nbytes, "generated rows")
        gpu.write_storage(self.prompts, np.array([n, row_len, 0, 0], np.uint32))
        gpu.write_storage(self.prompts, rows, HEADER_BYTES)
        self.lengths = gpu.storage_buffer(4 * n, "prompt lengths")
        gpu.write_storage(self.lengths, np.ascontiguousarray(lengths, np.uint32))
        self.outputs = outputs
        self.resources = executor.prepared.resources() | {
            "prompts": self.prompts,
            "lengths": self.lengths,
            "predictions": outputs.words,
            "logprobs": outputs.logprobs,
        }
        config = executor.config
        if n <= config.small_max or not config.tile_m:
            if executor.small_generator is None:
                executor.small_generator = gpu.program(*small_program_shape(executor))
            self.program = executor.small_generator
            self.groups = (1, n, 1)
            self.resources["scratch"] = executor.scratch
            self.resources["out_bytes"] = out_bytes(executor)
        else:
            # Rows stay with their group for every step: smaller tiles keep more of the GPU busy when few rows
            tile_m = max(4, min(config.tile_m, 1 << max(0, (n // TILES_WANTED).bit_length() - 1)))
            config = config.with_tile_m(tile_m)
            constants = tile_constants(executor.constants, config, IDS) | {"GENERATE": 1}
            constants = with_dispatch_steps(FUSED_TILES_GENERATE, constants, config.tile_threads)
            self.program = gpu.program(FUSED_TILES_GENERATE, constants, config.tile_threads)
            self.groups = grid(ceil_div(n, config.tile_m))

    def submit(self, first: int, last: int) -> None:
        """Steps first..last - 1, DISPATCH_STEPS a dispatch."""
        most = int(self.program.constants["DISPATCH_STEPS"])
        for begin in range(first, last, most):
            self.gpu.storage_barrier()  # the previous dispatch's ids are visible to this one
            end = min(begin + most, last)
            self.gpu.run(self.program, self.groups, **self.resources, first_step=begin, last_step=end)

    def close(self) -> None:
        self.gpu.release_storage(self.prompts)
        self.gpu.release_storage(self.lengths)
