"""`pxgl eval` of a version-2 model (docs/FORMATS.md §14.6): §9's scores, each document begun with `bos` when
the meta declares it, position 0 never a target, and a document longer than the context scored in windows of C
tokens with stride C // 2, every target exactly once (Hugging Face's strided perplexity)."""

import math
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import PxglError
from ..evaluate import Scores
from ..tokenizer import Tokenizer
from .engine import TransformerEngine


def scoring_windows(length: int, context: int) -> list[tuple[int, int, int]]:
    """(begin, end, first target) of each window over a document of `length` tokens: the window's tokens
    u[begin:end] run at positions 0.., and targets first..end-1 are scored from it."""
    stride, windows, previous_end = context // 2, [], 1
    for begin in range(0, length, stride):
        end = min(begin + context, length)
        windows.append((begin, end, previous_end))
        previous_end = end
        if end == length:
            break
    return windows


def score_documents(
    engine: TransformerEngine,
    tokenizer: Tokenizer,
    documents: Iterable[str],
    on_progress: Callable[[int], None] | None = None,
) -> Scores:
    """Score every target of every document; `on_progress` is told the UTF-8 bytes scored after each window."""
    token_bytes = np.array([len(tokenizer.token_bytes(t)) for t in range(tokenizer.vocab_size)], np.int64)
    context, bos = engine.architecture.context_length, engine.spec.bos
    positions, hits, size, nats = 0, 0, 0, 0.0
    for document in documents:
        tokens = np.array(([] if bos is None else [bos]) + tokenizer.encode(document), np.int64)
        for begin, end, first in scoring_windows(len(tokens), context):
            if end - begin < 2:
                continue
            predicted, logprobs = engine.score_window(tokens[begin:end], first - begin)
            targets = tokens[first:end]
            hits += int(np.count_nonzero(predicted == targets))
            nats -= float(logprobs.astype(np.float64).sum())
            positions += targets.size
            scored = int(token_bytes[targets].sum())
            size += scored
            if on_progress is not None:
                on_progress(scored)
    if positions == 0:
        raise PxglError("no text to score: no document holds two tokens (position 0 is never a target, §14.6)")
    return Scores(
        positions=positions,
        bytes=size,
        top1=hits / positions,
        perplexity=math.exp(nats / positions),
        bits_per_byte=nats / math.log(2) / size,
    )
