"""The CPU work a large request brings (its JSON read and checked, prompts tokenized, answer shaped, PNGs
coded) runs off the event loop, one piece at a time on one thread; small work runs on the loop, where the
trip to a thread would cost more than the work."""

from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class OffLoop:
    """One thread, not anyio's pool of 40: Python threads share the GIL, so more of them add no speed, and
    each takes its turn at the GIL before the loop gets its own. With 40 tokenizing at once, /health took
    13.9 s to answer; with one, the loop has the GIL every other switch interval."""

    def __init__(self) -> None:
        self.limiter = anyio.CapacityLimiter(1)

    async def run(self, work: Callable[[], T], large: bool) -> T:
        """`work()`'s value: on the loop when not `large`, else on the thread."""
        if not large:
            return work()
        return await anyio.to_thread.run_sync(work, limiter=self.limiter)
