"""Continuous batching of a version-2 model (docs/FORMATS.md §12): one thread owns the model's GPU executor and
its KV-cache slots; a request joins the running ones between two decode steps, each of its prompts in a slot
of its own, and a new prompt reuses the longest prefix a free slot's cache holds (llama-server's prompt
cache). Every step of every running slot is one batched decode; each request gets its prompts' tokens of
each step as a one-step Generation, the shape completions.py reads from every engine."""

import logging
import queue
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import PxglError
from ..generation import Generation
from ..loading import Runnable
from ..transformer.gpu import Choice, Chosen, GPUTransformer, PassesTransformer, Prefill
from ..transformer.model import TransformerModel
from .limits import Limits
from .requests import ModelTerms, context_overflow
from .worker import FINISHED, STOP, CallJob, EngineWorker, GenerateJob, Job, JobFailed

log = logging.getLogger("pxgl.serve")


class SlotExecutor(Protocol):
    """The part of the version-2 GPU executor (engine/transformer/gpu/) the scheduler drives."""

    def truncate(self, slot: int, n: int) -> None: ...

    def prefill(self, slot: int, tokens: Sequence[int], choice: Choice | None = None, step: int = 0) -> Prefill: ...

    def decode(self, slots: Sequence[int], choices: Sequence[Choice], steps: Sequence[int], count: int) -> Chosen: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StepTokens:
    """Tokens chosen for some slots in one step, in the order the slots were listed."""

    ids: np.ndarray
    """(rows,) int64."""
    logprobs: np.ndarray
    """(rows,) float32: log p under the model (temperature 1, no penalty)."""
    top_ids: np.ndarray
    """(rows, K) int64: the likeliest tokens, likeliest first (K: the most any listed slot asked for)."""
    top_logprobs: np.ndarray
    """(rows, K) float32."""

    @staticmethod
    def of(chosen: Chosen, step: int = 0) -> "StepTokens":
        """Step `step` of the executor's Chosen: ids and log p (count, rows), alternatives (count, rows, K)."""
        return StepTokens(
            np.asarray(chosen.ids[step], np.int64),
            np.asarray(chosen.logprobs[step], np.float32),
            np.asarray(chosen.alternatives[step], np.int64),
            np.asarray(chosen.alternative_logprobs[step], np.float32),
        )

    def rows(self, start: int, end: int, first: int, top: int) -> Generation:
        """Rows start..end with their `top` alternatives as step `first` of a generation (confidence: round(255
        p), §5)."""
        logprobs = self.logprobs[start:end]
        confidences = np.clip(np.round(255 * np.exp(logprobs.astype(np.float64))), 0, 255).astype(np.uint8)
        return Generation(
            self.ids[start:end, None],
            confidences[:, None],
            logprobs[:, None],
            self.top_ids[start:end, None, :top],
            self.top_logprobs[start:end, None, :top],
            first=first,
        )

    @staticmethod
    def joined(parts: Sequence["StepTokens"]) -> "StepTokens":
        top = max(p.top_ids.shape[1] for p in parts)
        return StepTokens(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.logprobs for p in parts]),
            np.concatenate([np.pad(p.top_ids, ((0, 0), (0, top - p.top_ids.shape[1]))) for p in parts]),
            np.concatenate([np.pad(p.top_logprobs, ((0, 0), (0, top - p.top_ids.shape[1]))) for p in parts]),
        )


def choice_of(job: GenerateJob, row: int) -> Choice:
    """Prompt `row` of a request: its draw row is its index in the request (§11), whatever slot it has."""
    sampling = job.sampling
    return Choice(
        temperature=sampling.temperature,
        top_k=sampling.top_k or 0,
        top_p=sampling.top_p,
        seed=sampling.seed,
        draw_row=row,
        repetition_penalty=job.repetition_penalty,
        top_logprobs=job.top_logprobs,
    )


def shared_prefix(held: Sequence[int], prompt: Sequence[int]) -> int:
    """Positions a slot holding `held` can keep for `prompt`: their common prefix, short of the prompt's last
    token (which must run for its logits)."""
    most = min(len(held), len(prompt) - 1)
    differ = np.asarray(held[:most]) != np.asarray(prompt[:most])
    return int(np.argmax(differ)) if differ.any() else most


@dataclass(eq=False)
class Running:
    """An admitted request: its prompts' slots, how each chooses, and the steps delivered so far."""

    job: GenerateJob
    slots: list[int]
    choices: list[Choice]
    made: int = 0


@dataclass
class Counters:
    positions_computed: int = 0
    """Positions prefilled or decoded for requests."""
    positions_reused: int = 0
    """Prompt positions a slot's cache already held."""


@dataclass(eq=False)
class Scheduler:
    """The slots of one executor: which are free (freed longest ago first), what each one's cache holds, the
    requests running. Lives on the engine thread."""

    executor: SlotExecutor
    slots: int
    context_length: int
    on_finished: Callable[[GenerateJob], None]
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.free: list[int] = list(range(self.slots))
        self.held: list[list[int]] = [[] for _ in range(self.slots)]
        """Tokens whose positions each slot's cache holds (its pending token not among them)."""
        self.pending: list[int] = [0] * self.slots
        """Each running slot's chosen token, run by the next step."""
        self.running: list[Running] = []

    def fits(self, job: GenerateJob) -> bool:
        return len(job.rows) <= len(self.free)

    def _take_slot(self, prompt: Sequence[int], use_cache: bool) -> tuple[int, int]:
        """The free slot for `prompt` and the positions of its cache it keeps: the slot sharing the longest
        prefix where that is at least half the prompt (llama-server's slot similarity), else the slot freed
        longest ago, so a short match (a bos, a common opening) does not overwrite a long chat's cache."""
        kept = [shared_prefix(self.held[slot], prompt) if use_cache else 0 for slot in self.free]
        best = int(np.argmax(kept))  # the first of the longest: freed longest ago
        if 2 * kept[best] < len(prompt):
            best = 0
        return self.free.pop(best), kept[best]

    def admit(self, job: GenerateJob) -> None:
        """Give each prompt a slot, prefill what its cache lacks and choose its first token; deliver step 0."""
        if len(job.rows) > self.slots:
            raise PxglError(f"{len(job.rows)} prompts, past the {self.slots} KV-cache slots (--slots)")
        for index, prompt in enumerate(job.rows):
            problem = context_overflow(index, len(prompt), job.max_tokens, self.context_length)
            if problem is not None:
                raise PxglError(problem)
        run = Running(job, [], [choice_of(job, row) for row in range(len(job.rows))])
        chosen = []
        try:
            for prompt, choice in zip(job.rows, run.choices, strict=True):
                slot, keep = self._take_slot(prompt, job.cache_prompt)
                run.slots.append(slot)
                self.held[slot] = []  # until the prefill is in, the cache holds no sequence worth reusing
                self.executor.truncate(slot, keep)
                one = StepTokens.of(self.executor.prefill(slot, prompt[keep:], choice, step=0).chosen)
                self.held[slot], self.pending[slot] = list(prompt), int(one.ids[0])
                self.counters.positions_computed += len(prompt) - keep
                self.counters.positions_reused += keep
                chosen.append(one)
        except BaseException:
            self.free += run.slots
            raise
        self.running.append(run)
        self._deliver(run, StepTokens.joined(chosen), 0)

    def step(self) -> None:
        """One decode step of every running slot together, each request's rows delivered."""
        for run in [r for r in self.running if r.job.cancelled]:
            self._finish(run)
        if not self.running:
            return
        slots = [slot for run in self.running for slot in run.slots]
        choices = [choice for run in self.running for choice in run.choices]
        steps = [run.made for run in self.running for _ in run.slots]
        chosen = StepTokens.of(self.executor.decode(slots, choices, steps, 1))
        self.counters.positions_computed += len(slots)
        for slot, token in zip(slots, chosen.ids.tolist(), strict=True):
            self.held[slot].append(self.pending[slot])
            self.pending[slot] = token
        start = 0
        for run in list(self.running):
            self._deliver(run, chosen, start)
            start += len(run.slots)

    def _deliver(self, run: Running, chosen: StepTokens, start: int) -> None:
        run.job.sink.put(chosen.rows(start, start + len(run.slots), run.made, run.job.top_logprobs))
        run.made += 1
        if run.made == run.job.max_tokens:
            self._finish(run)

    def _finish(self, run: Running) -> None:
        self.running.remove(run)
        self.free += run.slots
        self.on_finished(run.job)

    def fail_all(self, message: str) -> None:
        """The executor failed mid-step: every running request gets the error; no cache is trusted again."""
        for run in list(self.running):
            run.job.sink.put(JobFailed(message, bad_input=False))
            for slot in run.slots:
                self.held[slot] = []
            self._finish(run)


@dataclass(frozen=True)
class Resident:
    """What a version-2 worker builds on its thread: the slot executor (and its name), the engines predict and
    trace requests run on (CallJob's `call(engines)`), and how to close both."""

    executor: SlotExecutor
    name: str
    engines: Any
    close: Callable[[], None]


BuildResident = Callable[[Runnable, int | None, int], Resident]
"""(runnable, device, slots) → Resident, called on the engine thread."""


def is_transformer(runnable: Runnable) -> bool:
    return isinstance(runnable.model, TransformerModel)


@dataclass(frozen=True)
class TransformerEngines:
    """What a version-2 model's predict and trace requests run on: `main` its engine (predict), `passes` a
    passes executor apart from the served slots, whose slot 0 a trace takes (no served sequence is there)."""

    main: Any
    passes: PassesTransformer


def build_resident(runnable: Runnable, device: int | None, slots: int) -> Resident:
    """The model's engine (predict; its executor traces) and, on its GL context, the executor with `slots`
    KV-cache slots the requests run in. Each holds the weights: the engine's executor keeps one sequence of
    its own, so a trace or a prediction never touches a served slot."""
    from ..engine import Engine
    from ..transformer.executors import resolve_transformer_executor

    assert isinstance(runnable.model, TransformerModel)
    spec, weights = runnable.model.spec, runnable.model.weights
    engine = Engine(runnable, device=device)
    engine.gpu.spin_polls = 0  # a spinning wait would keep taking the GIL the event loop needs
    opened: list[Any] = []
    try:
        name, executor_class = resolve_transformer_executor(runnable.executor, spec, engine.gpu)
        opened.append(executor_class(engine.gpu, spec, weights, slots=slots))
        if not isinstance(opened[0], GPUTransformer):
            raise PxglError(
                f"{runnable.model.source}: the {name} executor holds one sequence and reuses no prefix; pxgl serve "
                "runs version-2 models on KV-cache slots: -x passes or -x fused"
            )
        if not isinstance(engine.executor, PassesTransformer):
            opened.append(PassesTransformer(engine.gpu, spec, weights))
    except BaseException:
        for executor in opened:
            executor.close()
        engine.close()
        raise
    passes = opened[1] if len(opened) > 1 else engine.executor

    def close() -> None:
        try:
            for executor in opened:
                executor.close()
        finally:
            engine.close()

    return Resident(opened[0], name, TransformerEngines(engine, passes), close)


class SlotWorker(EngineWorker):
    """The engine thread of a version-2 model: continuous batching over `limits.slots` KV-cache slots."""

    def __init__(
        self,
        name: str,
        runnable: Runnable,
        limits: Limits,
        device: int | None = None,
        *,
        build: BuildResident = build_resident,
    ) -> None:
        super().__init__(name, runnable, limits, device)
        self._build = build
        spec = runnable.model.spec
        architecture = spec.architecture
        self._terms = ModelTerms(architecture.vocab_size, architecture.context_length, limits.slots, spec.bos)
        self.scheduler: Scheduler | None = None

    @property
    def terms(self) -> ModelTerms:
        return self._terms

    def counters(self) -> dict[str, int]:
        counters = self.scheduler.counters if self.scheduler is not None else Counters()
        return {"slots": self.limits.slots} | vars(counters)

    def _run(self) -> None:
        try:
            resident = self._build(self.runnable, self._device, self.limits.slots)
        except BaseException as e:
            self._start_error = e
            self._ready.set()
            return
        try:
            context = self._terms.context_length or 0
            self.scheduler = Scheduler(resident.executor, self.limits.slots, context, self._done)
            warm_up(resident.executor)
        except BaseException as e:
            self._start_error = e
            try:
                resident.close()
            finally:
                self._ready.set()
            return
        self.executor_name = resident.name
        self._ready.set()
        try:
            self._serve(self.scheduler, resident.engines)
        finally:
            resident.close()

    def _serve(self, scheduler: Scheduler, engines: Any) -> None:
        """Admit what waits (in arrival order, as slots free), then one step of every running slot; block on
        the queue only when nothing runs. STOP ends the loop once every job taken before it is done."""
        waiting: deque[Job] = deque()
        stopping = False
        while True:
            idle = not scheduler.running and not waiting
            if idle and stopping:
                return
            stopping |= self._take_queued(waiting, block=idle)
            while waiting:
                job = waiting[0]
                if isinstance(job, GenerateJob) and not job.cancelled and not scheduler.fits(job):
                    break  # the oldest waits for slots; no later request overtakes it
                waiting.popleft()
                self._start(scheduler, engines, job)
            if scheduler.running:
                try:
                    scheduler.step()
                except Exception as e:
                    log.exception("engine %s failed on a step of %d request(s)", self.name, len(scheduler.running))
                    scheduler.fail_all(f"the engine failed: {type(e).__name__}: {e}")
                self.batches += 1

    def _take_queued(self, waiting: deque[Job], block: bool) -> bool:
        """Move the queue's jobs to `waiting` (waiting for the first when `block`); whether STOP came."""
        while True:
            try:
                item = self._queue.get(block=block)
            except queue.Empty:
                return False
            if item is STOP:
                return True
            waiting.append(item)
            block = False

    def _start(self, scheduler: Scheduler, engines: Any, job: Job) -> None:
        try:
            if job.cancelled:
                pass
            elif isinstance(job, CallJob):
                job.sink.put(job.call(engines))
            else:
                assert isinstance(job, GenerateJob)
                scheduler.admit(job)
                return  # running: done when its steps are
        except PxglError as e:
            job.sink.put(JobFailed(str(e), bad_input=True))
        except Exception as e:
            log.exception("engine %s failed on a request", self.name)
            job.sink.put(JobFailed(f"the engine failed: {type(e).__name__}: {e}", bad_input=False))
        self._done(job)

    def _done(self, job: Job) -> None:
        self.requests += 1
        with self._lock:
            self._admitted -= 1
        job.sink.put(FINISHED)


def warm_up(executor: SlotExecutor) -> None:
    """Compile every program a request runs (prefill, a decode step, greedy and sampled with alternatives)
    before the first request: a kernel compiled mid-load stalls every running stream."""
    for choice in (Choice(), Choice(temperature=1.0, top_logprobs=1)):
        executor.truncate(0, 0)
        executor.prefill(0, [0], choice, step=0)
        executor.decode([0], [choice], [1], 1)
    executor.truncate(0, 0)
