"""Where candidates run (docs/FORMATS.md §13): a runner takes a batch of tasks and yields (index, result)
as each finishes; the loop records them as they come and proposes again only from whole batches, so the
order workers finish in changes nothing.

    LocalRunner  worker processes on this machine (spawned: no GL or BLAS state is inherited)
    RayRunner    Ray tasks, one CPU each, on a local Ray or a cluster (the `ray` extra)"""

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Protocol

from ..errors import PxglError
from ..extras import install_command
from .worker import BLAS_ENV, REPORT_SECONDS, Task, listen_to, run_candidate

TrainingProgress = Callable[[int, str, int, int], None]
"""(candidate, stage, done, total) of a candidate's training (train's stages), as a worker reports it."""


class Runner(Protocol):
    workers: int

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]: ...

    def close(self) -> None: ...


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Worker initializer: a worker does not outlive the run that started it, however that run ended
    (SIGKILL included), so no orphan goes on writing a candidate's files into a folder a --resume is
    filling again. Linux's parent-death signal; elsewhere workers end when they next find the pool gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the run died before the signal was armed
        os._exit(1)


def start_worker(parent: int, events: Any) -> None:
    die_with_parent(parent)
    listen_to(events)


class LocalRunner:
    """`on_training` hears how each running candidate's training goes, at least every REPORT_SECONDS."""

    def __init__(self, workers: int, on_training: TrainingProgress | None = None) -> None:
        self.workers, self.on_training = workers, on_training
        # spawned workers read their environment when they start, before numpy loads
        os.environ.update(BLAS_ENV)
        context = multiprocessing.get_context("spawn")
        self._events = context.Queue()
        self._pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=start_worker, initargs=(os.getpid(), self._events)
        )

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        futures = {self._pool.submit(run_candidate, task): index for index, task in enumerate(tasks)}
        running, candidates = set(futures), {task.id for task in tasks}
        while running:
            finished, running = wait(running, timeout=REPORT_SECONDS, return_when=FIRST_COMPLETED)
            self._pass_on_events(candidates)
            for future in finished:
                candidates.discard(tasks[futures[future]].id)
                yield futures[future], future.result()

    def _pass_on_events(self, candidates: set[int]) -> None:
        """The events that came, of the candidates still running (a finished one's last may come late)."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if self.on_training is not None and event[0] in candidates:
                self.on_training(*event)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._events.close()


class RayRunner:
    """`address`: "local" starts a Ray of `workers` CPUs here, anything else joins that cluster; a Ray the
    caller started already (ray.init) is used as it is."""

    def __init__(self, address: str, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise PxglError(f"--ray needs Ray: {install_command('ray')}") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            env = {"env_vars": BLAS_ENV}
            try:
                if address == "local":
                    ray.init(num_cpus=workers, runtime_env=env, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, runtime_env=env, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise PxglError(f"--ray {address}: cannot start or join Ray ({str(e).splitlines()[0][:160]})") from None
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", workers))
        self._remote = ray.remote(num_cpus=1, runtime_env={"env_vars": BLAS_ENV})(run_candidate)

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        pending = {self._remote.remote(task): index for index, task in enumerate(tasks)}
        while pending:
            done, _ = self._ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), self._ray.get(done[0])

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def runner_for(ray: str | None, workers: int, on_training: TrainingProgress | None = None) -> Runner:
    """A LocalRunner, or a RayRunner (whose tasks report no training progress: only their results)."""
    if workers < 1:
        raise PxglError(f"--workers {workers}: give at least 1")
    return LocalRunner(workers, on_training) if ray is None else RayRunner(ray, workers)
