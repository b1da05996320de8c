"""One engine's answers as the reference for the parallel paths, computed on a thread of its own."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pxgl.engine import Engine
from pxgl.loading import Runnable
from pxgl.model import Model

T = TypeVar("T")


def on_one_engine(model: Model | Runnable, work: Callable[[Engine], T]) -> T:
    """`work(engine)` on a new Engine made, used and closed on a thread of its own: a GL context stays current
    on the thread that made it (even released, until another replaces it), so pytest's thread and the
    session's backend there are neither disturbed nor relied on."""

    def run() -> T:
        with Engine(model) as engine:
            return work(engine)

    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(run).result()
