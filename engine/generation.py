"""Generation settings and results (docs/FORMATS.md §11): how a token is chosen, how many, where a row stops.
The GPU part is engine/executors/generation.py."""

import codecs
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import PxglError

MAX_NEW_TOKENS = 4096
"""Most tokens one generation makes per prompt (§11)."""
MAX_TOP_LOGPROBS = 20
"""Most alternatives `--logprobs K` reports per token (§11)."""
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Sampling:
    """How each step chooses its token: greedy at temperature 0, else a seeded draw (§11). `top_k` None or
    ≥ vocab_size keeps every token; `top_p` 1 keeps every token."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise PxglError(f"temperature must be a finite number ≥ 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise PxglError(f"top-k must be ≥ 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise PxglError(f"top-p must lie in (0, 1], got {self.top_p}")
        if not 0 <= self.seed <= MAX_SEED:
            raise PxglError(f"seed must lie in 0..{MAX_SEED}, got {self.seed}")


def check_steps(steps: int) -> int:
    if not 1 <= steps <= MAX_NEW_TOKENS:
        raise PxglError(f"-n: tokens to generate must lie in 1..{MAX_NEW_TOKENS}, got {steps}")
    return steps


def check_top_logprobs(count: int) -> int:
    if not 0 <= count <= MAX_TOP_LOGPROBS:
        raise PxglError(f"--logprobs: alternatives per token must lie in 0..{MAX_TOP_LOGPROBS}, got {count}")
    return count


def check_stops(stops: Sequence[str]) -> list[bytes]:
    """Stop strings as the UTF-8 bytes they are matched as; an empty one would stop every row at once."""
    if any(stop == "" for stop in stops):
        raise PxglError("--stop: a stop string may not be empty")
    encoded = []
    for stop in stops:
        try:
            encoded.append(stop.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise PxglError(f"--stop {stop!r}: not valid text ({e.reason}); give the stop string as UTF-8") from None
    return encoded


@dataclass(frozen=True)
class GeneratedStep:
    """One step of every prompt, as `Engine.stream` yields it."""

    step: int
    tokens: np.ndarray
    """(B,) int64 ids."""
    confidences: np.ndarray
    """(B,) uint8: each token's prediction-pixel confidence byte, round(255 p) (§5)."""
    logprobs: np.ndarray
    """(B,) float32 log p of each token under the model (temperature 1, §11); NaN from an executor that keeps
    no logits (pxvm)."""
    top_ids: np.ndarray
    """(B, K) int64: the K likeliest tokens, likeliest first (K = the `top_logprobs` asked for; 0: none)."""
    top_logprobs: np.ndarray
    """(B, K) float32: their log-probabilities."""


@dataclass(frozen=True)
class Generation:
    """What `Engine.generate` returns: every generated token of every prompt (all steps ran). Also a block of
    steps `first`.. of every prompt as a generation hands them over (`steps` splits it)."""

    tokens: np.ndarray
    """(B, N) int64 ids, row r prompt r's generated tokens in order."""
    confidences: np.ndarray
    """(B, N) uint8, as GeneratedStep.confidences."""
    logprobs: np.ndarray
    """(B, N) float32, as GeneratedStep.logprobs."""
    top_ids: np.ndarray
    """(B, N, K) int64, as GeneratedStep.top_ids."""
    top_logprobs: np.ndarray
    """(B, N, K) float32."""
    first: int = 0
    """The step of column 0."""

    def part(self, rows: slice, steps: int, top: int) -> "Generation":
        """These rows' first `steps` steps of the block (fewer where the block is shorter), with their `top`
        likeliest alternatives."""
        tokens, confidences, logprobs = (getattr(self, name)[rows, :steps] for name in BY_STEP[:3])
        top_ids, top_logprobs = (getattr(self, name)[rows, :steps, :top] for name in BY_STEP[3:])
        return Generation(tokens, confidences, logprobs, top_ids, top_logprobs, first=self.first)

    def steps(self) -> list[GeneratedStep]:
        return [
            GeneratedStep(self.first + s, *(getattr(self, name)[:, s] for name in BY_STEP))
            for s in range(self.tokens.shape[1])
        ]

    @staticmethod
    def joined(blocks: Sequence["Generation"], axis: int) -> "Generation":
        """Blocks side by side: later steps (axis 1) or more prompts (axis 0)."""
        arrays = (np.concatenate([getattr(b, name) for b in blocks], axis=axis) for name in BY_STEP)
        return Generation(*arrays, first=blocks[0].first)


BY_STEP = ("tokens", "confidences", "logprobs", "top_ids", "top_logprobs")
"""Generation's arrays, each (B, N, …)."""


class StopScanner:
    """Stop strings over a byte stream that arrives piece by piece (§11, OpenAI semantics): `feed` returns
    the bytes that can be shown now — a tail that could begin a stop string is held back until the next piece
    decides it — and, once a stop string appears, nothing more; `flush` returns what is held at the end.
    `stop_at` is the stop's byte offset in the whole stream (None while none appeared)."""

    def __init__(self, stops: Sequence[bytes]) -> None:
        self.stops = list(stops)
        self.held = b""
        self.emitted = 0
        self.stop_at: int | None = None

    @property
    def stopped(self) -> bool:
        return self.stop_at is not None

    def feed(self, data: bytes) -> bytes:
        if self.stopped:
            return b""
        return self._scan(self.held + data, final=False)

    def flush(self) -> bytes:
        if self.stopped:
            return b""
        return self._scan(self.held, final=True)

    def _scan(self, text: bytes, final: bool) -> bytes:
        """Show what no stop string can claim any more. A stop found in `text` ends it unless a stop string
        that would begin earlier is still incomplete at the end of `text` (then everything from there waits
        for the next piece); without a stop, a tail that could begin one waits."""
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        complete = min(found, default=len(text))
        pending = len(text) if final else self._pending_start(text, complete)
        if pending < complete or not found:
            out, self.held = text[:pending], text[pending:]
            if final:
                self.held = b""
                out = text
        else:
            out, self.held = text[:complete], b""
            self.stop_at = self.emitted + complete
        self.emitted += len(out)
        return out

    def _pending_start(self, text: bytes, before: int) -> int:
        """The earliest start j < `before` from which `text` is a proper prefix of a stop string (one that the
        next bytes could complete), else `before`."""
        longest = max(map(len, self.stops), default=0)
        for j in range(max(0, len(text) - longest + 1), before):
            if any(len(text) - j < len(stop) and stop.startswith(text[j:]) for stop in self.stops):
                return j
        return before


@dataclass(frozen=True)
class Choice:
    """One generated token of one prompt."""

    token: int
    confidence: int
    logprob: float
    alternatives: list[tuple[int, float]]
    """(id, log p) of the likeliest tokens, likeliest first."""

    @staticmethod
    def of(step: GeneratedStep, row: int) -> "Choice":
        alternatives = zip(step.top_ids[row].tolist(), step.top_logprobs[row].tolist(), strict=True)
        return Choice(int(step.tokens[row]), int(step.confidences[row]), float(step.logprobs[row]), list(alternatives))


class Detokenizer(Protocol):
    """What streaming text needs of a tokenizer (both versions offer it, §6, §6.1)."""

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str: ...

    def joins_next(self, token: int) -> bool: ...

    def token_bytes(self, token: int) -> bytes: ...


class TextStream:
    """A token sequence's text as its tokens come (§11): each piece is what `decode` of all the tokens so far
    adds to the pieces before, as UTF-8, so the pieces joined are `decode(ids)` exactly. Text is held back
    while it may still change: a character whose bytes are not all in, and everything while the last token
    joins the next (a byte-fallback run is decoded as a whole). A step decodes only the tokens from the first
    of the text shown before last (Hugging Face text-generation-inference's prefix and read offsets): the
    decoder's start rules (a first `▁` dropped) touch both decodings alike, and a step costs a few tokens."""

    def __init__(self, tokenizer: Detokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        """Where the decoded window starts: the first token of the text shown before last."""
        self.read = 0
        """Tokens whose text is all shown."""
        self.shown = 0
        """Characters of the window's text shown."""

    @property
    def whole(self) -> bool:
        """Every token's text is shown."""
        return self.read == len(self.ids)

    def add(self, token: int) -> bytes:
        self.ids.append(token)
        return b"" if self.tokenizer.joins_next(token) else self._shown(final=False)

    def flush(self) -> bytes:
        """The text held back, at the sequence's end."""
        return self._shown(final=True)

    def _shown(self, final: bool) -> bytes:
        text = self.tokenizer.decode(self.ids[self.prefix :])
        # a character midway decodes to one U+FFFD, last; what is before it is final
        held = not final and text.endswith("\ufffd") and self._incomplete()
        new = text[self.shown : len(text) - held]
        if not new:
            return b""
        if held:
            self.shown = len(text) - 1
            self._restart()
        else:
            self.prefix, self.read = self.read, len(self.ids)
            self.shown = len(self.tokenizer.decode(self.ids[self.prefix :]))
        return new.encode("utf-8", "surrogatepass")

    def _restart(self) -> None:
        """The window moved to its last token that begins a character (its first byte is no continuation
        byte): the bytes before it are decoded for good, and a tail that stays midway (a model repeating a
        lead byte) does not make every step decode a longer window."""
        for k in range(len(self.ids) - 1, self.prefix, -1):
            data = self.tokenizer.token_bytes(self.ids[k])
            if data and not 0x80 <= data[0] < 0xC0:
                self.prefix = self.read = k
                self.shown = len(self.tokenizer.decode(self.ids[k:])) - 1
                return

    def _incomplete(self) -> bool:
        """Whether the window's bytes end inside a character that more bytes could complete (bytes that can
        never begin one are U+FFFD for good)."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.decode(b"".join(self.tokenizer.token_bytes(t) for t in self.ids[self.prefix :]))
        return bool(decoder.getstate()[0])


class TextRow:
    """One prompt's answer as its tokens arrive: the bytes to show now (`add`), and at the end the tokens
    wholly before its stop (§11) and the text (`decode` of its tokens, §11)."""

    def __init__(self, tokenizer: Detokenizer, stops: Sequence[bytes], eos_ids: Collection[int] = ()) -> None:
        self.text = TextStream(tokenizer)
        self.scanner = StopScanner(stops)
        self.eos_ids = frozenset(eos_ids)
        self.at_eos = False
        """An end-of-sequence token came (§16.2): the row ended before its bytes."""
        self.ends: list[int] = []
        """Each step's end in the text: where the text shown with or after it ends."""
        self.unshown = 0
        """The steps before it have their end for good; from it on some text is held back (their ends grow)."""
        self.steps: list[Choice] = []
        """Every token taken: up to the one the stop string begins in, or the end-of-sequence token."""
        self.data = b""

    @property
    def stopped(self) -> bool:
        return self.scanner.stopped or self.at_eos

    @property
    def finish_reason(self) -> str:
        """Why the row ended (§16.2): "eos", "stop" (a stop string) or "length"."""
        return "eos" if self.at_eos else "stop" if self.scanner.stopped else "length"

    def add(self, choice: Choice) -> bytes:
        """Take the row's next token; the bytes that can be shown now."""
        if self.stopped:
            return b""
        self.steps.append(choice)
        self.ends.append(self.ends[-1] if self.ends else 0)
        if choice.token in self.eos_ids:  # the end: its bytes are not text, what was held back is
            self.at_eos = True
            return self.finish()
        return self._scanned(self.text.add(choice.token))

    def finish(self) -> bytes:
        out = self._scanned(self.text.flush())
        tail = self.scanner.flush()
        self.data += tail
        return out + tail

    def _scanned(self, text: bytes) -> bytes:
        if text:
            end = self.ends[-1] + len(text)
            self.ends[self.unshown :] = [end] * (len(self.ends) - self.unshown)
        if self.text.whole:
            self.unshown = len(self.ends)
        out = self.scanner.feed(text)
        self.data += out
        return out

    @property
    def kept(self) -> list[Choice]:
        """The tokens wholly before the stop or the end-of-sequence token (every token without one)."""
        if self.at_eos:
            return self.steps[:-1]
        end = self.scanner.stop_at
        return self.steps if end is None else [s for s, e in zip(self.steps, self.ends, strict=True) if e <= end]


def follow_text(
    steps: Generator[GeneratedStep, None, None],
    tokenizer: Detokenizer,
    stops: Sequence[bytes],
    count: int,
    on_bytes: Callable[[int, bytes], None] | None = None,
    eos_ids: Collection[int] = (),
) -> list[TextRow]:
    """Follow a stream of `count` prompts' steps as text: each row stops at its stop string (§11) or an
    end-of-sequence id (§16.2); `on_bytes(row, data)` gets each row's bytes as they can be shown; the stream is
    closed as soon as every row has stopped."""
    rows = [TextRow(tokenizer, stops, eos_ids) for _ in range(count)]
    with closing(steps):
        for step in steps:
            for r, row in enumerate(rows):
                if row.stopped:
                    continue
                choice = Choice.of(step, r)
                data = row.add(choice)
                if data and on_bytes is not None:
                    on_bytes(r, data)
            if all(row.stopped for row in rows):
                break
    for r, row in enumerate(rows):
        data = row.finish()
        if data and on_bytes is not None:
            on_bytes(r, data)
    return rows
