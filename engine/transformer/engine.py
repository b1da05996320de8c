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
from .gpu import prediction_pixels
from .model import TransformerModel
from .pixels import decode_rows

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
    ) -> None:
        """As Engine's: `model` what engine.loading.open_model returns, or a TransformerModel (the executor then
        chosen by engine.loading.plan). No version-2 executor takes a program or tuning yet."""
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
                self.executor = executor_class(self.gpu, self.spec, self.model.weights)
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
        """The KV cache the executor holds on the GPU."""
        return int(self.executor.cache_bytes)

    # --- sequences (§14.4) -------------------------------------------------------------------------
    def sequence(self, ids: Sequence[int] | np.ndarray, new: int, truncate: bool, what: str) -> np.ndarray:
        """The positions a prompt runs at: `bos` first when the meta declares it, then the prompt's ids. With
        `new` tokens still to come the whole must fit the context; past it one error, unless `truncate`: then
        only the prompt's last tokens that fit are kept (bos stays first)."""
        a = self.architecture
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size == 0:
            raise PxglError(f"{what} is empty: every prompt needs at least one token")
        if ids.min() < 0 or ids.max() >= a.vocab_size:
            bad = int(np.flatnonzero((ids < 0) | (ids >= a.vocab_size))[0])
            raise PxglError(f"{what}, position {bad}: token id {ids[bad]} is outside 0..{a.vocab_size - 1}")
        head = np.array([] if self.spec.bos is None else [self.spec.bos], np.int64)
        room = a.context_length - new - head.size
        if ids.size > room:
            counted = f"{head.size + ids.size} tokens{' (bos first)' if head.size else ''}"
            if not truncate or room < 1:
                hint = TRUNCATE_HINT if room >= 1 else "ask for fewer new tokens"
                raise PxglError(
                    f"{what}: {counted} + {new} new are past the model's context of {a.context_length} positions; "
                    f"{hint}"
                )
            ids = ids[-room:]
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
        sequences = [self.sequence(row, 0, truncate, f"prompt {r}") for r, row in enumerate(rows)]
        if not sequences:
            raise PxglError("no prompts to run")
        ids, sums = np.empty(len(sequences), np.int64), np.empty(len(sequences), np.float32)
        with gl_errors("prompts"):
            for r, sequence in enumerate(sequences):
                self.executor.reset()
                last = self.executor.run(sequence, all_logits=False)
                ids[r], sums[r] = last.ids[0], last.sums[0]
                if on_tile is not None:
                    on_tile(1)
        return prediction_pixels(ids, sums, self.architecture.vocab_size)

    # --- scoring (§14.6) ---------------------------------------------------------------------------
    def score_window(self, tokens: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """One window of a document at positions 0..: the predicted id (argmax, lowest on ties) and log p of
        each target tokens[first..] from the positions before it."""
        self._check_thread()
        with gl_errors("scoring"):
            self.executor.reset()
            logits = self.executor.run(tokens, all_logits=True).logits[first - 1 : -1].astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_sums = np.log(np.exp(logits - top).sum(axis=1))
        targets = np.asarray(tokens[first:], np.int64)
        chosen = logits[np.arange(targets.size), targets] - top[:, 0] - log_sums
        return logits.argmax(axis=1), chosen.astype(np.float32)

    # --- generation (§11) --------------------------------------------------------------------------
    def generate(
        self,
        rows: Sequence[Sequence[int]],
        steps: int,
        sampling: Sampling | None = None,
        *,
        top_logprobs: int = 0,
        draw_rows: Sequence[int] | None = None,
        truncate: bool = False,
    ) -> Generation:
        """`steps` new tokens after each prompt (§11), every step of every row."""
        taken = list(
            self.stream(rows, steps, sampling, top_logprobs=top_logprobs, draw_rows=draw_rows, truncate=truncate)
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
        truncate: bool = False,
    ) -> Generator[GeneratedStep, None, None]:
        """As `generate`, one step of every prompt at a time; one prompt's steps as the GPU makes them. Checked
        before the first step is asked for: prompts past the context fail here, not mid-stream."""
        self._check_thread()
        check_steps(steps)
        check_top_logprobs(top_logprobs)
        sampling = sampling or Sampling()
        if sampling.temperature > 0:
            raise PxglError("sampled generation of version-2 models is not in this pxgl yet: use --temperature 0")
        sequences = [self.sequence(row, steps, truncate, f"prompt {r}") for r, row in enumerate(rows)]
        if not sequences:
            raise PxglError("no prompts to generate from")
        return self._steps(sequences, steps, top_logprobs, on_tokens)

    def _steps(
        self,
        sequences: list[np.ndarray],
        steps: int,
        top_logprobs: int,
        on_tokens: Callable[[int], None] | None,
    ) -> Generator[GeneratedStep, None, None]:
        if len(sequences) == 1:
            rows: list[Iterator[tuple]] = [self._greedy(sequences[0], steps, top_logprobs)]
        else:  # one sequence at a time: each row whole, then the steps of all
            rows = [iter(list(self._greedy(sequence, steps, top_logprobs, on_tokens))) for sequence in sequences]
        for step in range(steps):
            taken = [next(row) for row in rows]
            if len(sequences) == 1 and on_tokens is not None:
                on_tokens(1)
            tokens, confidences, logprobs, top_ids, top_lps = (np.array(column) for column in zip(*taken, strict=True))
            yield GeneratedStep(
                step, tokens, confidences.astype(np.uint8), logprobs.astype(np.float32), top_ids, top_lps
            )

    def _greedy(
        self, sequence: np.ndarray, steps: int, top_logprobs: int, on_tokens: Callable[[int], None] | None = None
    ) -> Iterator[tuple[int, int, float, np.ndarray, np.ndarray]]:
        """One sequence's greedy steps: (id, confidence byte, log p, top ids, their log p) each, the id the
        GPU's argmax (lowest on ties), the rest from the step's logits."""
        if steps == 0:
            return
        with gl_errors("generation"):
            self.executor.reset()
            last = self.executor.run(sequence, all_logits=False)
            for step in range(steps):
                token = int(last.ids[0])
                logits = last.logits[0].astype(np.float64)
                top = logits.max()
                log_sum = np.log(np.exp(logits - top).sum())
                ranked = np.lexsort((np.arange(logits.size), -logits))[:top_logprobs]
                yield (
                    token,
                    int(np.round(255 / float(last.sums[0]))),
                    float(logits[token] - top - log_sum),
                    ranked,
                    (logits[ranked] - top - log_sum).astype(np.float32),
                )
                if on_tokens is not None:
                    on_tokens(1)
                if step + 1 < steps:
                    last = self.executor.run([token], all_logits=False)
