"""One candidate, start to end, in a worker: train it (numpy, BLAS single-threaded), write it as pixels
(.pxi + meta + tokenizer + pxVM program), pack the cartridge, and score the cartridge on the GPU over
the selection split (docs/FORMATS.md §13). Everything a worker needs travels in the task; it returns
the lineage record's measured part."""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLAS_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
"""Set in every worker's environment before numpy loads: one BLAS thread, so sums add in one order and
the same seed gives the same weights on any machine's core count."""


@dataclass(frozen=True)
class Task:
    id: int
    stage: str
    """"screen" (the genome's own steps) or "final" (full training)."""
    genome: dict[str, Any]
    steps: int
    folder: Path
    files: tuple[Path, ...]
    """The corpus: empty for the frozen one."""
    split: dict[str, Any]
    """seed, heldout_fraction, validation_fraction (FORMATS §9)."""
    batch_size: int
    device: int | None


REPORT_SECONDS = 0.5
"""A worker tells the run how its candidate's training goes about this often (and at each stage's end)."""
_events: Any = None
"""The run's queue of (candidate, stage, done, total), in a worker of a LocalRunner (listen_to)."""


def listen_to(events: Any) -> None:
    """Worker initializer: training progress goes to `events`; a worker's exit never waits on it."""
    global _events
    _events = events
    events.cancel_join_thread()


class Reporter:
    """train's progress callback in a worker: every REPORT_SECONDS at most, and at each stage's end, one
    (candidate, stage, done, total) event to `send`."""

    def __init__(self, candidate: int, send: Callable[[tuple], None], clock: Callable[[], float]) -> None:
        self.candidate, self.send, self.clock = candidate, send, clock
        self.last = -REPORT_SECONDS

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if done >= total or now - self.last >= REPORT_SECONDS:
            self.last = now
            self.send((self.candidate, stage, done, total))


def worker_device(slot: int, devices: list[int] | None) -> int | None:
    """The GL device of the worker running a batch's `slot`-th task: round robin over the devices given,
    else None (PXGL_DEVICE, else the first)."""
    return None if not devices else devices[slot % len(devices)]


def run_candidate(task: Task) -> dict[str, Any]:
    """Train, write, pack and score one candidate. Its failure (a member this corpus cannot train, a GPU
    that refuses its shapes, memory) is the record's error, not the run's end: the search goes on."""
    from ..errors import PxglError

    began = time.monotonic()
    try:
        measured = _run(task)
    except PxglError as e:
        measured = {"error": str(e)}
    except Exception as e:  # any failure of one candidate is recorded, with its type
        measured = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return measured | {"wall_seconds": round(time.monotonic() - began, 2)}


def _run(task: Task) -> dict[str, Any]:
    from ..engine import Engine
    from ..evaluate import score
    from ..loading import open_model
    from ..pack import pack
    from ..pxvm.files import program_path_for, write_compiled_program
    from ..train import TrainConfig, train
    from .space import genome_from_json
    from .splits import corpus_splits

    genome = genome_from_json(task.genome, None)
    name = f"c{task.id:04d}" + ("-final" if task.stage == "final" else "")
    task.folder.mkdir(parents=True, exist_ok=True)
    weights = task.folder / f"{name}.pxi"
    config = TrainConfig(
        out=weights,
        files=task.files,
        seed=task.split["seed"],
        heldout_fraction=task.split["heldout_fraction"],
        validation_fraction=task.split["validation_fraction"],
        batch_size=task.batch_size,
        # screening keeps its last weights (one validation pass, the costly part of a short run); full
        # training keeps the best of four
        eval_every=task.steps if task.stage == "screen" else max(1, task.steps // 4),
        warmup_steps=min(TrainConfig.warmup_steps, task.steps // 10),
        **genome.train_config(task.steps),
    )
    evaluation = train(config, Reporter(task.id, _events.put, time.monotonic) if _events is not None else None)
    spec = open_model(weights).model.spec
    write_compiled_program(program_path_for(weights), spec)
    cartridge = weights.with_suffix(".pxa")
    pack(weights, cartridge, name=name)
    _, selection, _ = corpus_splits(task.files, task.split)
    runnable = open_model(cartridge)
    tokenizer = runnable.model.tokenizer
    with Engine(runnable, device=task.device) as engine:
        selected = score(engine, tokenizer, selection).record()
    scores = {"select": selected, "trainer": evaluation["validation"]["quantized"]}
    return {
        "scores": scores,
        "steps_trained": evaluation["training"]["steps"],
        "cartridge": str(cartridge.relative_to(task.folder.parent)),
        "cartridge_sha256": hashlib.sha256(cartridge.read_bytes()).hexdigest(),
        # the cartridge's meta holds the trainer's wall time; the weight image is what the seed decides
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
