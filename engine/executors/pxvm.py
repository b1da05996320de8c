"""Model B on the GPU: glsl/pxvm.comp interprets a validated pxVM program, one work group per prompt, in
dispatches that every driver finishes: segments of instructions, a long instruction in parts
(engine/pxvm/dispatch.py, docs/FORMATS.md §7.5).

tokens ─┐
weights ┼─▶ pxvm.comp (walks the program texture) ─▶ scratch (r32f, per prompt) ─▶ prediction
program ┘"""

from dataclasses import asdict, dataclass

import numpy as np

from ..constants import MAX_TILE, POISON_BYTE
from ..errors import PxglError
from ..gl import GLBackend, Texture
from ..kernel import DISPATCH_LOOPS, TOP1_SOFTMAX_SHARED, Constants, Image, Kernel, Sampler, Uniform, ceil_div
from ..pxvm.compiler import compile_program, scratch_layout
from ..pxvm.dispatch import VM_THREADS, plan
from ..pxvm.opcodes import HEADER_PIXELS, MAX_OPERANDS, OPERAND_PIXELS, OPS, OUTPUT_PIXELS, TENSOR_TABLES
from ..pxvm.validator import validate_program
from ..spec import ModelSpec
from .protocol import (
    POISON_FLOAT,
    ExecutorInputs,
    Trace,
    check_no_tuning,
    largest_pow2_group,
    model_constants,
    next_pow2,
    written_predictions,
)

PXVM = Kernel(
    "pxvm",
    (
        Sampler("weights"),
        Sampler("tokens"),
        Sampler("program"),
        Image("scratch", "r32f", read=True, write=True),
        Image("prediction_out", "rgba8ui", write=True),
        *(Uniform(name) for name in ("pc_begin", "pc_end", "item_begin", "item_end", "term_begin", "term_end")),
    ),
    shared=TOP1_SOFTMAX_SHARED,
    loops=lambda c, size: DISPATCH_LOOPS,  # each dispatch's part of the program: planned within it (plan)
)
SCRATCH_BUDGET = 1 << 26
"""Bytes of scratch image one tile may take (at least 16 prompts of the largest scratch, 2^20 floats)."""


def vm_constants(spec: ModelSpec, version: int) -> Constants:
    """The model's constants plus what the interpreter needs: opcodes by name, operand width, and the tensor
    table of the program's version by index (a tensor the model lacks: offset 0, scale 0)."""
    table = [spec.tensors.get(name) for name in TENSOR_TABLES[version]]
    return model_constants(spec) | {
        "MAX_OPERANDS": MAX_OPERANDS,
        "HEADER_PIXELS": HEADER_PIXELS,
        "OPERAND_PIXELS": OPERAND_PIXELS[version],
        "TENSOR_COUNT": len(table),
        "TENSOR_OFFSETS": tuple(t.offset if t else 0 for t in table),
        "TENSOR_SCALES": tuple(t.scale if t else 0.0 for t in table),
        "TENSOR_ZEROS": tuple(float(t.zero_point) if t else 0.0 for t in table),
        **{f"OP_{op.name}": op.code for op in OPS},
    }


@dataclass(frozen=True)
class VmTile:
    """The textures of one tile: room for `capacity` prompts."""

    capacity: int
    tokens: Texture
    scratch: Texture
    prediction: Texture


class PxvmExecutor:
    """Model B: runs a pxVM program (by default the model's compiled program) over tiles of prompts."""

    def __init__(self, gpu: GLBackend, inputs: ExecutorInputs, tuning: None = None) -> None:
        check_no_tuning("pxvm", tuning)
        spec, program = inputs.spec, inputs.program
        if program is None:
            program = validate_program(compile_program(spec), spec, "compiled program")
        if program.spec != spec:
            raise PxglError(f"{program.source}: the program was not validated for this model; validate it first")
        self.gpu, self.spec, self.weights, self.program = gpu, spec, inputs.weights, program
        limits = gpu.limits
        local_size = largest_pow2_group(gpu, VM_THREADS)
        self.vm = gpu.program(PXVM, vm_constants(spec, program.version), local_size)
        self.dispatches = plan(program, spec.context_window, local_size)
        self.program_texture = gpu.uint_texture(program.pixels, f"{program.source}: program texture")
        # A power of two wide, so the interpreter finds an address's pixel with a shift and a mask.
        self.scratch_width = min(next_pow2(program.scratch_size), 1 << (limits.max_texture_size.bit_length() - 1))
        self.scratch_rows = ceil_div(program.scratch_size, self.scratch_width)
        prompt_bytes = self.scratch_rows * self.scratch_width * 4
        self.max_tile = min(
            MAX_TILE,
            limits.max_texture_size // self.scratch_rows,
            limits.max_work_group_count[0],
            SCRATCH_BUDGET // prompt_bytes,
        )
        compiled = compile_program(spec)
        self.layout = scratch_layout(spec) if np.array_equal(compiled, program.pixels) else None
        """Where embed/hidden/logits sit in scratch, known only for the model's own compiled program."""
        self._tiles: dict[int, VmTile] = {}

    def tile(self, n: int) -> VmTile:
        capacity = min(next_pow2(n), self.max_tile)
        if capacity not in self._tiles:
            gpu = self.gpu
            self._tiles[capacity] = VmTile(
                capacity,
                tokens=gpu.uint_texture_empty(self.spec.context_window, capacity, 3, "token texture"),
                scratch=gpu.float_image(self.scratch_width, capacity * self.scratch_rows, "pxVM scratch"),
                prediction=gpu.rgba8ui_image(OUTPUT_PIXELS, capacity, "prediction"),
            )
            self._poison(self._tiles[capacity])
        return self._tiles[capacity]

    def _poison(self, tile: VmTile) -> None:
        scratch = tile.scratch
        self.gpu.write(scratch, np.full((scratch.height, scratch.width), POISON_FLOAT, dtype=np.float32))
        self.gpu.write(tile.prediction, np.full((tile.capacity, OUTPUT_PIXELS, 4), POISON_BYTE, dtype=np.uint8))

    def poison(self) -> None:
        for tile in self._tiles.values():
            self._poison(tile)

    def close(self) -> None:
        for tile in self._tiles.values():
            for texture in (tile.tokens, tile.scratch, tile.prediction):
                texture.release()
        self._tiles.clear()
        self.program_texture.release()

    def _forward(self, tails: np.ndarray) -> VmTile:
        n = len(tails)
        if n > self.max_tile:
            raise PxglError(f"pxVM: {n} prompts in one run; this GPU takes at most {self.max_tile}")
        tile = self.tile(n)
        self.gpu.write(tile.tokens, tails)
        self.dispatch(n, tile.tokens, tile)
        return tile

    def dispatch(self, n: int, tokens: Texture, tile: VmTile) -> None:
        """Run the program over n prompts of `tokens`, dispatch by dispatch, into the tile."""
        for part in self.dispatches:
            self.gpu.run(
                self.vm,
                (n, 1, 1),
                weights=self.weights,
                tokens=tokens,
                program=self.program_texture,
                scratch=tile.scratch,
                prediction_out=tile.prediction,
                **asdict(part),
            )
            self.gpu.barrier()

    def run(self, tails: np.ndarray) -> np.ndarray:
        tile = self._forward(tails)
        return written_predictions(self.gpu.read_uint8(tile.prediction)[: len(tails)])[:, 0]

    def run_with_scratch(self, tails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) prediction pixels and (n, scratch_size) float32: each prompt's scratch after the run."""
        tile, n = self._forward(tails), len(tails)
        image = self.gpu.read_float(tile.scratch)
        scratch = image[: n * self.scratch_rows].reshape(n, -1)[:, : self.program.scratch_size]
        return written_predictions(self.gpu.read_uint8(tile.prediction)[:n])[:, 0], scratch

    def trace(self, tails: np.ndarray) -> Trace:
        prediction, scratch = self.run_with_scratch(tails)
        n, s = len(tails), self.layout
        tokens = self.gpu.read_uint8(self.tile(n).tokens)[:n]
        if s is None:
            return Trace(tokens, None, None, None, prediction[:, None, :])
        side, vocab = self.spec.logits_side, self.spec.vocab_size
        logits = np.full((n, side * side), np.nan, dtype=np.float32)
        logits[:, :vocab] = scratch[:, s.logits : s.logits + vocab]
        return Trace(
            tokens=tokens,
            context=scratch[:, s.context : s.context + self.spec.context_dim],
            hidden=tuple(scratch[:, at : at + width] for at, width in zip(s.hidden, self.spec.hidden, strict=True)),
            logits=logits.reshape(n, side, side),
            prediction=prediction[:, None, :],
        )
