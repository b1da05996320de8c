"""`pxgl eval`: a model scored on text by the GPU (docs/FORMATS.md §9). Every position of every document is
a context (the last W tokens before it, the first one empty) and a target; the executor's scoring pass gives
each target's log-probability and whether it was the prediction; the host only adds them up.

The text streams through: a document is tokenized a piece at a time and its positions are scored a chunk
at a time, so memory holds the text, one piece's tokens and one chunk's contexts (FORMATS §0.3's bound),
never every position of a long text."""

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from time import monotonic
from typing import Any

import numpy as np

from .constants import TOKEN_MARK
from .corpus import default_corpus, held_out
from .engine import Engine
from .errors import PxglError
from .model import Model
from .pacing import ChunkSizer
from .tokenizer import Tokenizer

CONTEXT_BYTES = 64 << 20
"""Bytes of context pixels one chunk of positions may take (a long window means fewer positions a chunk)."""
MAX_CHUNK = 1 << 16
PIECE_CHARS = 1 << 20
"""A document is tokenized about this many characters at a time."""
PIECE_CUT = re.compile(r"\S(?=\s)")
"""Where a piece may end: after a non-space that a space follows, where §6's split ends a chunk anyway, so
the pieces' tokens are the document's."""
BATCH_TOKENS = 1 << 16
"""Documents are tokenized until a batch holds this many tokens (a long document a piece at a time)."""
GATHER_ENTRIES = 1 << 20
"""Context entries (positions times window) gathered at a time: their index arrays take 8 bytes an entry."""


@dataclass(frozen=True)
class Scores:
    positions: int
    bytes: int
    top1: float
    perplexity: float
    bits_per_byte: float

    def record(self) -> dict[str, Any]:
        return asdict(self)


def pieces(document: str) -> Iterator[str]:
    """The document in pieces of about PIECE_CHARS characters that tokenize (§6) to the document's tokens;
    a stretch with no space to cut at stays whole."""
    start = 0
    while len(document) - start > PIECE_CHARS:
        cut = PIECE_CUT.search(document, start + PIECE_CHARS)
        if cut is None:
            break
        yield document[start : cut.end()]
        start = cut.end()
    yield document[start:]


@dataclass(frozen=True)
class Batch:
    """Documents' tokens back to back (a long one's piece after its last `window` tokens before the piece,
    not scored again), each token's document start (an index in `tokens`), the indexes to score and each
    token's bytes of text: its token_bytes, a piece's last token also what makes the piece's sum its UTF-8
    length (§9: a SentencePiece-style `▁` put before a document is no byte of it)."""

    tokens: np.ndarray
    start: np.ndarray
    positions: np.ndarray
    text_bytes: np.ndarray


class TextPositions:
    """A text's scoring positions in order, a chunk at a time (`take`), holding one batch of about
    BATCH_TOKENS tokens (or one piece of a long document) at a time."""

    def __init__(self, tokenizer: Tokenizer, documents: Iterable[str], window: int) -> None:
        self.window = window
        self.token_bytes = np.array([len(tokenizer.token_bytes(t)) for t in range(tokenizer.vocab_size)], np.int64)
        self._batches = self._batched(tokenizer, documents)
        self._batch = Batch(*(np.zeros(0, np.int64),) * 4)
        self._next = 0
        """The index in the batch's positions of the next one to take."""

    def _batched(self, tokenizer: Tokenizer, documents: Iterable[str]) -> Iterator[Batch]:
        tokens: list[int] = []
        lengths: list[int] = []
        unscored: list[tuple[int, int]] = []
        corrections: list[tuple[int, int]] = []
        """(index in `tokens` of a piece's last token, the piece's UTF-8 length less its tokens' bytes)."""
        for document in documents:
            before: list[int] = []
            for piece in pieces(document):
                ids = tokenizer.encode(piece)
                if not ids:
                    continue
                if before:
                    unscored.append((len(tokens), len(before)))
                tokens += before
                tokens += ids
                lengths.append(len(before) + len(ids))
                difference = len(piece.encode("utf-8")) - int(self.token_bytes[ids].sum())
                corrections.append((len(tokens) - 1, difference))
                before = (before + ids)[-self.window :]
                if len(tokens) >= BATCH_TOKENS:
                    yield self._batch_of(tokens, lengths, unscored, corrections)
                    tokens, lengths, unscored, corrections = [], [], [], []
        if tokens:
            yield self._batch_of(tokens, lengths, unscored, corrections)

    def _batch_of(
        self, tokens: list[int], lengths: list[int], unscored: list[tuple[int, int]], corrections: list[tuple[int, int]]
    ) -> Batch:
        counts = np.array(lengths, np.int64)
        scored = np.ones(len(tokens), bool)
        for begin, count in unscored:
            scored[begin : begin + count] = False
        start = np.repeat(np.cumsum(counts) - counts, counts)
        ids = np.array(tokens, np.int64)
        text_bytes = self.token_bytes[ids]
        for at, difference in corrections:
            text_bytes[at] += difference
        return Batch(ids, start, np.flatnonzero(scored), text_bytes)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The next ≤ n positions' contexts (m, window, 3), target ids (m,) and bytes of text; m = 0 once the
        text ends."""
        contexts, targets, count, text_bytes = [], [], 0, 0
        while count < n:
            if self._next == self._batch.positions.size:
                batch = next(self._batches, None)
                if batch is None:
                    break
                self._batch, self._next = batch, 0
                continue
            positions = self._batch.positions[self._next : self._next + n - count]
            contexts.append(self._contexts(positions))
            targets.append(self._batch.tokens[positions])
            text_bytes += int(self._batch.text_bytes[positions].sum())
            count, self._next = count + positions.size, self._next + positions.size
        if not targets:
            return np.zeros((0, self.window, 3), np.uint8), np.zeros(0, np.int64), 0
        return np.concatenate(contexts), np.concatenate(targets), text_bytes

    def _contexts(self, positions: np.ndarray) -> np.ndarray:
        """Token rows of the batch's positions: each one's last ≤ window tokens of its own document,
        left-aligned, (0, 0, 0) after them (an empty row for a document's first token)."""
        rows = np.zeros((positions.size, self.window, 3), np.uint8)
        columns = np.arange(self.window)
        step = max(1, GATHER_ENTRIES // self.window)
        for low in range(0, positions.size, step):
            at = positions[low : low + step]
            taken = np.minimum(at - self._batch.start[at], self.window)
            present = columns < taken[:, None]
            ids = self._batch.tokens[np.where(present, at[:, None] - taken[:, None] + columns, 0)] * present
            block = rows[low : low + at.size]
            block[..., 0] = ids % 256
            block[..., 1] = ids // 256
            block[..., 2] = present * TOKEN_MARK
        return rows


def score(
    engine: Engine,
    tokenizer: Tokenizer,
    documents: Iterable[str],
    on_progress: Callable[[int], None] | None = None,
) -> Scores:
    """Score every position of the documents on the engine's GPU executor; `on_progress` is told the UTF-8
    bytes of text scored after each chunk."""
    spec = engine.spec
    engine.spec.check_vocabulary(tokenizer.vocab_size, "the tokenizer")
    text = TextPositions(tokenizer, documents, spec.context_window)
    sizer = ChunkSizer(min(MAX_CHUNK, CONTEXT_BYTES // (3 * spec.context_window)))
    positions, hits, size, nats = 0, 0, 0, 0.0
    while True:
        began = monotonic()
        contexts, targets, scored = text.take(sizer.size)
        if targets.size == 0:
            break
        pixels, logprobs = engine.score(contexts, targets)
        sizer.after(targets.size, monotonic() - began)
        predicted = pixels[:, 0].astype(np.int64) + 256 * pixels[:, 1].astype(np.int64)
        hits += int(np.count_nonzero(predicted == targets))
        nats -= float(logprobs.astype(np.float64).sum())
        positions += targets.size
        size += scored
        if on_progress is not None:
            on_progress(scored)
    if positions == 0:
        raise PxglError("no text to score: the documents hold no token")
    return Scores(
        positions=positions,
        bytes=size,
        top1=hits / positions,
        perplexity=math.exp(nats / positions),
        bits_per_byte=nats / math.log(2) / size,
    )


def heldout_documents(model: Model) -> tuple[list[str], str]:
    """The model's own held-out split of the frozen corpus (FORMATS §9), and what it is, in words; refused
    when the model was trained on other text."""
    evaluation = model.spec.eval
    corpus = default_corpus()
    trained_on = evaluation.get("corpus", {})
    same = trained_on.get("sha256") == corpus.info["sha256"] or (
        "sha256" not in trained_on
        and (trained_on.get("documents"), trained_on.get("bytes")) == (corpus.info["documents"], corpus.info["bytes"])
    )
    if not same:
        raise PxglError(
            f"{model.source}: its meta does not say it was trained on pxgl's corpus, so its held-out text is "
            "unknown here; give the text to score with --text FILE"
        )
    split = evaluation.get("split", {})
    seed, fraction = split.get("seed", evaluation.get("seed", 0)), split.get("heldout_fraction", 0.1)
    _, heldout = held_out(corpus.documents, seed, fraction)
    return heldout, f"held-out split of the frozen corpus (seed {seed}, {fraction:.0%}: {len(heldout)} documents)"
