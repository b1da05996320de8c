"""The pxvm executor of version 2 (Model B, docs/FORMATS.md §7.7): a validated version-2 program interpreted on
the GPU by glsl/pxvm_tf.comp, one instruction a dispatch (ATTEND and PREDICT two or three), over the model's
raw weight bytes in one storage buffer and a float16 KV cache of its own. The host walks the program only to
size each dispatch's grid and to choose its rows; what each instruction computes the shader reads from the
program. Greedy generation: each step's PREDICT writes its id as the next position's token on the GPU."""

from collections.abc import Sequence

import numpy as np

from ...errors import PxglError
from ...gl import Buffer, GLBackend, GpuProgram
from ...kernel import DISPATCH_LOOPS, Constants
from ..gpu import Choice, Prefill
from ..gpu.loops import GROUP, ceil_div
from ..meta import TransformerSpec
from ..numpy_executor import rope_frequencies
from .compiler import compile_transformer
from .kernels import PXVM_TF, UNIFORMS, variant_constant
from .loops import QUANT_CODES, TILE, shader_constants
from .opcodes import OPS, TENSORS
from .program import Instruction, TransformerProgram
from .validator import validate_transformer_program

MAX_GROUPS = 65535
"""Work groups GL guarantees on each axis; longer grids fold into a second one."""
ATTEND_SCRATCH = 1 << 23
"""Floats of attention partials one dispatch writes at most; a long prefill's queries run in blocks."""


def folded(groups: int) -> tuple[int, int, int]:
    x = min(groups, MAX_GROUPS)
    return x, ceil_div(groups, x), 1


ELEMENTS = {
    "EMBED": lambda ins, a: ins["width"],
    "ADD_POSITION": lambda ins, a: ins["width"],
    "ADD_VECTOR": lambda ins, a: ins["length"],
    "GELU_TANH": lambda ins, a: ins["length"],
    "GELU": lambda ins, a: ins["length"],
    "SILU_GATE": lambda ins, a: ins["length"],
    "ADD": lambda ins, a: ins["length"],
    "ROPE": lambda ins, a: ins["heads"] * (a.head_dim // 2),
}
"""Elements a row of each one-invocation-an-element opcode computes."""


def tensor_table(spec: TransformerSpec) -> np.ndarray:
    """Per version-2 tensor index: byte offset, quantization code, u8 scale and zero point (float bits)."""
    table = np.zeros((len(TENSORS), 4), np.uint32)
    for index, name in enumerate(TENSORS):
        if (t := spec.tensors.get(name)) is not None:
            floats = np.array([t.scale, float(t.zero_point)], np.float32).view(np.uint32)
            table[index] = (t.offset, QUANT_CODES[t.quant], *floats)
    return table


def check_greedy(choice: Choice) -> None:
    """docs/FORMATS.md §11: pxvm generates greedily, with no alternatives; anything else names the executors
    that choose otherwise."""
    choice.check()
    asked = [
        f"{name} {value:g}"
        for name, value, greedy in (
            ("temperature", choice.temperature, 0),
            ("top_logprobs", choice.top_logprobs, 0),
            ("repetition_penalty", choice.repetition_penalty, 1),
        )
        if value != greedy
    ]
    if asked:
        raise PxglError(
            f"pxvm generates greedily (each prediction's id is the next token): {', '.join(asked)} "
            f"need{'s' if len(asked) == 1 else ''} the passes or fused executor (-x passes)"
        )


class PxvmTransformer:
    """One version-2 model's program on the GPU with one sequence's KV cache: `run` appends positions and
    gives their logits and predictions, `generate` a prompt and greedy tokens (the passes executor's API)."""

    def __init__(
        self,
        gpu: GLBackend,
        spec: TransformerSpec,
        weight_bytes: bytes | np.ndarray,
        program: TransformerProgram | None = None,
        loop_budget: int = DISPATCH_LOOPS,
    ) -> None:
        a = spec.architecture
        if program is None:
            program = validate_transformer_program(compile_transformer(a), spec, "compiled program")
        if program.spec is not spec:
            raise PxglError(f"{program.source}: the program was not validated for this model; validate it first")
        self.gpu, self.spec, self.architecture, self.program = gpu, spec, a, program
        constants, self.attend_segment, self.predict_segment = shader_constants(a, loop_budget)
        self.row_words = ceil_div(a.kv_heads * a.head_dim, 2)
        model = {
            **{f"OP_{op.name}": op.code for op in OPS},
            "HEADS": a.heads,
            "KV_HEADS": a.kv_heads,
            "HEAD_DIM": a.head_dim,
            "KV_WIDTH": a.kv_heads * a.head_dim,
            "ROW_WORDS": self.row_words,
            "CONTEXT": a.context_length,
            "NORM_EPS": float(a.norm_eps),
            "ATTENTION_SCALE": float(a.attention_scale),
            "ROPE_PAIRS": int(a.rope is not None and a.rope.rotation == "pairs"),
        }
        self.constants = constants | model
        self._variants: dict[tuple[str, int], GpuProgram] = {}
        binding = gpu.limits.max_storage_block_size
        stream = np.frombuffer(weight_bytes, np.uint8) if isinstance(weight_bytes, bytes) else weight_bytes.reshape(-1)
        end = max(t.offset + t.nbytes for t in spec.tensors.values())
        cache_bytes = a.layers * a.context_length * self.row_words * 4
        self.cache_bytes = 2 * cache_bytes
        for what, size in (("the weight stream", end), ("a layer-stacked KV cache", cache_bytes)):
            if size > binding:
                raise PxglError(
                    f"pxvm: {what} is {size:,} bytes, past the {binding:,} one storage buffer of this GPU binds; "
                    "use the passes executor for this model"
                )
        self.row_floats = program.row_floats
        self.max_rows = min(a.context_length, binding // (4 * self.row_floats))
        if self.max_rows < 1:
            raise PxglError(
                f"pxvm: a row of {self.row_floats:,} floats is past one storage buffer of this GPU; use passes"
            )
        weights = np.zeros(ceil_div(end, 4) * 4, np.uint8)
        weights[:end] = stream[:end]
        flat = program.pixels.reshape(-1, 3).astype(np.uint32)
        self.buffers: dict[str, Buffer] = {
            "weights": self._buffer(weights, "weight stream"),
            "table": self._buffer(tensor_table(spec), "tensor table"),
            "program": self._buffer(flat[:, 0] | flat[:, 1] << 8 | flat[:, 2] << 16, "program"),
            "keys": gpu.storage_buffer(cache_bytes, "key cache"),
            "values": gpu.storage_buffer(cache_bytes, "value cache"),
            "tokens": gpu.storage_buffer(4 * a.context_length, "token ids"),
            "rope_table": self._buffer(self._rope_table(), "RoPE table"),
        }
        self.logits_at = next(ins["src"] for ins in program.instructions if ins.op.name == "PREDICT")
        self._grown: dict[str, Buffer] = {}
        self.length = 0
        """Positions held in the cache."""

    def _rope_table(self) -> np.ndarray:
        a = self.architecture
        table = np.zeros((a.context_length, max(1, a.head_dim // 2), 2), np.float32)
        if a.rope is not None:
            angles = np.arange(a.context_length, dtype=np.float64)[:, None] * rope_frequencies(a.rope, a.head_dim)
            table[..., 0], table[..., 1] = np.cos(angles), np.sin(angles)
        return table

    def _buffer(self, data: np.ndarray, what: str) -> Buffer:
        buffer = self.gpu.storage_buffer(data.nbytes, what)
        self.gpu.write_storage(buffer, data)
        return buffer

    def _scratch(self, what: str, size: int) -> Buffer:
        """A buffer of at least `size` bytes, grown when a run needs more."""
        if what not in self._grown or self._grown[what].size < size:
            if what in self._grown:
                self.gpu.release_storage(self._grown[what])
            self._grown[what] = self.gpu.storage_buffer(size, f"pxvm {what}")
        return self._grown[what]

    def reset(self) -> None:
        self.length = 0

    def _check_tokens(self, ids: np.ndarray, steps: int = 0) -> None:
        a = self.architecture
        if not 1 <= len(ids) <= a.context_length - self.length - steps:
            raise PxglError(
                f"{self.length} cached + {len(ids)} new + {steps} generated tokens: the context holds "
                f"{a.context_length} positions"
            )
        if ids.min() < 0 or ids.max() >= a.vocab_size:
            raise PxglError(f"token ids must lie in 0..{a.vocab_size - 1}")

    def run(self, tokens: Sequence[int], all_logits: bool = True) -> Prefill:
        """Positions length.. of the tokens through the program, in pieces of at most max_rows rows; the logits
        and predictions of every new position (or the last); the cache grows by len(tokens)."""
        ids = np.asarray(tokens, dtype=np.int64)
        self._check_tokens(ids)
        self.gpu.write_storage(self.buffers["tokens"], ids.astype(np.int32), offset=4 * self.length)
        pieces = []
        for first in range(0, len(ids), self.max_rows):
            n = min(self.max_rows, len(ids) - first)
            predicted = n if all_logits else int(first + n == len(ids))
            if predicted:
                pieces.append(self._read(self._forward(n, predicted, token_at=-1), n, predicted))
            else:
                self._forward(n, 1, token_at=-1)
            self.length += n
        logits, ids_out, sums = (np.concatenate(part) for part in zip(*pieces, strict=True))
        return Prefill(logits, ids_out, sums)

    def _read(self, act: Buffer, n: int, predicted: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v, s = self.architecture.vocab_size, self.row_floats
        rows = np.frombuffer(self.gpu.read_storage(act, 4 * n * s), np.float32).reshape(n, s)
        logits = rows[n - predicted :, self.logits_at : self.logits_at + v].copy()
        words = np.frombuffer(self.gpu.read_storage(self._grown["predictions"], 8 * predicted), np.uint32)
        words = words.reshape(predicted, 2)
        return logits, words[:, 0].astype(np.int64), words[:, 1].view(np.float32).copy()

    def generate(self, prompt: Sequence[int], steps: int, choice: Choice | None = None) -> np.ndarray:
        """Greedy: the prompt appended, then `steps` tokens each the argmax of the position before it, chosen
        and written as the next token on the GPU; the host reads them at the end. A `choice` other than greedy
        without alternatives is refused (§11: pxvm keeps no logits to draw from)."""
        if choice is not None:
            check_greedy(choice)
        ids = np.asarray(prompt, dtype=np.int64)
        if steps < 1:
            raise PxglError(f"generate {steps} tokens: give at least 1")
        self._check_tokens(ids, steps)
        start = self.length
        self.gpu.write_storage(self.buffers["tokens"], ids.astype(np.int32), offset=4 * start)
        for first in range(0, len(ids), self.max_rows):
            n = min(self.max_rows, len(ids) - first)
            self._forward(n, 1, token_at=start + len(ids) if first + n == len(ids) else -1)
            self.length += n
        for _ in range(steps - 1):
            self._forward(1, 1, token_at=self.length + 1)
            self.length += 1
        chosen = self.gpu.read_storage(self.buffers["tokens"], 4 * steps, offset=4 * (start + len(ids)))
        return np.frombuffer(chosen, np.int32).astype(np.int64)

    # --- the interpreter ------------------------------------------------------------------------------
    def _forward(self, n: int, predicted: int, token_at: int) -> Buffer:
        """Every instruction over rows length .. length + n - 1 (LAST ones over the last `predicted`)."""
        act = self._scratch("activations", 4 * n * self.row_floats)
        self._scratch("predictions", 8 * predicted)
        for ins in self.program.instructions[:-1]:  # HALT last
            rows, row0 = (predicted, n - predicted) if ins.last else (n, 0)
            for groups, uniforms in self._dispatches(ins, rows):
                self._dispatch(ins, groups, act, rows, row0, token_at, **uniforms)
                self.gpu.barrier()
        return act

    def _variant(self, name: str, phase: int) -> GpuProgram:
        """glsl/pxvm_tf.comp compiled for one (opcode, phase), the first time the program needs it."""
        key = (name, phase)
        if key not in self._variants:
            constants = self.constants | Constants({"VARIANT": variant_constant(name, phase)})
            self._variants[key] = self.gpu.program(PXVM_TF, constants, GROUP)
        return self._variants[key]

    def _dispatch(
        self,
        ins: Instruction,
        groups: tuple[int, int, int],
        act: Buffer,
        rows: int,
        row0: int,
        token_at: int,
        **given: int,
    ) -> None:
        phase = given.pop("phase", 0)
        uniforms = dict.fromkeys(UNIFORMS, 0) | {"pc": ins.pixel, "rows": rows, "row0": row0, "start": self.length}
        uniforms |= {"row_floats": self.row_floats, "groups_x": groups[0], "token_at": token_at} | given
        buffers = self.buffers | {
            "act": act,
            "partial": self._scratch("partial", 4),
            "predictions": self._grown["predictions"],
        }
        self.gpu.run(self._variant(ins.op.name, phase), groups, **buffers, **uniforms)

    def _dispatches(self, ins: Instruction, rows: int) -> list[tuple[tuple[int, int, int], dict[str, int]]]:
        """(grid, uniforms) of each dispatch one instruction takes."""
        a, name = self.architecture, ins.op.name
        if name in ELEMENTS:
            return [(folded(ceil_div(rows * ELEMENTS[name](ins, a), GROUP)), {})]
        if name in ("LAYERNORM", "RMSNORM"):
            return [((rows, 1, 1), {})]
        if name == "MATVEC":
            x, y, _ = folded(ins["out_len"])
            return [((x, y, ceil_div(rows, TILE)), {})]
        if name == "ATTEND":
            return self._attend(rows)
        if name == "PREDICT":
            segment = self.predict_segment
            segments = ceil_div(a.vocab_size, segment)
            self._scratch("partial", 12 * rows * segments)
            split = {"segment": segment, "segments": segments}
            return [((segments, rows, 1), split | {"phase": 0}), ((rows, 1, 1), split | {"phase": 1})]
        raise AssertionError(f"no grid for {name}")  # every opcode but HALT has one above

    def _attend(self, rows: int) -> list[tuple[tuple[int, int, int], dict[str, int]]]:
        a = self.architecture
        segment = self.attend_segment
        segments = ceil_div(self.length + rows, segment)
        per_query = a.heads * segments * (a.head_dim + 2)
        block = max(1, min(rows, ATTEND_SCRATCH // per_query))
        self._scratch("partial", 4 * block * per_query)
        listed = [(folded(ceil_div(rows * self.row_words, GROUP)), {"phase": 0})]
        for first in range(0, rows, block):
            count = min(block, rows - first)
            split = {"segment": segment, "segments": segments, "first_query": first}
            listed += [((segments, a.heads, count), split | {"phase": 1}), ((a.heads, count, 1), split | {"phase": 2})]
        return listed

    def close(self) -> None:
        for buffer in [*self.buffers.values(), *self._grown.values()]:
            self.gpu.release_storage(buffer)
        self.buffers.clear()
        self._grown.clear()
