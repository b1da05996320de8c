"""Choosing tokens on the GPU (docs/FORMATS.md §11) for the version-2 executors: greedy, sampled (temperature,
top-k, top-p, the counter-based draw), a repetition penalty, each chosen token's log p and its likeliest
alternatives, and evaluation's log p of given targets — over logits rows already on the GPU, the chosen id
written as its slot's pending token, nothing read back until the caller reads the outputs.

A cut (top-k, then top-p) finds the rank key of the last kept token a 4-bit digit at a time: each pass counts
(or weighs) the tokens whose key agrees with the digits fixed so far, binned by the next digit, in segments of
the vocabulary (tf_choose_bins), and one work group a row fixes the digit (tf_choose_cut). Every kernel stays
within the loop limit at every vocabulary up to 2^24 (loops.py plan_choose)."""

from dataclasses import dataclass

import numpy as np

from ...errors import PxglError
from ...gl import Buffer, GLBackend
from ...kernel import Constants, Kernel, Shared, Storage
from .kernels import ARGMAX, ARGMAX_MERGE, uniforms
from .loops import CHOOSE_LOOPS, DIGITS, GROUP, TOP_MAX, ceil_div, plan_choose
from .scratch import Scratches

ROW_WORDS = 16
"""Words of glsl/tf_choose.glsl's per-row record: the choice (8), then the cut's state (8)."""
MAX_PENALTY = 10.0
FLOAT32_MAX = float(np.finfo(np.float32).max)
INT32_MAX = (1 << 31) - 1
"""top_k's word is read as a GLSL int; past the vocabulary it keeps every token."""
UINT32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class Choice:
    """How a token is chosen (docs/FORMATS.md §11): greedy at temperature 0; else a draw u(seed, draw_row, step)
    over the weights exp((l - m) / T) cut to the top_k first-ranked (0: all) and the shortest ranked prefix of
    mass top_p; a repetition penalty r (1: off) on every id in the slot first; `top_logprobs` alternatives."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    draw_row: int = 0
    repetition_penalty: float = 1.0
    top_logprobs: int = 0

    def check(self) -> None:
        """Every field a number of its kind in its range, as its record's word holds it: one PxglError."""
        integers = (self.top_k, self.seed, self.draw_row, self.top_logprobs)
        reals = (self.temperature, self.top_p, self.repetition_penalty)
        if not all(is_integer(n) for n in integers) or not all(is_real(x) for x in reals):
            raise PxglError(f"choice {self}: top_k, seed, draw_row, top_logprobs are integers, the others numbers")
        checks = (
            (0 <= self.temperature <= FLOAT32_MAX, "temperature must be ≥ 0 and finite"),
            (0 <= self.top_k <= INT32_MAX, f"top_k must lie in 0..{INT32_MAX} (0: every token)"),
            (0 < self.top_p <= 1, "top_p must lie in (0, 1]"),
            (
                0 <= self.seed <= UINT32_MAX and 0 <= self.draw_row <= UINT32_MAX,
                "seed and draw_row must lie in 0..2^32-1",
            ),
            (0 < self.repetition_penalty <= MAX_PENALTY, f"repetition_penalty must lie in (0, {MAX_PENALTY:g}]"),
            (0 <= self.top_logprobs <= TOP_MAX, f"top_logprobs must lie in 0..{TOP_MAX}"),
        )
        for ok, what in checks:
            if not ok:
                raise PxglError(f"choice {self}: {what}")
        if np.float32(self.top_p) == 0 or np.float32(self.repetition_penalty) == 0:
            raise PxglError(
                f"choice {self}: top_p and repetition_penalty must be past 0 in float32, as the GPU reads them"
            )

    def record(self, step: int, target: int = -1) -> np.ndarray:
        """Its row of glsl/tf_choose.glsl's words (the cut's state zero)."""
        words = np.zeros(ROW_WORDS, np.uint32)
        floats = np.array([self.temperature, self.top_p, self.repetition_penalty], np.float32).view(np.uint32)
        words[[0, 2, 5]] = floats
        words[[1, 3, 4, 6]] = [self.top_k, self.seed, self.draw_row, step]
        words[7] = np.int32(target).view(np.uint32)
        return words


@dataclass(frozen=True)
class Chosen:
    """The tokens chosen over `count` steps of `rows` rows, read back once: ids and log p (count, rows), and the
    alternatives' ids and log p (count, rows, K), likeliest first."""

    ids: np.ndarray
    logprobs: np.ndarray
    alternatives: np.ndarray
    alternative_logprobs: np.ndarray


def choose_kernel(shader: str, storages: tuple[str, ...], names: tuple[str, ...], shared=()) -> Kernel:
    count = CHOOSE_LOOPS[shader]
    resources = (*(Storage(name) for name in storages), *uniforms(*names))
    return Kernel(shader, resources, shared, loops=lambda constants, local_size: count(constants))


COPY = choose_kernel("tf_choose_copy", ("logits", "chosen"), ("count", "vocab", "logit0", "groups_x"))
PENALIZE = choose_kernel(
    "tf_choose_penalize",
    ("logits", "chosen", "choosing", "rows", "tokens"),
    ("count", "vocab", "context", "logit0", "entry0", "groups_x"),
)
BINS = choose_kernel(
    "tf_choose_bins",
    ("choice", "predictions", "choosing", "bins"),
    ("vocab", "segment", "segments", "choice0", "top0", "pass_index", "id_digits", "by_count"),
    (Shared("shared_bins", "float", "BINS_FLOATS"),),
)
MASS = choose_kernel(
    "tf_choose_mass",
    ("choice", "predictions", "choosing", "masses"),
    ("vocab", "segment", "segments", "choice0", "top0"),
    (Shared("sums", "float", "LOCAL_SIZE"),),
)
CUT = choose_kernel(
    "tf_choose_cut", ("choosing", "bins", "masses"), ("mode", "vocab", "segments", "pass_index", "id_digits")
)
PICK = choose_kernel(
    "tf_choose_pick",
    ("choosing", "masses", "choice", "predictions", "rows", "tokens", "out_words"),
    ("vocab", "segment", "segments", "choice0", "top0", "entry0", "context", "out_step", "rows_out", "record_words"),
)
LOGP = choose_kernel(
    "tf_choose_logp",
    ("choosing", "logits", "predictions", "out_words"),
    ("vocab", "logit0", "out_step", "rows_out", "record_words", "by_target"),
)
BEST_SHARED = (Shared("best_value", "float", "LOCAL_SIZE"), Shared("best_index", "int", "LOCAL_SIZE"))
TOP = choose_kernel(
    "tf_choose_top", ("logits", "candidates"), ("vocab", "segment", "segments", "logit0", "top_count"), BEST_SHARED
)
TOP_MERGE = choose_kernel(
    "tf_choose_top_merge",
    ("candidates", "predictions", "out_words"),
    ("vocab", "segments", "top_count", "out_step", "rows_out", "record_words"),
    BEST_SHARED,
)
CHOOSE_KERNELS = (COPY, PENALIZE, BINS, MASS, CUT, PICK, LOGP, TOP, TOP_MERGE)
CUT_START, CUT_DIGIT, CUT_TOP_P = 0, 1, 2
"""glsl/tf_choose_cut.comp's modes."""


def folded(groups: int) -> tuple[int, int, int]:
    x = min(groups, 65535)
    return x, ceil_div(groups, x), 1


class Chooser:
    """The choosing kernels of one model's vocabulary and their buffers; compiled at the first choice (a
    vocabulary whose choosing cannot fit `loop_budget` is refused then, in one line)."""

    def __init__(
        self, gpu: GLBackend, vocab: int, context: int, constants: Constants, argmax_segment: int, loop_budget: int
    ) -> None:
        """`constants`: the forward's (kernels.kernel_constants), whose tf_argmax walks `argmax_segment` ids."""
        self.gpu, self.vocab, self.context = gpu, vocab, context
        self.constants, self.loop_budget = constants, loop_budget
        self.argmax_programs = {
            kernel.shader: gpu.program(kernel, constants, GROUP) for kernel in (ARGMAX, ARGMAX_MERGE)
        }
        self.argmax_segment = argmax_segment
        self.id_digits = ceil_div(max(1, (vocab - 1).bit_length()), 4)
        self.programs: dict[str, object] = {}
        self.scratch = Scratches(gpu)
        """Each step's working buffers, by name."""

    def _programs(self) -> dict[str, object]:
        if not self.programs:
            plan = plan_choose(self.vocab, self.loop_budget)
            self.segment, self.segments = plan.segment, plan.segments
            extra = {"ROW_WORDS": ROW_WORDS, "DIGITS": DIGITS, "TOP_MAX": TOP_MAX, "BINS_FLOATS": DIGITS * GROUP}
            constants = self.constants | extra | plan.bounds
            for kernel in CHOOSE_KERNELS:
                self.programs[kernel.shader] = self.gpu.program(kernel, constants, GROUP)
        return self.programs

    def argmax(self, logits: Buffer, row0: int, rows: int, predictions: Buffer, out0: int) -> None:
        """tf_argmax over logits rows row0..row0+rows-1: (id, Σ exp(l - top)) into predictions rows out0.."""
        programs, segments = self.argmax_programs, ceil_div(self.vocab, self.argmax_segment)
        partial = self.scratch("argmax", 12 * rows * segments)
        run = self.gpu.run
        run(programs["tf_argmax"], (segments, rows, 1), logits=logits, partial=partial, vocab=self.vocab,
            segment=self.argmax_segment, segments=segments, row0=row0)  # fmt: skip
        self.gpu.barrier()
        run(programs["tf_argmax_merge"], (rows, 1, 1), partial=partial, predictions=predictions, segments=segments,
            out0=out0)  # fmt: skip
        self.gpu.barrier()

    def upload(self, records: np.ndarray) -> Buffer:
        choosing = self.scratch("choosing", records.nbytes)
        self.gpu.write_storage(choosing, records)
        return choosing

    def outputs(self, count: int, rows: int, top_count: int) -> Buffer:
        return self.scratch("outputs", 4 * count * rows * (2 + 2 * top_count))

    def read(self, out: Buffer, count: int, rows: int, top_count: int) -> Chosen:
        words = 2 + 2 * top_count
        data = np.frombuffer(self.gpu.read_storage(out, 4 * count * rows * words), np.uint32).reshape(count, rows, -1)
        pairs = data[:, :, 2:].reshape(count, rows, top_count, 2)
        return Chosen(
            data[:, :, 0].astype(np.int64),
            data[:, :, 1].view(np.float32).copy(),
            pairs[..., 0].astype(np.int64),
            pairs[..., 1].view(np.float32).copy(),
        )

    def choose(
        self,
        logits: Buffer,
        logit0: int,
        choices: list[Choice],
        choosing: Buffer,
        rows: Buffer,
        entry0: int,
        tokens: Buffer,
        out: Buffer,
        out_step: int,
        top_count: int,
    ) -> None:
        """Choose the token of logits rows logit0.. (one per choice; `choosing` holds their records, the rows
        buffer their (slot, position) from entry0), written as each slot's pending token and into `out` at
        out_step: (id, log p, top_count x (id, log p)) a row."""
        programs, gpu, v = self._programs(), self.gpu, self.vocab
        n = len(choices)
        sizes = {"vocab": v, "segment": self.segment, "segments": self.segments}
        predictions = self.scratch("predictions", 16 * n)
        self.argmax(logits, logit0, n, predictions, 0)
        choice, choice0, top0 = logits, logit0, 0
        if any(c.repetition_penalty != 1 for c in choices):
            chosen = self.scratch("penalized logits", 4 * n * v)
            groups = folded(ceil_div(n * v, GROUP))
            gpu.run(programs["tf_choose_copy"], groups, logits=logits, chosen=chosen, count=n * v, vocab=v,
                    logit0=logit0, groups_x=groups[0])  # fmt: skip
            gpu.barrier()
            groups = folded(ceil_div(n * self.context, GROUP))
            gpu.run(programs["tf_choose_penalize"], groups, logits=logits, chosen=chosen, choosing=choosing,
                    rows=rows, tokens=tokens, count=n * self.context, vocab=v, context=self.context, logit0=logit0,
                    entry0=entry0, groups_x=groups[0])  # fmt: skip
            gpu.barrier()
            self.argmax(chosen, 0, n, predictions, n)
            choice, choice0, top0 = chosen, 0, n
        masses = self.scratch("masses", 4 * n * self.segments)
        if any(c.temperature > 0 for c in choices):
            bins = self.scratch("bins", 4 * n * self.segments * DIGITS)
            on_choice = {"choice": choice, "predictions": predictions, "choosing": choosing}
            cut = {"choosing": choosing, "bins": bins, "masses": masses, "vocab": v, "segments": self.segments}
            passes = 8 + self.id_digits
            gpu.run(programs["tf_choose_cut"], (n, 1, 1), **cut, mode=CUT_START, pass_index=0, id_digits=1)
            gpu.barrier()
            for by_count, wanted in (
                (1, any(0 < c.top_k < v for c in choices)),
                (0, any(c.top_p < 1 for c in choices)),
            ):
                if by_count == 0:
                    gpu.run(programs["tf_choose_mass"], (self.segments, n, 1), **on_choice, masses=masses, **sizes,
                            choice0=choice0, top0=top0)  # fmt: skip
                    gpu.barrier()
                    gpu.run(programs["tf_choose_cut"], (n, 1, 1), **cut, mode=CUT_TOP_P, pass_index=0, id_digits=1)
                    gpu.barrier()
                for pass_index in range(passes if wanted else 0):
                    gpu.run(programs["tf_choose_bins"], (self.segments, n, 1), **on_choice, bins=bins, **sizes,
                            choice0=choice0, top0=top0, pass_index=pass_index, id_digits=self.id_digits,
                            by_count=by_count)  # fmt: skip
                    gpu.barrier()
                    gpu.run(programs["tf_choose_cut"], (n, 1, 1), **cut, mode=CUT_DIGIT, pass_index=pass_index,
                            id_digits=self.id_digits)  # fmt: skip
                    gpu.barrier()
            gpu.run(programs["tf_choose_mass"], (self.segments, n, 1), **on_choice, masses=masses, **sizes,
                    choice0=choice0, top0=top0)  # fmt: skip
            gpu.barrier()
        record = {"out_words": out, "out_step": out_step, "rows_out": n, "record_words": 2 + 2 * top_count}
        gpu.run(programs["tf_choose_pick"], (n, 1, 1), choosing=choosing, masses=masses, choice=choice,
                predictions=predictions, rows=rows, tokens=tokens, **sizes, choice0=choice0, top0=top0,
                entry0=entry0, context=self.context, **record)  # fmt: skip
        gpu.barrier()
        self.log_probabilities(logits, logit0, n, choosing, predictions, record, by_target=0)
        if top_count:
            candidates = self.scratch("candidates", 8 * n * self.segments * top_count)
            gpu.run(programs["tf_choose_top"], (self.segments, n, 1), logits=logits, candidates=candidates,
                    vocab=v, segment=self.segment, segments=self.segments, logit0=logit0,
                    top_count=top_count)  # fmt: skip
            gpu.barrier()
            gpu.run(programs["tf_choose_top_merge"], (n, 1, 1), candidates=candidates, predictions=predictions,
                    vocab=v, segments=self.segments, top_count=top_count, **record)  # fmt: skip
            gpu.barrier()

    def log_probabilities(
        self, logits: Buffer, logit0: int, n: int, choosing: Buffer, predictions: Buffer, record: dict, by_target: int
    ) -> None:
        self.gpu.run(self._programs()["tf_choose_logp"], (ceil_div(n, GROUP), 1, 1), choosing=choosing,
                     logits=logits, predictions=predictions, vocab=self.vocab, logit0=logit0, by_target=by_target,
                     **record)  # fmt: skip
        self.gpu.barrier()

    def targets(self, logits: Buffer, n: int, targets: np.ndarray) -> np.ndarray:
        """Log p of targets[i] under logits row i (i < n), computed on the GPU; n floats read back."""
        records = np.zeros((n, ROW_WORDS), np.uint32)
        records[:, 7] = targets.astype(np.uint32)
        choosing = self.upload(records)
        predictions = self.scratch("predictions", 8 * n)
        self.argmax(logits, 0, n, predictions, 0)
        out = self.outputs(1, n, 0)
        record = {"out_words": out, "out_step": 0, "rows_out": n, "record_words": 2}
        self.log_probabilities(logits, 0, n, choosing, predictions, record, by_target=1)
        return self.read(out, 1, n, 0).logprobs[0]

    def close(self) -> None:
        self.scratch.close()


def is_integer(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def check_step(step: object, what: str) -> int:
    """A draw step: its record's word, an integer in 0..2^32-1."""
    if not is_integer(step) or not 0 <= step <= UINT32_MAX:  # type: ignore[operator]
        raise PxglError(f"{what}: step {step!r} must be an integer in 0..2^32-1")
    return int(step)  # type: ignore[call-overload]


def vocab_ids(tokens: object, vocab: int, what: str) -> np.ndarray:
    """A 1-D list of token ids, each an integer in 0..vocab-1 (never a float or a bool rounded to one)."""
    ids = np.asarray(tokens)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise PxglError(f"{what}: token ids must be a list of integers, got {ids.dtype} of shape {ids.shape}")
    ids = ids.astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
        raise PxglError(f"{what}: token ids must lie in 0..{vocab - 1}")
    return ids
