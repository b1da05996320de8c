"""/v1/completions: a request's prompts through the engine's worker, shaped as OpenAI's text completions —
one answer, or server-sent events a step at a time. Stop strings and UTF-8 are handled on bytes as the
tokens arrive, so the streamed text is, joined, the answer `pxgl generate` prints."""

import codecs
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .requests import BadRequest, CompletionRequest
from .stepping import StopScanner
from .worker import FINISHED, EngineWorker, GenerateJob, JobFailed, QueueFull, Sink, StepSlice

TokenBytes = Callable[[int], bytes]


@dataclass
class Choice:
    """One prompt's continuation as its tokens arrive."""

    index: int
    token_bytes: TokenBytes
    scanner: StopScanner
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    ids: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    tops: list[dict[str, float]] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    """Each token's end, in bytes from the continuation's start."""
    emitted: bytes = b""
    reported: int = 0
    """Tokens already sent in a stream's logprobs."""
    finish_reason: str | None = None
    closed: bool = False
    """A stream has sent this prompt's finish reason."""

    def add(self, token: int, logprob: float, top: dict[str, float]) -> str:
        """Take the next token; the text that can be shown now."""
        if self.finish_reason is not None:
            return ""
        data = self.token_bytes(token)
        self.ids.append(token)
        self.logprobs.append(None if math.isnan(logprob) else round(float(logprob), 6))
        self.tops.append(top)
        self.ends.append((self.ends[-1] if self.ends else 0) + len(data))
        out = self.scanner.feed(data)
        self.emitted += out
        if self.scanner.stopped:
            # Only the tokens wholly before the stop string are returned (docs/FORMATS.md §11).
            kept = sum(end <= len(self.emitted) for end in self.ends)
            del self.ids[kept:], self.logprobs[kept:], self.tops[kept:], self.ends[kept:]
            self.finish_reason = "stop"
        return self.decoder.decode(out, final=self.finish_reason is not None)

    def finish(self) -> str:
        """All steps are in: what the stop scanner held back, and the reason it ended."""
        if self.finish_reason is not None:
            return ""
        out = self.scanner.flush()
        self.emitted += out
        self.finish_reason = "length"
        return self.decoder.decode(out, final=True)

    def logprobs_since(self, start: int, upto: int) -> dict[str, Any]:
        """OpenAI's logprobs object of tokens start..upto (text_offset: characters from the text's start)."""
        starts = [self.ends[i - 1] if i else 0 for i in range(start, upto)]
        return {
            "tokens": [self.token_bytes(t).decode("utf-8", "replace") for t in self.ids[start:upto]],
            "token_logprobs": self.logprobs[start:upto],
            "top_logprobs": self.tops[start:upto],
            "text_offset": [len(self.emitted[:at].decode("utf-8", "replace")) for at in starts],
        }

    def confirmed(self) -> int:
        """Tokens whose bytes are all emitted (none of them can still turn out to be in a stop string)."""
        return sum(end <= len(self.emitted) for end in self.ends)


class Completion:
    def __init__(self, request: CompletionRequest, rows: list[list[int]], token_bytes: TokenBytes) -> None:
        self.request = request
        self.rows = rows
        self.token_bytes = token_bytes
        self.id = "cmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.choices = [Choice(i, token_bytes, StopScanner(request.stops)) for i in range(len(rows))]
        self.job: GenerateJob | None = None

    def start(self, worker: EngineWorker) -> None:
        self.job = GenerateJob(
            Sink(),
            rows=self.rows,
            max_tokens=self.request.max_tokens,
            sampling=self.request.sampling,
            top_logprobs=self.request.logprobs or 0,
        )
        try:
            worker.submit(self.job)
        except QueueFull:
            raise BadRequest(
                503,
                f"model {worker.name!r} has {worker.limits.queue} requests queued already; retry shortly",
                code="queue_full",
            ) from None

    async def steps(self) -> AsyncIterator[StepSlice]:
        assert self.job is not None
        while (item := await self.job.sink.get()) is not FINISHED:
            if isinstance(item, JobFailed):
                raise BadRequest(400 if item.bad_input else 500, item.message)
            yield item
            if all(choice.finish_reason is not None for choice in self.choices):
                self.job.cancelled = True
                return

    def apply(self, step: StepSlice) -> list[str]:
        """Feed one step to every prompt; the text each can show now."""
        texts = []
        for row, choice in enumerate(self.choices):
            top = {
                self.token_bytes(int(t)).decode("utf-8", "replace"): round(float(p), 6)
                for t, p in zip(step.top_ids[row], step.top_logprobs[row], strict=True)
            }
            texts.append(choice.add(int(step.tokens[row]), float(step.logprobs[row]), top))
        return texts

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancelled = True

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
        }

    def usage(self) -> dict[str, int]:
        prompt = sum(len(row) for row in self.rows)
        completion = sum(len(choice.ids) for choice in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def answer(self) -> dict[str, Any]:
        """The whole completion, once every step is in."""
        texts = ["" for _ in self.choices]
        async for step in self.steps():
            for row, text in enumerate(self.apply(step)):
                texts[row] += text
        choices = []
        for row, choice in enumerate(self.choices):
            texts[row] += choice.finish()
            logprobs = choice.logprobs_since(0, len(choice.ids)) if self.request.logprobs is not None else None
            record = {"text": texts[row], "index": row, "logprobs": logprobs, "finish_reason": choice.finish_reason}
            choices.append(record)
        return self.chunk(choices) | {"usage": self.usage()}

    async def events(self, first: StepSlice | None, rest: AsyncIterator[StepSlice]) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per prompt per step that shows text, one with each prompt's finish
        reason, then `[DONE]`. `first` is the first step of `steps()`, awaited before the response began (so
        an error before any step is an HTTP error, not an event), `rest` the others. A failure later is sent
        as an `error` event."""
        try:
            if first is not None:
                for event in self._step_events(first):
                    yield event
                async for step in rest:
                    for event in self._step_events(step):
                        yield event
            for row, choice in enumerate(self.choices):
                if not choice.closed:
                    yield sse(self.chunk([self._delta(row, choice.finish())]))
        except BadRequest as e:
            yield sse({"error": {"message": e.message, "type": "server_error", "param": None, "code": e.code}})
        finally:
            self.cancel()
        yield b"data: [DONE]\n\n"

    def _step_events(self, step: StepSlice) -> list[bytes]:
        return [
            sse(self.chunk([self._delta(row, text)]))
            for row, text in enumerate(self.apply(step))
            if text or (self.choices[row].finish_reason is not None and not self.choices[row].closed)
        ]

    def _delta(self, row: int, text: str) -> dict[str, Any]:
        choice = self.choices[row]
        logprobs = None
        if self.request.logprobs is not None:
            upto = choice.confirmed() if choice.finish_reason is None else len(choice.ids)
            logprobs = choice.logprobs_since(choice.reported, upto)
            choice.reported = upto
        choice.closed = choice.finish_reason is not None
        return {"text": text, "index": row, "logprobs": logprobs, "finish_reason": choice.finish_reason}


def sse(record: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n\n"
