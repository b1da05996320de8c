"""Work sized by time, so progress moves several times a second on any renderer: a CPU renderer (llvmpipe)
gets small chunks, a GPU chunks big enough to be fast."""

from collections.abc import Iterator

from .executors.fused_config import FusedConfig

SMALLEST = 2 * FusedConfig.small_max
"""Chunks start, and stay, above the fused executor's few-prompt kernel (up to small_max prompts): on llvmpipe
it scored pixellm_v1 at 64 positions a second against 1,000 for the tile kernel, and its sums run in another
order (engine/parallel.py: uniform_rows)."""
CHUNK_SECONDS = 0.3
"""Each chunk takes about this long at the pace of the chunk before it."""


class ChunkSizer:
    """Items (positions, prompts) per chunk: a power of two from SMALLEST up to `largest`, about CHUNK_SECONDS
    at the pace the last chunk went, and at most twice the last one (one fast chunk, e.g. of short
    documents, is not trusted with a huge next one)."""

    def __init__(self, largest: int, smallest: int = SMALLEST) -> None:
        self.largest = max(1, largest)
        self.smallest = min(smallest, self.largest)
        self.size = self.smallest

    def after(self, items: int, seconds: float) -> int:
        """The next chunk's size, after one of `items` took `seconds`."""
        limit = min(items * CHUNK_SECONDS / max(seconds, 1e-6), self.largest, 2 * self.size)
        size = self.smallest
        while 2 * size <= limit:
            size *= 2
        self.size = size
        return size

    def sizes(self) -> Iterator[int]:
        """The size as it is when each next chunk is cut, without end."""
        while True:
            yield self.size

    def take(self, left: int) -> int:
        """Items of the next chunk when `left` are left: `size`, but never leaving fewer than `smallest` behind
        (a small last chunk could run on another kernel): then all of them where they fit one chunk, else so
        many that `smallest` remain."""
        if left <= self.size or left - self.size >= self.smallest:
            return min(left, self.size)
        return left if left <= self.largest else left - self.smallest
