"""§14.6: the windows of strided evaluation and the scores."""

from __future__ import annotations


def windows(length: int, context: int) -> list[tuple[int, int, int]]:
    """(b_k, e_k, first scored index) of every window over u[0..M-1]; each target scored once."""
    stride = context // 2
    out: list[tuple[int, int, int]] = []
    k, previous_end = 0, 1
    while True:
        begin = k * stride
        end = min(begin + context, length)
        out.append((begin, end, previous_end))
        if end == length:
            return out
        previous_end, k = end, k + 1
