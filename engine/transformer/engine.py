"""The engine of a version-2 model (docs/FORMATS.md §14): what `Engine(runnable)` gives for a transformer. It
opens the executor the front door chose (engine/transformer/executors.py), makes each prompt the sequence §14.4
runs (bos first; past the context one clear error, or its oldest tokens dropped when asked), and answers the
verbs: prediction pixels (§14.5), generation as §11's steps, and scores (§14.6, engine/transformer/scoring.py).

As engine/engine.py's Engine: built, used and closed on one thread (its GL context's); `close()` or `with`."""

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from types import TracebackType

import numpy as np

from ..errors import PxglError
from ..generation import BY_STEP, GeneratedStep, Generation, Sampling, check_steps, check_top_logprobs
from ..gl import GLBackend, gl_errors
from ..loading import Runnable, plan
from .executors import resolve_transformer_executor
from .gpu import Choice, Chosen, prediction_pixels
from .gpu.choose import MAX_PENALTY
from .model import TransformerModel
from .pixels import decode_rows

MAX_SLOTS = 64
"""Sequences one engine runs together at most (its KV-cache slots); more prompts run in groups of this many."""
STREAM_CHUNKS = (1, 2, 4, 8, 16, 32)
"""Decode steps read back at a time while streaming: the first token soon, then fewer round trips."""
SCORE_LOGIT_BYTES = 1 << 25
"""Logits one scoring prefill holds at most (a power of two of rows): a window of GPT-2's 1,024 positions at
50,257 ids would be 206 MB of logits, past llvmpipe's 128 MiB storage buffers."""
TRUNCATE_HINT = "shorten it, ask for fewer new tokens, or pass --truncate-prompt to drop its oldest tokens"


class TransformerEngine:
    def __init__(
        self,
        model: TransformerModel | Runnable,
        *,
        executor: str | None = None,
        program: object | None = None,
        device: int | None = None,
        gpu: GLBackend | None = None,
        tuning: object | None = None,
        slots: int = 1,
    ) -> None:
        """As Engine's: `model` what engine.loading.open_model returns, or a TransformerModel (the executor then
        chosen by engine.loading.plan); pxvm runs the runnable's program, if any. No version-2 executor takes
        tuning. `slots`: the
        sequences generated together (at most MAX_SLOTS, and as many as one storage block of keys holds)."""
        if isinstance(model, Runnable) and (executor is not None or program is not None):
            raise TypeError("a Runnable already says its executor; pass a TransformerModel to choose one")
        if tuning is not None:
            raise TypeError("version-2 executors take no tuning")
        runnable = model if isinstance(model, Runnable) else plan(model, executor, program)  # type: ignore[arg-type]
        assert isinstance(runnable.model, TransformerModel)
        self.runnable, self.model = runnable, runnable.model
        self.spec = self.model.spec
        self.architecture = self.spec.architecture
        self._owns_gpu = gpu is None
        self.gpu = gpu if gpu is not None else GLBackend(device)
        self._closed = False
        try:
            with gl_errors(self.model.source):
                self.executor_name, executor_class = resolve_transformer_executor(
                    runnable.executor, self.spec, self.gpu
                )
                slots = max(
                    1, min(slots, MAX_SLOTS, self.gpu.limits.max_storage_block_size // self.model.slot_key_bytes)
                )
                program = {} if runnable.program is None else {"program": runnable.program}
                self.executor = executor_class(self.gpu, self.spec, self.model.weights, slots=slots, **program)
        except BaseException:
            if self._owns_gpu:
                self.gpu.release()
            raise

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._check_thread()
        self._closed = True
        self.executor.close()
        if self._owns_gpu:
            self.gpu.release()

    def __enter__(self) -> "TransformerEngine":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None):
        self.close()

    def _check_thread(self) -> None:
        if threading.get_ident() != self.gpu.thread:
            raise RuntimeError("an Engine is used on the thread that created it (its GL context is bound there)")
        if self._closed:
            raise RuntimeError("this Engine is closed")

    @property
    def cache_bytes(self) -> int:
        """The KV cache the executor holds on the GPU, every slot's."""
        return int(self.executor.cache_bytes)

    @property
    def slots(self) -> int:
        return int(self.executor.slots)

    # --- sequences (§14.4) -------------------------------------------------------------------------
    def sequence(self, ids: Sequence[int] | np.ndarray, new: int, truncate: bool, what: str) -> np.ndarray:
        """The positions a prompt runs at: `bos` first when the meta declares it and the prompt does not begin
        with it (§14.4), then the prompt's ids. With `new` tokens still to come the whole must fit the context;
        past it one error, unless `truncate`: then only the prompt's last tokens that fit are kept (bos stays
        first)."""
        a = self.architecture
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size == 0:
            raise PxglError(f"{what} is empty: every prompt needs at least one token")
        if ids.min() < 0 or ids.max() >= a.vocab_size:
            bad = int(np.flatnonzero((ids < 0) | (ids >= a.vocab_size))[0])
            raise PxglError(f"{what}, position {bad}: token id {ids[bad]} is outside 0..{a.vocab_size - 1}")
        head = np.array([] if self.spec.bos is None else [self.spec.bos], np.int64)
        if head.size and ids[0] == head[0]:
            ids = ids[1:]
        room = a.context_length - new - head.size
        if ids.size > room:
            if truncate and room >= 1:
                return np.concatenate([head, ids[-room:]])
            counted = f"{head.size + ids.size} tokens{' (bos first)' if head.size else ''}"
            if room < 1:
                hint = f"ask for at most {a.context_length - head.size - 1} new tokens"
            else:
                hint = TRUNCATE_HINT if new else "shorten it, or pass --truncate-prompt to keep its last tokens"
            raise PxglError(
                f"{what}: {counted}{f' + {new} new' if new else ''} are past the model's context of "
                f"{a.context_length} positions; {hint}"
            )
        return np.concatenate([head, ids])

    # --- predictions (§14.5) -----------------------------------------------------------------------
    def predict(
        self,
        token_pixels: np.ndarray,
        source: str = "token texture",
        on_tile: Callable[[int], None] | None = None,
        truncate: bool = False,
    ) -> np.ndarray:
        """Prediction pixels of a token texture's rows: (B, 1, 3), or (B, 2, 3) past 65,536 ids (§14.5)."""
        return self.predict_ids(decode_rows(token_pixels, self.architecture.vocab_size, source), on_tile, truncate)

    def predict_ids(
        self,
        rows: Sequence[Sequence[int]],
        on_tile: Callable[[int], None] | None = None,
        truncate: bool = False,
    ) -> np.ndarray:
        """Prediction pixels of prompts of token ids, each run as its own sequence."""
        self._check_thread()
        sequences = [self.sequence(row, 0, truncate, prompt_name(r, len(rows))) for r, row in enumerate(rows)]
        if not sequences:
            raise PxglError("no prompts to run")
        ids, sums = np.empty(len(sequences), np.int64), np.empty(len(sequences), np.float32)
        with gl_errors("prompts"):
            for r, sequence in enumerate(sequences):
                self.executor.truncate(0, 0)
                last = self.executor.prefill(0, sequence)
                ids[r], sums[r] = last.ids[-1], last.sums[-1]
                if on_tile is not None:
                    on_tile(1)
        return prediction_pixels(ids, sums, self.architecture.vocab_size)

    # --- scoring (§14.6) ---------------------------------------------------------------------------
    def score_window(self, tokens: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """One window of a document at positions 0..: the predicted id (argmax, lowest on ties) and log p of
        each target tokens[first..] from the position before it, computed on the GPU. The window is prefilled
        in pieces whose logits stay within SCORE_LOGIT_BYTES (a sequence computed in pieces is the same, §14.4)."""
        self._check_thread()
        tokens = np.asarray(tokens, np.int64)
        following = np.append(tokens[1:], 0)  # row i's target: the token after it (the last row's is unused)
        piece = 1 << max(0, (SCORE_LOGIT_BYTES // (4 * self.architecture.vocab_size)).bit_length() - 1)
        ids, logprobs = [], []
        with gl_errors("scoring"):
            self.executor.truncate(0, 0)
            for start in range(0, len(tokens), piece):
                run = self.executor.prefill(0, tokens[start : start + piece], targets=following[start : start + piece])
                assert run.targets is not None
                ids.append(run.ids)
                logprobs.append(run.targets)
        return np.concatenate(ids)[first - 1 : -1], np.concatenate(logprobs)[first - 1 : -1]

    # --- generation (§11) --------------------------------------------------------------------------
    def generate(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None = None,
        *,
        top_logprobs: int = 0,
        draw_rows: Sequence[int] | None = None,
        repetition_penalty: float = 1.0,
        truncate: bool = False,
    ) -> Generation:
        """`steps` new tokens after each prompt (§11), every step of every row."""
        taken = list(
            self.stream(
                rows,
                steps,
                sampling,
                top_logprobs=top_logprobs,
                draw_rows=draw_rows,
                repetition_penalty=repetition_penalty,
                truncate=truncate,
            )
        )
        return Generation(*(np.stack([getattr(s, name) for s in taken], axis=1) for name in BY_STEP))

    def stream(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None = None,
        *,
        top_logprobs: int = 0,
        draw_rows: Sequence[int] | None = None,
        on_tokens: Callable[[int], None] | None = None,
        repetition_penalty: float = 1.0,
        truncate: bool = False,
    ) -> Generator[GeneratedStep, None, None]:
        """As `generate`, one step of every prompt at a time, as the GPU hands them over: the prompts that fit
        the slots decode together (one forward a step, the tokens chosen on the GPU), read back in chunks of
        1, 2, 4, … steps; more prompts run a group of slots after another, each group whole. Checked before
        the first step is asked for: prompts past the context fail here, not mid-stream."""
        self._check_thread()
        check_steps(steps)
        check_top_logprobs(top_logprobs)
        sampling = sampling or Sampling()
        if not 0 < repetition_penalty <= MAX_PENALTY:
            raise PxglError(f"repetition penalty must lie in (0, {MAX_PENALTY:g}] (1: off), got {repetition_penalty}")
        sequences = [self.sequence(row, steps, truncate, prompt_name(r, len(rows))) for r, row in enumerate(rows)]
        if not sequences:
            raise PxglError("no prompts to generate from")
        draws = list(range(len(sequences))) if draw_rows is None else [int(d) for d in draw_rows]
        if len(draws) != len(sequences):
            raise PxglError(f"draw rows: one a prompt, got {len(draws)} for {len(sequences)}")
        choices = [
            Choice(
                temperature=sampling.temperature,
                top_k=sampling.top_k or 0,
                top_p=sampling.top_p,
                seed=sampling.seed,
                draw_row=draw,
                repetition_penalty=repetition_penalty,
                top_logprobs=top_logprobs,
            )
            for draw in draws
        ]
        for choice in choices:
            choice.check()
        return self._steps(sequences, choices, steps, top_logprobs, on_tokens)

    def _steps(
        self,
        sequences: list[np.ndarray],
        choices: list[Choice],
        steps: int,
        top_logprobs: int,
        on_tokens: Callable[[int], None] | None,
    ) -> Generator[GeneratedStep, None, None]:
        groups = [
            range(start, min(start + self.slots, len(sequences))) for start in range(0, len(sequences), self.slots)
        ]
        if len(groups) == 1:
            for chosen, first in self._decoded(sequences, choices, steps, on_tokens):
                yield from steps_of(chosen, first, top_logprobs)
            return
        blocks = []
        for group in groups:
            parts = list(self._decoded([sequences[r] for r in group], [choices[r] for r in group], steps, on_tokens))
            blocks.append(join_chosen([chosen for chosen, _ in parts], axis=0))
        yield from steps_of(join_chosen(blocks, axis=1), 0, top_logprobs)

    def _decoded(
        self,
        sequences: list[np.ndarray],
        choices: list[Choice],
        steps: int,
        on_tokens: Callable[[int], None] | None,
    ) -> Iterator[tuple[Chosen, int]]:
        """Up to `slots` sequences' steps: each prefilled in its slot choosing step 0, then decoded together;
        (chosen, first step) a chunk at a time."""
        slots = list(range(len(sequences)))
        with gl_errors("generation"):
            firsts = []
            for slot, (sequence, choice) in enumerate(zip(sequences, choices, strict=True)):
                self.executor.truncate(slot, 0)
                chosen = self.executor.prefill(slot, sequence, choice=choice, step=0).chosen
                assert chosen is not None
                firsts.append(chosen)
            yield join_chosen(firsts, axis=1), 0
            if on_tokens is not None:
                on_tokens(len(slots))
            done = 1
            for chunk in STREAM_CHUNKS[1:] + (STREAM_CHUNKS[-1],) * steps:
                if done == steps:
                    return
                count = min(chunk, steps - done)
                chosen = self.executor.decode(slots, choices, [done] * len(slots), count)
                yield chosen, done
                if on_tokens is not None:
                    on_tokens(count * len(slots))
                done += count


def prompt_name(row: int, rows: int) -> str:
    return "the prompt" if rows == 1 else f"prompt {row}"


def join_chosen(parts: Sequence[Chosen], axis: int) -> Chosen:
    """Chosen blocks side by side: later steps (axis 0) or more rows (axis 1)."""
    fields = ("ids", "logprobs", "alternatives", "alternative_logprobs")
    return Chosen(*(np.concatenate([getattr(part, name) for part in parts], axis=axis) for name in fields))


def steps_of(chosen: Chosen, first: int, top_logprobs: int) -> Iterator[GeneratedStep]:
    """Each step of a chosen block as §11's GeneratedStep: the confidence byte round(255 p), p = exp(log p) (0
    where an executor reports no log p: pxvm's generation)."""
    for s in range(chosen.ids.shape[0]):
        logprobs = chosen.logprobs[s]
        confidences = np.round(255 * np.nan_to_num(np.exp(logprobs.astype(np.float64)))).astype(np.uint8)
        top_ids = chosen.alternatives[s, :, :top_logprobs]
        yield GeneratedStep(
            first + s, chosen.ids[s], confidences, logprobs, top_ids, chosen.alternative_logprobs[s, :, :top_logprobs]
        )
