"""One thread per engine: it builds the Engine (its GL context is bound to that thread), takes jobs from a
queue, gathers concurrent generation requests with equal sampling settings into one GPU batch, and hands
results back to the event loop that asked. Handlers never touch GL."""

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ..engine import Engine
from ..errors import PxglError
from ..generation import Sampling
from ..loading import Runnable, plan
from ..pxi import encode_tokens
from .limits import Limits
from .requests import ModelTerms

log = logging.getLogger("pxgl.serve")


class QueueFull(Exception):
    """The engine holds `Limits.queue` requests already (the app answers 503)."""

    def __init__(self, name: str, queue: int) -> None:
        super().__init__(f"model {name!r} has {queue} requests queued already; retry shortly")


class Finished:
    """Sent after a job's last result."""


FINISHED = Finished()


@dataclass(frozen=True)
class JobFailed:
    """Sent instead of a result: `bad_input` (a PxglError: the request's fault) or the server's."""

    message: str
    bad_input: bool


class Sink:
    """Results of a job, put by the engine's thread, awaited on the event loop of the request. Items put
    while the loop has not yet taken the earlier ones travel together: one wakeup of the loop (a write to
    its self-pipe) per burst, not per step of every request of a batch."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: list[Any] = []
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            self._pending.append(item)
            first = len(self._pending) == 1
        if first:
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
        for item in items:
            self._queue.put_nowait(item)

    async def get(self) -> Any:
        return await self._queue.get()


@dataclass(eq=False)
class Job:
    sink: Sink
    cancelled: bool = field(default=False, init=False)
    """Set by the request (its client left, or all its prompts stopped): no more results are wanted."""

    @property
    def batch_key(self) -> Hashable | None:
        """Jobs with an equal key may run in one GPU batch; None runs alone."""
        return None

    @property
    def size(self) -> int:
        return 1


@dataclass(frozen=True)
class Engines:
    """A model's engines on one GL context: `main` runs on the executor asked for (fused where `auto` finds
    it runs the model); `passes` — `main` itself when that is passes — samples, reports alternatives and
    keeps every texture the page draws."""

    main: Engine
    passes: Engine

    @staticmethod
    def build(runnable: Runnable, device: int | None) -> "Engines":
        main = Engine(runnable, device=device)
        main.gpu.spin_polls = 0  # a spinning wait would keep taking the GIL the event loop needs
        if main.executor_name == PASSES:
            return Engines(main, main)
        try:
            return Engines(main, Engine(plan(runnable.model, PASSES), gpu=main.gpu))
        except BaseException:
            main.close()
            raise

    def close(self) -> None:
        if self.passes is not self.main:
            self.passes.close()
        self.main.close()


@dataclass(eq=False, kw_only=True)
class CallJob(Job):
    """Any engine work run alone (predict, trace): `call(engines)`'s value is the one result."""

    call: Callable[[Engines], Any]


@dataclass(eq=False, kw_only=True)
class GenerateJob(Job):
    rows: Sequence[Sequence[int]]
    max_tokens: int
    sampling: Sampling
    top_logprobs: int
    repetition_penalty: float = 1.0
    """Version 2 only (§11); requests.py refuses another value for versions 0/1."""
    cache_prompt: bool = True
    """Version 2: whether each prompt may reuse a cached prefix (§12)."""

    @property
    def needs_passes(self) -> bool:
        return self.sampling.temperature > 0 or self.top_logprobs > 0

    @property
    def batch_key(self) -> Hashable:
        # Every greedy request batches with every other: seed, top-k and top-p do not change an argmax.
        return self.needs_passes, self.sampling if self.sampling.temperature > 0 else Sampling()

    @property
    def size(self) -> int:
        return len(self.rows)


STOP = object()
PASSES = "passes"


class EngineWorker:
    """The thread that owns one model's engines."""

    def __init__(self, name: str, runnable: Runnable, limits: Limits, device: int | None = None) -> None:
        self.name = name
        self.runnable = runnable
        self.limits = limits
        self._device = device
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held: deque[Job] = deque()
        self._last_batch = 0
        """Requests of the batch before: more than one means load, worth a batch wait."""
        self._admitted = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"pxgl-engine-{name}", daemon=True)
        self.executor_name = ""
        self.batches = 0
        """GPU batches run so far (each one engine call); with `requests`, how much batching happened."""
        self.requests = 0

    def start(self) -> None:
        """Build the engine on its thread (weights uploaded, kernels compiled); raise what stopped it."""
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        """Finish the jobs queued, close the engine on its thread and end it."""
        if self._thread.is_alive():
            self._queue.put(STOP)
            self._thread.join()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._admitted >= self.limits.queue:
                raise QueueFull(self.name, self.limits.queue)
            self._admitted += 1
        self._queue.put(job)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._admitted

    @property
    def terms(self) -> ModelTerms:
        return ModelTerms(self.runnable.model.spec.vocab_size)

    def counters(self) -> dict[str, int]:
        """What /health reports besides the queue's counts."""
        return {}

    def _run(self) -> None:
        try:
            engines = Engines.build(self.runnable, self._device)
        except BaseException as e:
            self._start_error = e
            self._ready.set()
            return
        try:
            warm_up(engines, self.limits.max_batch)
        except BaseException as e:
            self._start_error = e
            try:
                engines.close()
            finally:
                self._ready.set()
            return
        self.executor_name = engines.main.executor_name
        self._ready.set()
        try:
            while (batch := self._next_batch()) is not None:
                self._run_batch(engines, batch)
        finally:
            engines.close()

    def _next_batch(self) -> list[Job] | None:
        """The oldest job and, within the batch wait, the jobs that can share its GPU batch."""
        first = self._held.popleft() if self._held else self._queue.get()
        if first is STOP:
            return None
        batch, key = [first], first.batch_key
        if key is None:
            return batch
        room = self.limits.max_batch - first.size
        for job in list(self._held):
            if job.batch_key == key and job.size <= room:
                self._held.remove(job)
                batch.append(job)
                room -= job.size
        # a batch waits for company only under load: a lone client's request would wait for nobody
        deadline = time.monotonic() + (self.limits.batch_wait_s if self._last_batch > 1 else 0.0)
        while room > 0:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is not STOP and job.batch_key == key and job.size <= room:
                batch.append(job)
                room -= job.size
            else:
                self._held.append(job)
                if job is STOP:
                    break
        self._last_batch = len(batch)
        return batch

    def _run_batch(self, engines: Engines, batch: list[Job]) -> None:
        try:
            first = batch[0]
            if isinstance(first, CallJob):
                first.sink.put(first.call(engines))
            else:
                jobs = cast(list[GenerateJob], batch)
                run_generation(engines.passes if jobs[0].needs_passes else engines.main, jobs)
        except PxglError as e:
            for job in batch:
                job.sink.put(JobFailed(str(e), bad_input=True))
        except Exception as e:
            log.exception("engine %s failed on a batch of %d request(s)", self.name, len(batch))
            for job in batch:
                job.sink.put(JobFailed(f"the engine failed: {type(e).__name__}: {e}", bad_input=False))
        finally:
            self.batches += 1
            self.requests += len(batch)
            with self._lock:
                self._admitted -= len(batch)
            for job in batch:
                job.sink.put(FINISHED)


def warm_up(engines: Engines, max_batch: int) -> None:
    """Run once what requests will run, one prompt and a full batch of each, so that every GPU program is
    compiled before the first request is served (a kernel compiled mid-load stalled every client for
    the compile: the H200 bench's 1 s p99 when batches first grew past 64 prompts)."""
    for rows in sorted({1, max_batch}):
        prompts = np.zeros((rows, 1), np.int64)
        engines.main.predict(encode_tokens(prompts.tolist(), engines.main.spec.vocab_size), "warm-up")
        engines.main.generate(prompts, 1)
        engines.passes.generate(prompts, 1, Sampling(temperature=1.0), top_logprobs=1)


def run_generation(engine: Engine, jobs: list[GenerateJob]) -> None:
    """One GPU generation for every job's prompts: the longest max_tokens runs and each job gets its rows of
    each block of steps (a Generation) until its own max_tokens; the GPU work stops once no job wants more. A
    prompt's draw row is its index in its own request (docs/FORMATS.md §11), so a request answers the same
    alone or batched."""
    jobs = [job for job in jobs if not job.cancelled]  # their clients left while they waited
    if not jobs:
        return
    rows = [row for job in jobs for row in job.rows]
    draw_rows = [index for job in jobs for index in range(len(job.rows))]
    starts = np.cumsum([0] + [len(job.rows) for job in jobs])
    blocks = engine.stream_blocks(
        rows,
        max(job.max_tokens for job in jobs),
        jobs[0].sampling,
        top_logprobs=max(job.top_logprobs for job in jobs),
        draw_rows=draw_rows,
    )
    wanting = list(zip(jobs, starts[:-1], starts[1:], strict=True))
    with closing(blocks):
        for block in blocks:
            still = []
            for job, start, end in wanting:
                if job.cancelled:
                    continue
                job.sink.put(block.part(slice(start, end), job.max_tokens - block.first, job.top_logprobs))
                if block.first + block.tokens.shape[1] < job.max_tokens:
                    still.append((job, start, end))
            wanting = still
            if not wanting:
                break
