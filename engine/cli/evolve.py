"""`pxgl evolve`: search the pixellm family for a better model, every candidate written as pixels and scored
on the GPU (docs/FORMATS.md §13)."""

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import PxglError
from .app import app
from .options import DeviceOption, JsonOption
from .report import emit_json

if TYPE_CHECKING:
    from rich.progress import TaskID

DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def duration(text: str | None) -> float | None:
    if text is None:
        return None
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise PxglError(f"--max-time {text!r}: give a duration such as 90s, 30m or 1.5h")
    return float(match[1]) * SECONDS[match[2]]


@app.command()
def evolve(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="UTF-8 text files to train and select on (blank lines separate documents). Default: the frozen corpus."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="A new (or empty) run folder.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this folder with its recorded settings.")
    ] = None,
    budget: Annotated[
        int | None, typer.Option(help="Training steps for the whole run, screening and full training (default 20000).")
    ] = None,
    max_time: Annotated[
        str | None, typer.Option(help="Wall-clock cap on top of the budget, e.g. 30m (ends screening early).")
    ] = None,
    population: Annotated[int | None, typer.Option(help="Aging evolution's population (default 8).")] = None,
    batch: Annotated[
        int | None, typer.Option(help="Candidates proposed together from the same history (default 4).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds every proposal (default 0).")] = None,
    start: Annotated[
        str | None, typer.Option(help="The model the search starts from and must beat (default pixellm_v0).")
    ] = None,
    proposer: Annotated[
        str | None,
        typer.Option(help="evolution (default), random, or a command: history JSON on stdin, one proposal JSON out."),
    ] = None,
    proposer_timeout: Annotated[
        float | None, typer.Option(help="Seconds an external proposer may take for one proposal (default 60).")
    ] = None,
    finalists: Annotated[int | None, typer.Option(help="Candidates given full training (default 3).")] = None,
    max_weights: Annotated[int | None, typer.Option(help="A candidate's weight limit (default 2,000,000).")] = None,
    max_flops: Annotated[
        int | None, typer.Option(help="A candidate's multiply-adds a prediction limit (default 2,000,000).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="A screening candidate's training steps limit.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training minibatch (default 512).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: one per core, at most --batch).")
    ] = None,
    ray: Annotated[
        str | None, typer.Option(help="Run candidates on Ray: local, or a cluster ADDRESS (needs the ray extra).")
    ] = None,
    device: DeviceOption = None,
    baseline: Annotated[
        list[Path] | None, typer.Option(help="Another run (a random baseline) drawn beside this one.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Evolve architectures of the pixellm family: each candidate is trained, written as pixels, packed as a
    cartridge and scored on the GPU over a selection split; the best few are fully trained, and the best of
    those becomes RUN_DIR/champion.pxa only if it beats the start model on held-out text."""
    import os

    from ..devices import egl_device_for_cuda, parse_devices
    from ..evolve.loop import evolve as run_loop
    from ..evolve.report import write_report
    from ..evolve.rundir import LINEAGE, RunDir
    from ..evolve.runners import runner_for
    from ..evolve.settings import Request, new_settings
    from ..evolve.splits import corpus_splits

    if (out is None) == (resume is None):
        raise PxglError("give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one")
    devices = parse_devices(device)
    for gpu in sorted(set(devices or ())):  # a GPU that is not there is refused now, not by every candidate
        egl_device_for_cuda(gpu)
    run_options = {
        "budget": budget, "population": population, "batch": batch, "seed": seed, "start": start,
        "proposer": proposer, "proposer_timeout": proposer_timeout, "finalists": finalists,
        "max_weights": max_weights, "max_flops": max_flops, "max_steps": max_steps, "batch_size": batch_size,
    }  # fmt: skip
    if resume is not None:
        given = [f"--{name.replace('_', '-')}" for name, value in run_options.items() if value is not None]
        given += ["--max-time"] if max_time is not None else []
        if given or files:
            raise PxglError(
                f"--resume continues with the run's recorded settings; drop {', '.join(given) or 'the files'}"
            )
        run = RunDir(resume)
        settings = run.settings()
        finished = any(r.get("kind") == "promotion" for r in run.read(LINEAGE))
        if settings["files"] and not finished:  # moved since: every candidate left would be recorded as failed
            corpus_splits(tuple(Path(f) for f in settings["files"]), settings["split"])
    else:
        chosen = {name: value for name, value in run_options.items() if value is not None}
        request = Request(**chosen, files=tuple(files or ()), max_time=duration(max_time))
        settings = new_settings(request)
        run = RunDir(out)  # type: ignore[arg-type]
        run.check_new()
    # every precondition is checked before a new run writes anything: one that fails leaves no run.json
    # behind to make the next run refuse the folder
    baselines = []
    for path in baseline or []:
        RunDir(path).settings("--baseline")
        baselines.append((path.name, RunDir(path).read(LINEAGE)))
    display = TrainingDisplay(shown=not as_json)
    count = workers if workers is not None else min(settings["batch"], os.cpu_count() or 1)
    runner = runner_for(ray, count, display.training)
    try:
        if resume is None:
            run.create(settings)
        try:
            with display:
                promotion = run_loop(run, runner, display.line, devices)
        finally:
            write_report(run, baselines)
    finally:
        runner.close()
    if as_json:
        emit_json(promotion)
        return
    typer.echo(f"{run.path}: lineage in {LINEAGE}, report in index.html and report.png")


class TrainingDisplay:
    """Each running candidate's training as a transient bar on stderr, moving at least once a second (on a
    terminal, without --json; local workers only: Ray's report only their results); the run's progress lines
    print above the bars, and a candidate's bar goes with its line."""

    def __init__(self, shown: bool) -> None:
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True, soft_wrap=True, highlight=False)
        self.bars = Progress(console=console, transient=True, disable=not (shown and console.is_terminal))
        self.tasks: dict[int, TaskID] = {}

    def __enter__(self) -> "TrainingDisplay":
        self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bars.stop()

    def line(self, text: str) -> None:
        if self.bars.disable:
            typer.echo(text, err=True)
            return
        self.bars.console.print(text, markup=False)
        for candidate in [c for c in self.tasks if text.startswith(f"c{c:04d} ")]:
            self.bars.remove_task(self.tasks.pop(candidate))

    def training(self, candidate: int, stage: str, done: int, total: int) -> None:
        if candidate not in self.tasks:
            self.tasks[candidate] = self.bars.add_task("", total=total)
        self.bars.update(self.tasks[candidate], description=f"c{candidate:04d} {stage}", completed=done, total=total)
