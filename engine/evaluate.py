"""`pxgl eval`: a model scored on text by the GPU (docs/FORMATS.md §9). Every position of every document is
a context (the last W tokens before it, the first one empty) and a target; the executor's scoring pass gives
each target's log-probability and whether it was the prediction; the host only adds them up."""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .constants import TOKEN_MARK
from .corpus import default_corpus, held_out
from .engine import Engine
from .errors import PxglError
from .model import Model
from .tokenizer import Tokenizer

CONTEXT_BYTES = 64 << 20
"""Bytes of context pixels one chunk of positions may take (a long window means fewer positions a chunk)."""
MAX_CHUNK = 1 << 16


@dataclass(frozen=True)
class Scores:
    positions: int
    bytes: int
    top1: float
    perplexity: float
    bits_per_byte: float

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Positions:
    """A text as scoring positions: the documents' tokens back to back, and where each document starts."""

    tokens: np.ndarray
    start: np.ndarray
    """(positions,) index in `tokens` of the first token of the position's document."""
    bytes: int

    @classmethod
    def of(cls, tokenizer: Tokenizer, documents: list[str]) -> "Positions":
        encoded = [np.asarray(tokenizer.encode(d), dtype=np.int64) for d in documents]
        lengths = np.array([e.size for e in encoded], dtype=np.int64)
        tokens = np.concatenate(encoded) if encoded else np.zeros(0, np.int64)
        start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        return cls(tokens, start, sum(len(d.encode("utf-8", "surrogatepass")) for d in documents))

    def contexts(self, begin: int, end: int, window: int) -> np.ndarray:
        """(end - begin, window, 3) token rows: each position's last ≤ window tokens of its own document,
        left-aligned, (0, 0, 0) after them (an empty row for a document's first token)."""
        positions = np.arange(begin, end)
        taken = np.minimum(positions - self.start[begin:end], window)
        columns = np.arange(window)[None, :]
        present = columns < taken[:, None]
        at = np.where(present, positions[:, None] - taken[:, None] + columns, 0)
        ids = self.tokens[at]
        rows = np.zeros((end - begin, window, 3), np.uint8)
        rows[..., 0] = np.where(present, ids % 256, 0)
        rows[..., 1] = np.where(present, ids // 256, 0)
        rows[..., 2] = np.where(present, TOKEN_MARK, 0)
        return rows


def score(
    engine: Engine, tokenizer: Tokenizer, documents: list[str], on_chunk: Callable[[int], None] | None = None
) -> Scores:
    """Score every position of the documents on the engine's GPU executor."""
    spec = engine.spec
    engine.spec.check_vocabulary(tokenizer.vocab_size, "the tokenizer")
    text = Positions.of(tokenizer, documents)
    total = text.tokens.size
    if total == 0:
        raise PxglError("no text to score: the documents hold no token")
    chunk = max(1, min(MAX_CHUNK, CONTEXT_BYTES // (3 * spec.context_window)))
    hits, nats = 0, 0.0
    for begin in range(0, total, chunk):
        end = min(begin + chunk, total)
        targets = text.tokens[begin:end]
        pixels, logprobs = engine.score(text.contexts(begin, end, spec.context_window), targets)
        predicted = pixels[:, 0].astype(np.int64) + 256 * pixels[:, 1].astype(np.int64)
        hits += int(np.count_nonzero(predicted == targets))
        nats -= float(logprobs.astype(np.float64).sum())
        if on_chunk is not None:
            on_chunk(end - begin)
    return Scores(
        positions=total,
        bytes=text.bytes,
        top1=hits / total,
        perplexity=math.exp(nats / total),
        bits_per_byte=nats / math.log(2) / text.bytes,
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
