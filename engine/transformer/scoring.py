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
    """Score every target of every document; `on_progress` is told the UTF-8 bytes scored after each window
    (a window's targets' token bytes, the document's last window what is left of its bytes)."""
    token_bytes = np.array([len(tokenizer.token_bytes(t)) for t in range(tokenizer.vocab_size)], np.int64)
    context, bos = engine.architecture.context_length, engine.spec.bos
    positions, hits, size, nats = 0, 0, 0, 0.0
    for document in documents:
        ids = tokenizer.encode(document)
        tokens = np.array(([] if bos is None else [bos]) + ids, np.int64)
        left = len(document.encode("utf-8"))
        if bos is None and ids:
            left = max(0, left - len(first_token_bytes(tokenizer, ids[0])))
        windows = [
            (begin, end, first) for begin, end, first in scoring_windows(len(tokens), context) if end - begin >= 2
        ]
        for k, (begin, end, first) in enumerate(windows):
            predicted, logprobs = engine.score_window(tokens[begin:end], first - begin)
            targets = tokens[first:end]
            hits += int(np.count_nonzero(predicted == targets))
            nats -= float(logprobs.astype(np.float64).sum())
            positions += targets.size
            scored = left if k == len(windows) - 1 else min(left, int(token_bytes[targets].sum()))
            left -= scored
            size += scored
            if on_progress is not None:
                on_progress(scored)
    if positions == 0:
        raise PxglError("no text to score: no document holds two tokens (position 0 is never a target, §14.6)")
    if size == 0:
        raise PxglError("no text to score: the documents' scored tokens stand for no bytes")
    return Scores(
        positions=positions,
        bytes=size,
        top1=hits / positions,
        perplexity=math.exp(nats / positions),
        bits_per_byte=nats / math.log(2) / size,
    )


def first_token_bytes(tokenizer: Tokenizer, token: int) -> bytes:
    """The bytes of a document that its first token stands for (§14.6): its token_bytes, less a leading
    space that decoding drops (a SentencePiece-style `▁` put before the document)."""
    data = tokenizer.token_bytes(token)
    return data[1:] if data.startswith(b" ") and not tokenizer.decode([token]).startswith(" ") else data
