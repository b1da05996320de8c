"""How far long steps deep inside a verb are (compressing a big weight image, quantizing tensors), told to the
verb's progress bar without a callback threaded through every function between them."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Report = Callable[[str, int, int], None]
"""report(stage, done, total): `done` of `total` units (bytes, tensors) of a stage of work."""
_reporter: ContextVar[Report | None] = ContextVar("reporter", default=None)


@contextmanager
def reporting(report: Report) -> Iterator[None]:
    """Within the block, long steps deep in a verb (compressing a big weight image, quantizing tensors) tell
    `report` how far they are, without a callback through every function between them and the verb."""
    token = _reporter.set(report)
    try:
        yield
    finally:
        _reporter.reset(token)


def report(stage: str, done: int, total: int) -> None:
    """Tell the verb's `reporting` callback, if any, how far this stage is."""
    reporter = _reporter.get()
    if reporter is not None:
        reporter(stage, done, total)
