"""The fused executor: the whole forward pass (docs/FORMATS.md §3) in one compute dispatch per run.

Once, at load, glsl/fused_prepare.comp folds the embedding into the hidden layer, P = embed · hidden (the
layer is linear before its ReLU, so mean(embed[t]) · hidden = mean(P[t])), and dequantizes the output
layer and biases into float storage buffers. Then each run is one dispatch of

    fused_small   few prompts, the single-prompt path: work groups over vocabulary slices, merged on the GPU
    fused_tiles   batches: TILE_M prompts a work group, register tiles of logits, fused online softmax

so logits never reach memory. Prompts arrive as token-texture rows (the Executor protocol) or as uint16
ids (the engine's lean paths). Few prompts travel through persistent mapped buffers and a fence: no
rebinding, no uniform, no glFinish, no readback call; batches through ordinary storage buffers."""

import math
import struct
from dataclasses import dataclass, replace

import numpy as np

from engine.errors import PxglError
from engine.executor import Trace, ceil_div, model_constants, next_pow2
from engine.gl import Buffer, GLBackend, MappedBuffer, Shader, Texture
from engine.spec import ModelSpec

HEADER_BYTES = 16
"""Prompts: [n, row_len, 0, 0]; predictions: [error_at, 0, 0, 0] (glsl/fused_common.glsl)."""
NO_ERROR = 0xFFFFFFFF
PREPARE_GROUP = 64
MAX_GROUPS_PER_AXIS = 65535
"""GL guarantees this many work groups on each axis; bigger grids fold into a second axis."""
MAX_TILE = 1 << 20
"""Prompts per run at most: the largest batch the bench times; buffers grow to it only when used."""
POISON_BYTE = 0xEE
PIXELS, IDS = "pixels", "ids"


@dataclass(frozen=True)
class FusedConfig:
    """Work shapes of the two kernels (bench/variants/sweep.py times the alternatives)."""

    tile_m: int = 64
    """Prompts per work group of fused_tiles (shrunk until its hidden units fit shared memory)."""
    tm: int = 8
    """Prompts per thread (a multiple of 4)."""
    tn: int = 8
    """Consecutive vocabulary columns per thread (a multiple of 4)."""
    tile_n: int = 64
    """Columns a work group sweeps per step."""
    small_threads: int = 256
    split: int = 8
    """Vocabulary slices (work groups) per prompt in fused_small."""
    small_max: int = 64
    """Runs of up to this many prompts use fused_small and the mapped buffers."""

    def fitted(self, gpu: GLBackend, spec: ModelSpec) -> "FusedConfig":
        """This configuration shrunk to the GPU's limits; tile_m 0 when no tile fits shared memory."""
        for name in ("tm", "tn"):
            if getattr(self, name) % 4:
                raise ValueError(f"{name} must be a multiple of 4")
        limits = gpu.limits
        small_threads = min(self.small_threads, limits.max_work_group_invocations, limits.max_work_group_size[0])
        tile_m, tm = self.tile_m, self.tm
        while tile_m >= 4 and tile_pool_vec4(spec, tile_m, self.tile_n // self.tn) * 16 > limits.max_shared_memory:
            tile_m //= 2
            tm = min(tm, tile_m)
        threads = (tile_m // max(tm, 1)) * (self.tile_n // self.tn)
        if tile_m < 4 or threads > limits.max_work_group_invocations or threads > limits.max_work_group_size[0]:
            tile_m = 0
        return replace(self, tile_m=tile_m, tm=tm, small_threads=small_threads)


def tile_pool_vec4(spec: ModelSpec, tile_m: int, row_threads: int) -> int:
    """Shared vec4s of fused_tiles: the hidden units of a tile, later reused for the threads' states."""
    return max(spec.hidden_dim * tile_m // 4, tile_m * row_threads)


def kernel_constants(spec: ModelSpec, config: FusedConfig) -> dict[str, int | float]:
    pad = math.lcm(4 * config.split, config.tile_n if config.tile_m else 4)
    constants = model_constants(spec) | {
        "VOCAB_PAD": ceil_div(spec.vocab_size, pad) * pad,
        "PREPARE_GROUP": PREPARE_GROUP,
        "SMALL_THREADS": config.small_threads,
        "SPLIT": config.split,
        "SMALL_MAX": config.small_max,
    }
    if config.tile_m:
        row_threads = config.tile_n // config.tn
        constants |= {
            "TILE_M": config.tile_m,
            "TM": config.tm,
            "TN": config.tn,
            "TILE_N": config.tile_n,
            "TILE_THREADS": (config.tile_m // config.tm) * row_threads,
            "POOL_VEC4": tile_pool_vec4(spec, config.tile_m, row_threads),
        }
    return constants


def grid(groups: int) -> tuple[int, int, int]:
    """`groups` work groups as an (x, y, 1) grid within the per-axis limit (shaders flatten x + y * nx)."""
    x = min(groups, MAX_GROUPS_PER_AXIS)
    return x, ceil_div(groups, x), 1


@dataclass(frozen=True)
class PreparedWeights:
    pooled_hidden: Buffer
    out_weights: Buffer
    biases: Buffer


def prepare_weights(gpu: GLBackend, spec: ModelSpec, weights: Texture, constants: dict) -> PreparedWeights:
    vocab_pad, hidden = int(constants["VOCAB_PAD"]), spec.hidden_dim
    prepared = PreparedWeights(
        pooled_hidden=gpu.storage_buffer(4 * spec.vocab_size * hidden, "P = embed · hidden"),
        out_weights=gpu.storage_buffer(4 * hidden * vocab_pad, "output weights"),
        biases=gpu.storage_buffer(4 * (hidden + vocab_pad), "biases"),
    )
    gpu.bind_texture(weights, 0)
    gpu.use_storage(prepared, (prepared.pooled_hidden, prepared.out_weights, prepared.biases))
    total = spec.vocab_size * hidden + hidden * vocab_pad + hidden + vocab_pad
    gpu.dispatch(gpu.compile("fused_prepare", constants), grid(ceil_div(total, PREPARE_GROUP)), "fused_prepare")
    gpu.storage_barrier()
    return prepared


@dataclass(frozen=True)
class BatchIO:
    """Storage buffers for runs of up to `capacity` prompts; the object is also their binding owner."""

    capacity: int
    prompts: Buffer
    predictions: Buffer


@dataclass(frozen=True)
class MappedIO:
    """Mapped buffers for runs of up to small_max prompts: written and read in place by the host."""

    prompts: MappedBuffer
    predictions: MappedBuffer
    status: np.ndarray
    """(1,) uint32 view of error_at."""
    pixels: np.ndarray
    """(small_max, 4) uint8 view of the prediction words."""


class FusedExecutor:
    """Model A's forward pass fused into one dispatch: weights prepared once, logits kept in registers."""

    def __init__(self, gpu: GLBackend, spec: ModelSpec, weights: Texture, config: FusedConfig | None = None) -> None:
        self.gpu, self.spec = gpu, spec
        self.config = (config or FusedConfig()).fitted(gpu, spec)
        self.constants = kernel_constants(spec, self.config)
        self.prepared = prepare_weights(gpu, spec, weights, self.constants)
        window = spec.context_window
        self.row_bytes = {PIXELS: 3 * window, IDS: 2 * window}
        """Bytes per prompt row at most, for each prompt layout."""
        small = self.config.small_max
        self.scratch = gpu.storage_buffer(16 * ceil_div(4 * small, 16) + 16 * small * self.config.split, "scratch")
        self.scratch.write(np.zeros(small, np.uint32))
        per_prompt = max(self.row_bytes.values())
        by_storage = (gpu.limits.max_storage_block_size - HEADER_BYTES) // per_prompt
        self.max_tile = min(MAX_TILE, by_storage, MAX_GROUPS_PER_AXIS * small)
        if self.config.tile_m:
            self.max_tile = min(self.max_tile, MAX_GROUPS_PER_AXIS**2 * self.config.tile_m)
        else:
            self.max_tile = min(self.max_tile, small)
        self._batches: dict[int, BatchIO] = {}
        self._mapped = self._mapped_io()
        self._one_rows: dict[int, struct.Struct] = {}

    # --- the Executor protocol ---------------------------------------------------------------------
    def run(self, tails: np.ndarray) -> np.ndarray:
        """(n, context_window, 3) validated token rows → (n, 3) prediction pixels."""
        pixels, bad = self._run(np.ascontiguousarray(tails, dtype=np.uint8), tails.shape[1], PIXELS)
        if bad is not None:
            row, position = divmod(bad, tails.shape[1])
            raise PxglError(f"prompt {row}, position {position}: token id ≥ vocab size {self.spec.vocab_size}")
        return pixels

    def trace(self, tails: np.ndarray) -> Trace:
        """The fused pass keeps no intermediate in memory: only the tokens and predictions to show."""
        prediction = self.run(tails)[:, None, :]
        return Trace(tokens=np.array(tails), embed=None, hidden=None, logits=None, prediction=prediction)

    def poison(self) -> None:
        self._mapped.pixels[:] = POISON_BYTE
        for io in self._batches.values():
            io.predictions.write(np.full(4 * io.capacity, POISON_BYTE, np.uint8), offset=HEADER_BYTES)

    # --- lean paths (engine.Engine.predict_one / predict_array) -----------------------------------
    def run_ids(self, ids: np.ndarray) -> tuple[np.ndarray, int | None]:
        """(n, L ≤ context_window) uint16 ids → (n, 3) prediction pixels, and the flat index of the first
        id ≥ vocab_size (found on the GPU while it reads them; the pixels are then void) or None."""
        return self._run(np.ascontiguousarray(ids, dtype=np.uint16), ids.shape[1], IDS)

    def run_one(self, ids: list[int]) -> np.ndarray:
        """One prompt's last ≤ context_window ids (already checked: 0 ≤ id < vocab_size) → (3,) pixel."""
        row = self._one_rows.get(len(ids))
        if row is None:
            row = self._one_rows[len(ids)] = struct.Struct(f"<4I{len(ids)}H")
        io = self._mapped
        row.pack_into(io.prompts.view, 0, 1, len(ids), 0, 0, *ids)
        io.status[0] = NO_ERROR
        self._dispatch_small(1, IDS)
        self.gpu.wait_for_gpu()
        if io.status[0] != NO_ERROR:
            raise PxglError(f"prompt, position {int(io.status[0])}: token id ≥ vocab size {self.spec.vocab_size}")
        return io.pixels[0, :3].copy()

    # --- runs --------------------------------------------------------------------------------------
    def _run(self, rows: np.ndarray, row_len: int, layout: str) -> tuple[np.ndarray, int | None]:
        n = len(rows)
        if n > self.max_tile:
            raise PxglError(f"fused executor: {n} prompts in one run, at most {self.max_tile}")
        header = np.array([n, row_len, 0, 0], np.uint32)
        if n <= self.config.small_max:
            io = self._mapped
            io.prompts.view[:HEADER_BYTES] = header.view(np.uint8)
            io.prompts.view[HEADER_BYTES : HEADER_BYTES + rows.nbytes] = rows.reshape(-1).view(np.uint8)
            io.status[0] = NO_ERROR
            self._dispatch_small(n, layout)
            self.gpu.wait_for_gpu()
            status, pixels = int(io.status[0]), io.pixels[:n, :3].copy()
        else:
            batch = self._batch_io(n)
            batch.prompts.write(header)
            batch.prompts.write(rows, offset=HEADER_BYTES)
            batch.predictions.write(np.array([NO_ERROR], np.uint32))
            self.gpu.use_storage(batch, (*self._weights(), batch.prompts, batch.predictions, self.scratch))
            tiles = ceil_div(n, self.config.tile_m)
            self.gpu.dispatch(self._kernel("fused_tiles", layout), grid(tiles), "fused_tiles")
            self.gpu.storage_barrier()
            words = np.frombuffer(batch.predictions.read(HEADER_BYTES + 4 * n), np.uint32)
            status, pixels = int(words[0]), words[HEADER_BYTES // 4 :].view(np.uint8).reshape(n, 4)[:, :3]
        return pixels, None if status == NO_ERROR else status

    def _dispatch_small(self, n: int, layout: str) -> None:
        io = self._mapped
        self.gpu.use_storage(io, (*self._weights(), io.prompts.buffer, io.predictions.buffer, self.scratch))
        self.gpu.dispatch(self._kernel("fused_small", layout), (self.config.split, n, 1), "fused_small")
        self.gpu.storage_barrier()

    def _weights(self) -> tuple[Buffer, Buffer, Buffer]:
        p = self.prepared
        return p.pooled_hidden, p.out_weights, p.biases

    def _kernel(self, name: str, layout: str) -> Shader:
        return self.gpu.compile(name, self.constants | {"PROMPTS_AS_PIXELS": int(layout == PIXELS)})

    def _mapped_io(self) -> MappedIO:
        small = self.config.small_max
        prompts = self.gpu.mapped_buffer(HEADER_BYTES + small * max(self.row_bytes.values()), "prompts (mapped)")
        predictions = self.gpu.mapped_buffer(HEADER_BYTES + 4 * small, "predictions (mapped)")
        status = predictions.view[:4].view(np.uint32)
        pixels = predictions.view[HEADER_BYTES:].reshape(small, 4)
        pixels[:] = POISON_BYTE
        return MappedIO(prompts, predictions, status, pixels)

    def _batch_io(self, n: int) -> BatchIO:
        capacity = min(next_pow2(n), self.max_tile)
        if capacity not in self._batches:
            per_prompt = max(self.row_bytes.values())
            prompts = self.gpu.storage_buffer(HEADER_BYTES + 4 * ceil_div(capacity * per_prompt, 4), "prompts")
            predictions = self.gpu.storage_buffer(HEADER_BYTES + 4 * capacity, "predictions")
            self._batches[capacity] = BatchIO(capacity, prompts, predictions)
            predictions.write(np.full(4 * capacity, POISON_BYTE, np.uint8), offset=HEADER_BYTES)
        return self._batches[capacity]
