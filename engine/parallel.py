"""Data-parallel batches: one Engine per GPU number, each in a worker process of its own (a GL context belongs
to the thread that made it, and one process per GPU keeps each driver's work apart).

    with EnginePool(open_model("pixellm_v1"), devices=[0, 1]) as pool:
        pixels = pool.predict_ids(rows)        # (B, 1, 3), in the order of rows

The batch goes to the workers through shared memory and comes back the same way; the queues carry only
which rows to run. Rows are handed out a chunk at a time to whichever worker is free, so a faster GPU takes
more of them. A worker that fails or dies ends the whole call with one PxglError and the pool with it: no
partial result is ever returned."""

import os
import queue
import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from .engine import Engine
from .errors import PxglError
from .executors.fused_config import FusedConfig
from .loading import Runnable, plan
from .model import Model
from .pxi import encode_tokens
from .pxvm.program import Program

if TYPE_CHECKING:  # multiprocessing loads where a pool starts: one engine (a cold `pxgl infer`) saves ~9 ms
    from multiprocessing.process import BaseProcess
    from multiprocessing.shared_memory import SharedMemory

CHUNKS_PER_WORKER = 8
"""A call is cut into about this many chunks a worker, so a worker that finishes early takes more."""
MAX_CHUNK = 1 << 18
"""Rows a chunk holds at most: the progress bar moves at least this often."""
POLL_SECONDS = 0.2
"""How often the pool looks for a dead worker while it waits."""
STOP_SECONDS = 10.0
SHARED_MEMORY = "/dev/shm"
MIB = 1 << 20
PREDICT, PROMPTS, SCORE = "predict", "prompts", "score"


@dataclass(frozen=True)
class SharedArray:
    """An array in a shared memory block, as the workers find it."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Task:
    """Rows [start, end) of a call: inputs read, outputs written, in shared memory (prompt texts, small
    beside their token rows, travel in the task itself)."""

    call: int
    kind: str
    start: int
    end: int
    inputs: tuple[SharedArray, ...]
    outputs: tuple[SharedArray, ...]
    source: str
    texts: tuple[str, ...] = ()


def check_shared_space(size: int) -> None:
    """Refuse a block /dev/shm has no room for: the pages of a shared memory block are only claimed when
    written, and a write past a full tmpfs kills the writer with SIGBUS instead of raising."""
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError:  # not Linux's tmpfs: nothing to ask
        return
    free = stats.f_bavail * stats.f_frsize
    if size > free:
        raise PxglError(
            f"the batch needs {size / MIB:,.1f} MiB of shared memory to reach the engine workers but "
            f"{SHARED_MEMORY} has {free / MIB:,.1f} MiB free: give fewer prompts at a time or a larger "
            f"{SHARED_MEMORY} (docker run --shm-size)"
        )


class SharedArrays:
    """The shared memory blocks of one call, owned by the pool's process and unlinked when the call ends."""

    def __init__(self) -> None:
        self._blocks: dict[str, SharedMemory] = {}

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> SharedArray:
        dtype = np.dtype(dtype)
        size = max(1, int(np.prod(shape)) * dtype.itemsize)
        check_shared_space(size)
        from multiprocessing.shared_memory import SharedMemory

        block = SharedMemory(create=True, size=size)
        self._blocks[block.name] = block
        return SharedArray(block.name, tuple(shape), dtype.str)

    def put(self, array: np.ndarray) -> SharedArray:
        shared = self.empty(array.shape, array.dtype)
        self.view(shared)[...] = array
        return shared

    def view(self, shared: SharedArray) -> np.ndarray:
        return np.ndarray(shared.shape, np.dtype(shared.dtype), buffer=self._blocks[shared.name].buf)

    def copy(self, shared: SharedArray) -> np.ndarray:
        return self.view(shared).copy()

    def __enter__(self) -> "SharedArrays":
        return self

    def __exit__(self, *_: object) -> None:
        for block in self._blocks.values():
            block.close()
            block.unlink()
        self._blocks.clear()


class Attached:
    """A worker's view of the current call's shared arrays, attached once a call."""

    def __init__(self) -> None:
        self._call: int | None = None
        self._blocks: dict[str, SharedMemory] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def arrays(self, task: Task, shared: tuple[SharedArray, ...]) -> list[np.ndarray]:
        from multiprocessing.shared_memory import SharedMemory

        if task.call != self._call:
            self.release()
            self._call = task.call
        for array in shared:
            if array.name not in self._arrays:
                block = self._blocks[array.name] = SharedMemory(name=array.name)
                self._arrays[array.name] = np.ndarray(array.shape, np.dtype(array.dtype), buffer=block.buf)
        return [self._arrays[array.name] for array in shared]

    def release(self) -> None:
        self._arrays.clear()  # the views go first: a block with views on it cannot close
        for block in self._blocks.values():
            block.close()
        self._blocks.clear()


def shift_rows(message: str, source: str, offset: int) -> str:
    """An engine's error about row r of a chunk, renumbered as row r + offset of the whole batch."""
    pattern = re.compile(rf"^{re.escape(source)}: row (\d+)")
    return pattern.sub(lambda m: f"{source}: row {int(m[1]) + offset}", message, count=1)


def run_task(engine: Engine, task: Task, attached: Attached) -> None:
    inputs, outputs = attached.arrays(task, task.inputs), attached.arrays(task, task.outputs)
    rows = slice(task.start, task.end)
    if task.kind == PREDICT:
        outputs[0][rows] = engine.predict(inputs[0][rows], task.source)
    elif task.kind == PROMPTS:
        tokenizer, window = engine.model.tokenizer, engine.spec.context_window
        pixels = encode_tokens((tokenizer.encode(text)[-window:] for text in task.texts), engine.spec.vocab_size)
        outputs[0][rows] = engine.predict(pixels, task.source)
    else:
        outputs[0][rows], outputs[1][rows] = engine.score(inputs[0][rows], inputs[1][rows])


def worker_main(number: int, device: int, runnable: Runnable, tuning: object, tasks, results) -> None:
    """One worker: an Engine on `device`, then tasks until the pool sends None. Errors go back as messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the pool ends us
    try:
        engine = Engine(runnable, device=device, tuning=tuning)
    except Exception as e:  # a PxglError, or a bug: either way one message, and the pool stops
        results.put(("error", number, str(e) if isinstance(e, PxglError) else internal_error(device, e)))
        return
    results.put(("ready", number, engine.gpu.renderer, engine.executor_name))
    attached = Attached()
    with engine:
        while (task := tasks.get()) is not None:
            try:
                run_task(engine, task, attached)
            except PxglError as e:
                results.put(("error", number, shift_rows(str(e), task.source, task.start)))
                return
            except Exception as e:
                results.put(("error", number, internal_error(device, e)))
                return
            finally:
                if tasks.empty():
                    attached.release()
            results.put(("done", number, task.call, task.end - task.start))


def internal_error(device: int, error: Exception) -> str:
    return f"GPU {device}: internal error in the engine worker: {type(error).__name__}: {error}"


def death(process: "BaseProcess") -> str:
    code = process.exitcode or 0
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def uniform_rows(executor: str, tuning: object | None) -> int:
    """Rows from which a run takes one kernel whatever its size: the fused executor answers up to small_max
    prompts with its few-prompt kernel and more with its tile kernel, whose sums run in another order (so a
    near-tie or a confidence byte can come out differently); the others run every size alike."""
    if executor not in ("auto", "fused"):
        return 1
    return (tuning if isinstance(tuning, FusedConfig) else FusedConfig()).small_max + 1


def chunk_bounds(total: int, step: int, uniform: int) -> list[tuple[int, int]]:
    """Chunks of about `step` rows, in order; when the whole batch reaches `uniform` rows, none smaller than
    that, so every row runs on the kernel one engine would have run the whole batch on: the pool's answers
    are one engine's, bit for bit."""
    count = -(-total // step)
    if total >= uniform:
        count = max(1, min(count, total // uniform))
    size, extra = divmod(total, count)
    bounds, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        bounds.append((start, end))
        start = end
    return bounds


class EnginePool:
    """One Engine per entry of `devices` (GPU numbers, engine/devices.py; a number may repeat), each in its
    own worker process; predict, predict_ids, predict_prompts and score split a batch across them and return
    the results in input order, as one Engine's would be. Use it from one thread; `close()` (or `with`) ends
    the workers."""

    def __init__(
        self,
        model: Model | Runnable,
        devices: Sequence[int],
        *,
        executor: str | None = None,
        program: Program | None = None,
        tuning: object | None = None,
        chunk: int | None = None,
    ) -> None:
        """`model`, `executor`, `program`, `tuning`: as for Engine. `chunk`: rows a task holds (default: about
        CHUNKS_PER_WORKER tasks a worker, at most MAX_CHUNK rows each)."""
        runnable = model if isinstance(model, Runnable) else plan(model, executor, program)
        if not devices:
            raise PxglError("an engine pool needs at least one GPU number")
        if chunk is not None and chunk < 1:
            raise PxglError(f"chunk {chunk}: a chunk holds at least one row")
        self.runnable, self.model, self.spec = runnable, runnable.model, runnable.model.spec
        self.devices = list(devices)
        self._chunk = chunk
        self._uniform_rows = uniform_rows(runnable.executor, tuning)
        self._call = 0
        self._closed = False
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a forked child would inherit the parent's GL state
        self._tasks = context.Queue()
        self._results = context.Queue()
        self._workers = [
            context.Process(
                target=worker_main,
                args=(number, device, runnable, tuning, self._tasks, self._results),
                name=f"pxgl-engine-{number}-gpu{device}",
                daemon=True,
            )
            for number, device in enumerate(self.devices)
        ]
        for worker in self._workers:
            worker.start()
        renderers, executors = {}, set()
        while len(renderers) < len(self._workers):
            _, number, renderer, executor_name = self._next_message("while starting")
            renderers[number], executors = renderer, executors | {executor_name}
        self.renderers = [renderers[n] for n in range(len(self._workers))]
        """Each worker's GL renderer, in the order of `devices`."""
        self.executor_name = ", ".join(sorted(executors))

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers (each closes its engine) and wait for them."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._tasks.put(None)
        for worker in self._workers:
            worker.join(STOP_SECONDS)
        self._end_workers()

    def _abort(self) -> None:
        """End every worker now: after a failure, whatever they were doing is abandoned."""
        self._closed = True
        self._end_workers()

    def _end_workers(self) -> None:
        for worker in self._workers:
            if worker.is_alive():
                worker.kill()
            worker.join(STOP_SECONDS)
        for channel in (self._tasks, self._results):
            channel.cancel_join_thread()  # a message no one will read must not keep this process alive
            channel.close()

    def __enter__(self) -> "EnginePool":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None):
        if error is None:
            self.close()
        else:
            self._abort()

    @property
    def renderer(self) -> str:
        """The GL renderers the workers run on, in words."""
        names = sorted(set(self.renderers))
        return f"{len(self.renderers)} workers on {', '.join(names)}"

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, in the order of `devices`."""
        return [worker.pid or 0 for worker in self._workers]

    # --- work ----------------------------------------------------------------------------------------
    def predict(
        self, token_pixels: np.ndarray, source: str = "token texture", on_tile: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for a token texture of B rows, as Engine.predict. `on_tile(n)`
        is called as each chunk of n rows comes back (for one progress bar over the whole batch)."""
        pixels = np.asarray(token_pixels)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape or pixels.dtype != np.uint8:
            raise PxglError(f"{source}: expected an RGB token texture, got an array of shape {pixels.shape}")
        with SharedArrays() as shared:
            out = shared.empty((len(pixels), 1, 3), np.uint8)
            self._run(PREDICT, len(pixels), (shared.put(pixels),), (out,), source, on_tile)
            return shared.copy(out)

    def predict_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Prediction pixels for prompts of token ids, as Engine.predict_ids."""
        for r, row in enumerate(rows):
            if len(row) == 0:
                raise PxglError(f"prompt {r} is empty: every prompt needs at least one token")
        return self.predict(encode_tokens([list(row) for row in rows], self.spec.vocab_size), "prompts")

    def predict_prompts(
        self, prompts: Sequence[str], source: str = "prompts", on_tile: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Prediction pixels, (B, 1, 3) uint8, for B prompt texts, each tokenized by the worker that runs it
        with the model's tokenizer: the host's serial share of a batch shrinks to handing out text."""
        with SharedArrays() as shared:
            out = shared.empty((len(prompts), 1, 3), np.uint8)
            self._run(PROMPTS, len(prompts), (), (out,), source, on_tile, prompts)
            return shared.copy(out)

    def score(
        self, tails: np.ndarray, targets: np.ndarray, on_tile: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prediction pixels (n, 3) and log p(target) (n,), as Engine.score (engine/evaluate.py takes a pool
        where it takes an engine)."""
        tails, targets = np.asarray(tails, np.uint8), np.asarray(targets, np.int64)
        with SharedArrays() as shared:
            pixels, logprobs = shared.empty((len(tails), 3), np.uint8), shared.empty((len(tails),), np.float32)
            inputs = (shared.put(tails), shared.put(targets))
            self._run(SCORE, len(tails), inputs, (pixels, logprobs), "scoring", on_tile)
            return shared.copy(pixels), shared.copy(logprobs)

    def _run(
        self,
        kind: str,
        total: int,
        inputs: tuple[SharedArray, ...],
        outputs: tuple[SharedArray, ...],
        source: str,
        on_tile: Callable[[int], None] | None,
        texts: Sequence[str] = (),
    ) -> None:
        if self._closed:
            raise RuntimeError("this EnginePool is closed")
        self._call += 1
        step = self._chunk or max(1, min(MAX_CHUNK, -(-total // (len(self._workers) * CHUNKS_PER_WORKER))))
        for start, end in chunk_bounds(total, step, self._uniform_rows):
            chunk = tuple(texts[start:end])
            self._tasks.put(Task(self._call, kind, start, end, inputs, outputs, source, chunk))
        done = 0
        try:
            while done < total:
                _, _, _, rows = self._next_message(f"after {done:,} of {total:,} rows")
                done += rows
                if on_tile is not None:
                    on_tile(rows)
        except BaseException:  # Ctrl-C or a failing callback too: the workers' queued work is abandoned
            self._abort()
            raise

    def _next_message(self, during: str) -> tuple:
        """The next message from a worker; an error, or a worker found dead, ends the pool with a PxglError."""
        while True:
            try:
                message = self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                message = None
            if message is not None and message[0] == "error":
                self._abort()
                raise PxglError(message[2])
            dead = next((w for w in self._workers if w.exitcode is not None), None)
            if dead is not None:
                self._fail(dead, during)
            if message is not None:
                return message

    def _fail(self, dead: "BaseProcess", during: str) -> None:
        """End the pool over a worker that exited: with its own error where it sent one before going."""
        try:
            while True:
                message = self._results.get(timeout=POLL_SECONDS)
                if message[0] == "error":
                    self._abort()
                    raise PxglError(message[2])
        except queue.Empty:
            pass
        number = self._workers.index(dead)
        self._abort()
        raise PxglError(
            f"engine worker {number} (GPU {self.devices[number]}, process {dead.pid}) died ({death(dead)}) "
            f"{during}; the whole batch is abandoned, no result kept: rerun it"
        )


def open_engines(runnable: Runnable, devices: Sequence[int] | None) -> Engine | EnginePool:
    """What runs a batch on these GPU numbers: one Engine in this process for none given or one (as pxgl
    always ran), an EnginePool for several."""
    if devices is None or len(devices) == 1:
        return Engine(runnable, device=None if devices is None else devices[0])
    return EnginePool(runnable, devices)


def renderer_of(engines: Engine | EnginePool) -> str:
    return engines.renderer if isinstance(engines, EnginePool) else engines.gpu.renderer
