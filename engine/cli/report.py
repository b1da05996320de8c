"""How verbs report: JSON lines for machines, one line per answer for people, progress bars for long work,
errors as one red line (engine/cli/__init__.py)."""

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, overload

import typer

if TYPE_CHECKING:  # no numpy at import: the verbs that compute import it after single_blas_thread
    import numpy as np

    from ..tokenizer import Tokenizer

PROGRESS_MIN = 10_000
"""Shorter work shows no progress bar."""


LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})
"""Characters other than \\n that some readers split lines on (Python's str.splitlines among them): escaped,
so one record is always one line."""


def emit_json(record: dict) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False).translate(LINE_BREAKS) + "\n")


def percent(confidence_byte: int) -> str:
    """A confidence byte as people read it, the same everywhere: one decimal place."""
    return f"{confidence_byte / 255:.1%}"


class PredictionRecords(Sequence[dict]):
    """One record per prediction pixel: row, id, confidence (and text, and the prompt, when known), each made
    when it is read: a million answers are reported without a million dicts held at once."""

    def __init__(
        self, predictions: "np.ndarray", tokenizer: "Tokenizer | None", prompts: Sequence[str] | None = None
    ) -> None:
        from ..pxi import decode_predictions

        self._predictions, self._tokenizer, self._prompts = predictions, tokenizer, prompts
        self._ids, self._confidence = decode_predictions(predictions)  # arrays: a few bytes a row, not lists
        self._texts: dict[int, str] = {}
        """Each id's text, decoded once (a batch repeats few ids)."""

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, row: int) -> dict: ...

    @overload
    def __getitem__(self, row: slice) -> list[dict]: ...

    def __getitem__(self, row: int | slice) -> dict | list[dict]:
        if isinstance(row, slice):
            return [self[r] for r in range(len(self))[row]]
        row = range(len(self))[row]  # IndexError past the end (iteration stops there)
        token = int(self._ids[row])
        record: dict = {"row": row}
        if self._prompts is not None:
            record["prompt"] = self._prompts[row]
        record |= {
            "id": token,
            "confidence": round(int(self._confidence[row]) / 255, 4),
            "pixel": self._predictions[row, 0].tolist(),
        }
        if self._tokenizer is not None:
            if token not in self._texts:
                self._texts[token] = self._tokenizer.decode([token])
            record["text"] = self._texts[token]
        return record


def prediction_records(
    predictions: "np.ndarray", tokenizer: "Tokenizer | None", prompts: Sequence[str] | None = None
) -> PredictionRecords:
    """The records of a run's prediction pixels, made as they are read (PredictionRecords)."""
    return PredictionRecords(predictions, tokenizer, prompts)


def report_predictions(records: list[dict], written: dict[str, Path], as_json: bool, renderer: str) -> None:
    """JSON lines (each naming the files written, by the keys of `written`: `out` the prediction pixels,
    `tokens_out` the token texture, `viz` the visuals' folder), or for people: one answer a line (beside its
    prompt when there are several), and where the pixels went."""
    if as_json:
        for record in records:
            emit_json(record | {key: str(path) for key, path in written.items()})
        return
    out = written.get("out")
    if len(records) == 1:
        typer.echo(answer_line(records[0]) + (f"  → {out}" if out is not None else ""))
    else:
        for record in records:
            label = shortened(record["prompt"]) if "prompt" in record else f"row {record['row']}"
            typer.echo(f"{label} → {answer_line(record)}")
        counted = f"{len(records)} prediction pixels on {renderer}"
        typer.echo(f"→ {out}: {counted}" if out is not None else counted)
    if "tokens_out" in written:
        typer.echo(f"→ {written['tokens_out']}: the prompts' token texture, {len(records)} row(s)")


ECHO_CHARACTERS = 80
"""A prompt echoed beside its answer is shown whole up to this length, else by its ends."""
ECHO_END = 32


def shortened(prompt: str) -> str:
    """A prompt as an answer's line shows it: quoted whole when short, else its first and last ECHO_END
    characters around an ellipsis, and its length."""
    if len(prompt) <= ECHO_CHARACTERS:
        return repr(prompt)
    return f"{prompt[:ECHO_END] + '…' + prompt[-ECHO_END:]!r} ({len(prompt):,} characters)"


def answer_line(record: dict) -> str:
    answer = repr(record["text"]) if "text" in record else f"token {record['id']}"
    return f"{answer}  id {record['id']}  confidence {percent(record['pixel'][2])}"


class NoBar:
    """The progress bar of short work: rich's Progress surface, doing nothing (importing rich costs ~30 ms)."""

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def add_task(self, description: str, total: float | None = None) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass


def progress_bar(total: int):
    """A transient progress bar on stderr, shown only on a terminal and only for long work."""
    if total < PROGRESS_MIN:
        return NoBar()
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=not console.is_terminal)


@contextmanager
def stages_shown(shown: bool = True) -> Iterator[None]:
    """Within the block, a transient progress bar on stderr for each stage of work that engine/progress.py's
    `report` tells of (compressing pixels, quantizing weights), on a terminal only and unless not `shown`
    (--json); rich is imported at the first report (short work reports nothing)."""
    from ..progress import reporting

    if not shown:
        yield
        return
    bars: list = []
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if not bars:
            from rich.console import Console
            from rich.progress import Progress

            console = Console(stderr=True)
            bars.append(Progress(console=console, transient=True, disable=not console.is_terminal))
            bars[0].start()
        if stage not in tasks:
            tasks[stage] = bars[0].add_task(stage, total=total)
        bars[0].update(tasks[stage], completed=done, total=total)

    try:
        with reporting(report):
            yield
    finally:
        if bars:
            bars[0].stop()
