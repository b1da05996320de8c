"""What every GPU executor of version 2 shares (docs/FORMATS.md §14.4): the model's tensors uploaded as their
raw bytes, `slots` sequences' float16 KV caches and token ids, a per-run buffer of rows — each (slot, position)
— the logits, and choosing tokens on the GPU (choose.py). A prefill appends positions of one slot; a decode
step runs one row per listed slot, each slot's pending token, and chooses the next: all steps queued, the
chosen ids and their log-probabilities read back once. A subclass supplies the forward over the rows."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import PxglError
from ...gl import Buffer, GLBackend
from ..meta import TransformerSpec
from ..numpy_executor import rope_frequencies
from ..operations import Operation, activation_widths, operations
from . import kernels as k
from .choose import Choice, Chooser, Chosen, check_step, is_integer, vocab_ids
from .loops import DISPATCH_LOOPS, ceil_div, plan_loops


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Prefill:
    """What a prefill gives back: the logits of its new rows (all, or the last; none read with targets), the
    GPU's prediction of each — the id (lowest on ties) and Σ exp(logit - top), whose inverse is the confidence
    — the pending token chosen (with a choice: one step, one row) and each row's log p of its target."""

    logits: np.ndarray
    ids: np.ndarray
    sums: np.ndarray
    chosen: Chosen | None = None
    targets: np.ndarray | None = None


@dataclass(frozen=True)
class Step:
    """One walk of the operations: `positions` rows (the rows buffer's (slot, position) pairs) in `buffers`, the
    logits of the last `logit_rows` of them, and `span`: the largest position + 1 among them."""

    buffers: dict[str, Buffer]
    positions: int
    logit_rows: int
    span: int


class GPUTransformer:
    """A version-2 model on the GPU with `slots` sequences. `length(slot)` positions are cached in each; a slot
    may hold a pending token (chosen, not yet run) at position length(slot)."""

    after_operation: Callable[[Operation, Step], None] | None = None
    """Called after each operation's barrier (reading activations)."""

    def __init__(
        self,
        gpu: GLBackend,
        spec: TransformerSpec,
        weight_bytes: bytes | np.ndarray,
        slots: int = 1,
        loop_budget: int = DISPATCH_LOOPS,
    ) -> None:
        self.gpu, self.spec, self.architecture = gpu, spec, spec.architecture
        a = self.architecture
        if slots < 1:
            raise PxglError(f"{slots} slots: give at least 1")
        self.slots, self.context = slots, a.context_length
        self.plan = plan_loops(a, loop_budget)
        self.operations = operations(a)
        self.widths = activation_widths(a)
        self.constants = k.kernel_constants(a.head_dim, self.plan.bounds)
        stream = np.frombuffer(weight_bytes, np.uint8) if isinstance(weight_bytes, bytes) else weight_bytes.reshape(-1)
        if len(stream) < max(t.offset + t.nbytes for t in spec.tensors.values()):
            raise PxglError(f"{len(stream):,} weight bytes: the spec's tensors run past them; read the model whole")
        binding = gpu.limits.max_storage_block_size
        self.row_words = ceil_div(a.kv_heads * a.head_dim, 2)
        layer_bytes = slots * a.context_length * self.row_words * 4
        if layer_bytes > binding:
            raise PxglError(
                f"KV cache: {slots} slots x {a.context_length} positions are {layer_bytes:,} bytes a layer, past "
                f"the {binding:,} one storage buffer of this GPU binds; use fewer slots"
            )
        self.tensors: dict[str, Buffer] = {}
        self.upload_tensors(stream)
        self.keys = [gpu.storage_buffer(layer_bytes, f"layer {layer}'s key cache") for layer in range(a.layers)]
        self.values = [gpu.storage_buffer(layer_bytes, f"layer {layer}'s value cache") for layer in range(a.layers)]
        self.cache_bytes = 2 * a.layers * layer_bytes
        self.tokens = gpu.storage_buffer(4 * slots * a.context_length, "token ids")
        self.rows = gpu.storage_buffer(8 * max(slots, a.context_length), "rows")
        table = np.zeros((a.context_length, max(1, a.head_dim // 2), 2), np.float32)
        if a.rope is not None:
            angles = np.arange(a.context_length, dtype=np.float64)[:, None] * rope_frequencies(a.rope, a.head_dim)
            table[..., 0], table[..., 1] = np.cos(angles), np.sin(angles)
        self.rope_table = self._buffer(table, "RoPE table")
        self.chooser = Chooser(
            gpu, a.vocab_size, a.context_length, self.constants, self.plan.argmax_segment, loop_budget
        )
        self._activations: dict[tuple[int, int], dict[str, Buffer]] = {}
        self._lengths = [0] * slots
        self._pending = [False] * slots

    def upload_tensors(self, stream: np.ndarray) -> None:
        """Every tensor into self.tensors as its raw bytes, one buffer each (an executor may lay them out its own
        way: docs/FORMATS.md §14.7)."""
        binding = self.gpu.limits.max_storage_block_size
        for name, t in self.spec.tensors.items():
            if t.nbytes > binding:
                raise PxglError(
                    f"tensor '{name}': {t.nbytes:,} bytes are past the {binding:,} one storage buffer of this GPU "
                    "binds; this executor does not split a tensor across buffers"
                )
            data = np.zeros(ceil_div(t.nbytes, 4) * 4, np.uint8)
            data[: t.nbytes] = stream[t.offset : t.offset + t.nbytes]
            self.tensors[name] = self._buffer(data, f"tensor '{name}'")

    def _buffer(self, data: np.ndarray, what: str) -> Buffer:
        buffer = self.gpu.storage_buffer(data.nbytes, what)
        self.gpu.write_storage(buffer, data)
        return buffer

    def activations(self, positions: int, logit_rows: int) -> dict[str, Buffer]:
        """Every activation's buffer with room for `positions` rows (logits: `logit_rows`), rounded up to a
        power of two and kept for later runs."""
        key = (min(next_pow2(positions), max(self.context, self.slots)), next_pow2(logit_rows))
        if key not in self._activations:
            rows = {name: key[1] if name == "logits" else key[0] for name in self.widths}
            self._activations[key] = {
                name: self.gpu.storage_buffer(4 * rows[name] * width, f"activation '{name}'")
                for name, width in self.widths.items()
            }
        return self._activations[key]

    # --- slots ------------------------------------------------------------------------------------
    def _check_slot(self, slot: int) -> None:
        if not is_integer(slot) or not 0 <= slot < self.slots:
            raise PxglError(f"slot {slot}: this executor holds slots 0..{self.slots - 1}")

    def length(self, slot: int = 0) -> int:
        """Positions cached in the slot (its pending token not counted)."""
        self._check_slot(slot)
        return self._lengths[slot]

    def pending(self, slot: int = 0) -> bool:
        self._check_slot(slot)
        return self._pending[slot]

    def truncate(self, slot: int, n: int) -> None:
        """Keep the slot's positions < n (a prefix reused; 0: a new sequence) and drop its pending token."""
        self._check_slot(slot)
        if not is_integer(n) or not 0 <= n <= self._lengths[slot]:
            raise PxglError(f"truncate slot {slot} to {n}: it holds {self._lengths[slot]} positions")
        self._lengths[slot], self._pending[slot] = n, False

    def _check_room(self, slot: int, new: int) -> None:
        if self._lengths[slot] + new > self.context:
            raise PxglError(
                f"slot {slot}: {self._lengths[slot]} cached + {new} new positions (a pending token and a chosen one "
                f"included): the context holds {self.context} positions"
            )

    # --- running ----------------------------------------------------------------------------------
    def forward(self, step: Step) -> None:
        """Every operation over the step's rows, their logits into buffers['logits']; a subclass's."""
        raise NotImplementedError

    def _run_rows(self, rows: np.ndarray, logit_rows: int) -> Step:
        self.gpu.write_storage(self.rows, rows.astype(np.int32))
        step = Step(self.activations(len(rows), logit_rows), len(rows), logit_rows, int(rows[:, 1].max()) + 1)
        self.forward(step)
        return step

    def prefill(
        self,
        slot: int,
        tokens: Sequence[int],
        choice: Choice | None = None,
        step: int = 0,
        all_logits: bool = False,
        targets: Sequence[int] | None = None,
    ) -> Prefill:
        """Append the slot's pending token (if any) and `tokens` at its next positions. Gives the logits and
        predictions of the tokens' rows (all, or the last); with `choice`, the next token is chosen on the GPU
        (draw step `step`) and kept pending; `targets` (one id per token): each row's log p of its target,
        computed on the GPU (the logits are then not read back)."""
        self._check_slot(slot)
        v = self.architecture.vocab_size
        ids = vocab_ids(tokens, v, f"slot {slot}")
        if len(ids) < 1:
            raise PxglError(f"slot {slot}: prefill needs at least 1 token")
        if choice is not None:
            choice.check()
            check_step(step, f"slot {slot}")
        pending = int(self._pending[slot])
        self._check_room(slot, pending + len(ids) + (choice is not None))
        wanted = None
        if targets is not None:
            wanted = vocab_ids(targets, v, f"slot {slot}'s targets")
            if len(wanted) != len(ids):
                raise PxglError(f"slot {slot}: {len(wanted)} targets for {len(ids)} tokens: give one a token")
        start, n = self._lengths[slot], len(ids)
        base = slot * self.context
        self.gpu.write_storage(self.tokens, ids.astype(np.int32), offset=4 * (base + start + pending))
        positions = np.arange(start, start + pending + n)
        rows = np.stack([np.full_like(positions, slot), positions], axis=1)
        logit_rows = n if all_logits or wanted is not None else 1
        run = self._run_rows(rows, logit_rows)
        self._lengths[slot], self._pending[slot] = start + pending + n, False
        logits_buffer = run.buffers["logits"]
        predictions = self.chooser.scratch("prefill predictions", 8 * logit_rows)
        self.chooser.argmax(logits_buffer, 0, logit_rows, predictions, 0)
        chosen = None
        if choice is not None:
            choosing = self.chooser.upload(choice.record(step)[None])
            out = self.chooser.outputs(1, 1, choice.top_logprobs)
            self.chooser.choose(logits_buffer, logit_rows - 1, [choice], choosing, self.rows, len(rows) - 1,
                                self.tokens, out, 0, choice.top_logprobs)  # fmt: skip
            chosen = self.chooser.read(out, 1, 1, choice.top_logprobs)
            self._pending[slot] = True
        scored = None if wanted is None else self.chooser.targets(logits_buffer, n, wanted)
        raw = np.frombuffer(self.gpu.read_storage(predictions, 8 * logit_rows), np.uint32).reshape(logit_rows, 2)
        logits = np.zeros((0, v), np.float32)
        if wanted is None:
            data = self.gpu.read_storage(logits_buffer, 4 * logit_rows * v)
            logits = np.frombuffer(data, np.float32).reshape(logit_rows, v).copy()
        return Prefill(logits, raw[:, 0].astype(np.int64), raw[:, 1].view(np.float32).copy(), chosen, scored)

    def decode(
        self, slots: Sequence[int], choices: Sequence[Choice], steps: Sequence[int] | None = None, count: int = 1
    ) -> Chosen:
        """`count` steps of every listed slot together: each step runs each slot's pending token (one row a
        slot, one forward) and chooses the next on the GPU (draw step steps[i] + s), kept pending. Read back
        once: ids and log p (count, len(slots)), and each choice's top_logprobs alternatives (the largest asked)."""
        listed = list(slots)
        for slot in listed:
            self._check_slot(slot)
        if not listed or len(set(listed)) != len(listed):
            raise PxglError(f"decode slots {listed}: give each slot once, at least one")
        if len(choices) != len(listed):
            raise PxglError(f"decode: {len(choices)} choices for {len(listed)} slots: give one a slot")
        starts = [0] * len(listed) if steps is None else [check_step(s, "decode") for s in steps]
        if not is_integer(count) or count < 1 or len(starts) != len(listed):
            raise PxglError(
                f"decode {count} steps of {len(listed)} slots from steps {starts}: give count ≥ 1, a step a slot"
            )
        for slot, choice in zip(listed, choices, strict=True):
            choice.check()
            if not self._pending[slot]:
                raise PxglError(f"slot {slot} has no pending token: prefill it with a choice first")
            self._check_room(slot, 1 + count)
        top_count = max(c.top_logprobs for c in choices)
        records = np.stack([c.record(s) for c, s in zip(choices, starts, strict=True)])
        choosing = self.chooser.upload(records)
        out = self.chooser.outputs(count, len(listed), top_count)
        slot_column = np.array(listed)
        for s in range(count):
            rows = np.stack([slot_column, np.array([self._lengths[i] + s for i in listed])], axis=1)
            run = self._run_rows(rows, len(listed))
            self.chooser.choose(run.buffers["logits"], 0, list(choices), choosing, self.rows, 0, self.tokens,
                                out, s, top_count)  # fmt: skip
        for slot in listed:
            self._lengths[slot] += count
        return self.chooser.read(out, count, len(listed), top_count)

    def reset(self) -> None:
        """Start slot 0 anew: its positions are overwritten from position 0."""
        self.truncate(0, 0)

    def run(self, tokens: Sequence[int], all_logits: bool = True) -> Prefill:
        """Slot 0's prefill: the logits of every new position (or the last) with the GPU's predictions."""
        return self.prefill(0, tokens, all_logits=all_logits)

    def generate(self, prompt: Sequence[int], steps: int) -> np.ndarray:
        """Greedy on slot 0: the prompt appended, then `steps` tokens, each chosen on the GPU and run by the
        next step without the host; the ids read at the end. The last stays pending (run by the next call)."""
        if steps < 1:
            raise PxglError(f"generate {steps} tokens: give at least 1")
        self._check_room(0, int(self.pending(0)) + len(prompt) + steps)
        first = self.prefill(0, prompt, choice=Choice())
        ids = [first.chosen.ids[0]]
        if steps > 1:
            ids.append(self.decode([0], [Choice()], [1], steps - 1).ids[:, 0])
        return np.concatenate(ids).astype(np.int64)

    def close(self) -> None:
        buffers = [*self.tensors.values(), *self.keys, *self.values, self.tokens, self.rows, self.rope_table]
        buffers += [b for group in self._activations.values() for b in group.values()]
        for buffer in buffers:
            self.gpu.release_storage(buffer)
        self.chooser.close()
        self.tensors.clear()
        self._activations.clear()
