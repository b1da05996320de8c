"""/v1/completions: a request's prompts through the engine's worker, shaped as OpenAI's text completions —
one answer, or server-sent events a step at a time. Stop strings and UTF-8 are handled on bytes as the
tokens arrive, so the streamed text is, joined, the answer `pxgl generate` prints."""

import bisect
import codecs
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection
from functools import partial
from typing import Any

from ..generation import Choice, Detokenizer, GeneratedStep, Generation, TextRow
from .offloop import OffLoop
from .requests import BadRequest, CompletionRequest
from .worker import FINISHED, EngineWorker, GenerateJob, JobFailed, Sink

INLINE_TOKENS = 64
"""Tokens of a block (prompts times steps) shaped into text and events on the event loop; a larger block is
shaped off it (some 50 µs a token on a CPU: one answer of 64 prompts of 1,024 tokens held the loop 3.5 s)."""


class CharacterCount:
    """Characters of a growing byte string's prefixes decoded as UTF-8 with invalid bytes replaced (as
    `data[:end].decode("utf-8", "replace")` counts them), at ends that do not go back: each byte is decoded
    once, not once per token after it (a stream of 64 prompts of 1,024 tokens took 26 s of CPU so)."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.fed = 0
        self.chars = 0

    def at(self, data: bytes, end: int) -> int:
        assert end >= self.fed, "text offsets are asked in order"
        self.chars += len(self.decoder.decode(data[self.fed : end]))
        self.fed = end
        # bytes held for a character not yet whole: a prefix ending there ends in U+FFFD for them
        pending = self.decoder.getstate()[0]
        return self.chars + len(pending.decode("utf-8", "replace"))


class Answer:
    """One prompt's continuation as its tokens arrive: generation's TextRow (stop strings over bytes, the
    tokens wholly before the stop) decoded as UTF-8, with what a stream has sent of it."""

    def __init__(self, tokenizer: Detokenizer, stops: list[bytes], eos_ids: Collection[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.row = TextRow(tokenizer, stops, eos_ids)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.offsets = CharacterCount()
        self.finish_reason: str | None = None
        self.reported = 0
        """Tokens already sent in a stream's logprobs."""
        self.closed = False
        """A stream has sent this prompt's finish reason."""

    def add(self, step: GeneratedStep, row: int) -> str:
        """Take the prompt's token of this step; the text that can be shown now."""
        if self.finish_reason is not None:
            return ""
        choice = Choice.of(step, row)
        out = self.row.add(choice)
        if self.row.stopped:
            self.finish_reason = "stop"
        return self.decoder.decode(out, final=self.row.stopped)

    def finish(self) -> str:
        """All steps are in: what the stop scanner held back."""
        if self.finish_reason is not None:
            return ""
        self.finish_reason = "length"
        return self.decoder.decode(self.row.finish(), final=True)

    @property
    def tokens(self) -> int:
        return len(self.row.kept)

    def confirmed(self) -> int:
        """Tokens that can be reported: all kept ones at the end, before it those whose bytes are all shown
        (none of them can still turn out to lie in a stop string)."""
        if self.finish_reason is not None:
            return self.tokens
        # ends grow: a binary search among the tokens whose text is all out (a held token's end may still move)
        return bisect.bisect_right(self.row.ends, len(self.row.data), 0, self.row.unshown)

    def logprobs(self, start: int, upto: int) -> dict[str, Any]:
        """OpenAI's logprobs object of tokens start..upto (text_offset: characters from the text's start)."""
        chosen = self.row.steps[start:upto]
        starts = [self.row.ends[i - 1] if i else 0 for i in range(start, upto)]
        return {
            "tokens": [self.text(c.token) for c in chosen],
            "token_logprobs": [None if math.isnan(c.logprob) else round(c.logprob, 6) for c in chosen],
            "top_logprobs": [{self.text(t): round(p, 6) for t, p in c.alternatives} for c in chosen],
            "text_offset": [self.offsets.at(self.row.data, at) for at in starts],
        }

    def text(self, token: int) -> str:
        return self.tokenizer.token_bytes(token).decode("utf-8", "replace")


class Completion:
    ID_PREFIX = "cmpl-"

    def __init__(
        self,
        request: CompletionRequest,
        rows: list[list[int]],
        tokenizer: Detokenizer,
        off_loop: OffLoop,
        eos_ids: Collection[int] = (),
    ) -> None:
        self.request = request
        self.off_loop = off_loop
        self.rows = rows
        self.id = self.ID_PREFIX + secrets.token_hex(12)
        self.created = int(time.time())
        self.answers = [Answer(tokenizer, request.stops, eos_ids) for _ in rows]
        self.job: GenerateJob | None = None

    def start(self, worker: EngineWorker) -> None:
        self.job = GenerateJob(
            Sink(),
            rows=self.rows,
            max_tokens=self.request.max_tokens,
            sampling=self.request.sampling,
            top_logprobs=self.request.logprobs or 0,
            repetition_penalty=self.request.repetition_penalty,
            cache_prompt=self.request.cache_prompt,
        )
        worker.submit(self.job)

    async def blocks(self) -> AsyncIterator[Generation]:
        """The job's blocks of steps as the engine hands them over. Each is taken (`take`, `block_events`)
        before the next is asked for; once every prompt has finished, the GPU work is called off."""
        assert self.job is not None
        while (item := await self.job.sink.get()) is not FINISHED:
            if isinstance(item, JobFailed):
                raise BadRequest(400 if item.bad_input else 500, item.message)
            yield item
            if self.finished():
                self.job.cancelled = True
                return

    def finished(self) -> bool:
        return all(one.finish_reason is not None for one in self.answers)

    def apply(self, step: GeneratedStep) -> list[str]:
        """Feed one step to every prompt; the text each can show now."""
        return [answer.add(step, row) for row, answer in enumerate(self.answers)]

    def take(self, block: Generation) -> list[str]:
        """Feed a block's steps to every prompt; the text each can show now."""
        texts = ["" for _ in self.answers]
        for step in block.steps():
            for row, text in enumerate(self.apply(step)):
                texts[row] += text
            if self.finished():
                break
        return texts

    async def shaped(self, work: Callable[[Generation], Any], block: Generation) -> Any:
        return await self.off_loop.run(partial(work, block), block.tokens.size > INLINE_TOKENS)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancelled = True

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """A record of the answer (OpenAI's chunks carry `"usage": null` where the stream ends with the usage)."""
        record = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
        }
        return record | {"usage": None} if self.request.include_usage else record

    def usage(self) -> dict[str, int]:
        prompt = sum(len(row) for row in self.rows)
        completion = sum(answer.tokens for answer in self.answers)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def answer(self) -> bytes:
        """The whole completion as JSON, once every step is in."""
        texts = ["" for _ in self.answers]
        tokens = 0
        async for block in self.blocks():
            tokens += block.tokens.size
            for row, text in enumerate(await self.shaped(self.take, block)):
                texts[row] += text
        return await self.off_loop.run(partial(self.rendered, texts), tokens > INLINE_TOKENS)

    def rendered(self, texts: list[str]) -> bytes:
        choices = []
        for row, one in enumerate(self.answers):
            text = texts[row] + one.finish()
            logprobs = one.logprobs(0, one.tokens) if self.request.logprobs is not None else None
            choices.append({"text": text, "index": row, "logprobs": logprobs, "finish_reason": one.finish_reason})
        answer = self.chunk(choices) | {"usage": self.usage()}
        return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")

    async def events(self, first: Generation | None, rest: AsyncIterator[Generation]) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per prompt per step that shows text, one with each prompt's finish
        reason, then `[DONE]`. `first` is the first block of `blocks()`, awaited before the response began
        (so an error before any step is an HTTP error, not an event), `rest` the others. A failure later is
        sent as an `error` event."""
        try:
            if first is not None:
                for event in await self.shaped(self.block_events, first):
                    yield event
                async for block in rest:
                    for event in await self.shaped(self.block_events, block):
                        yield event
            for row, one in enumerate(self.answers):
                if not one.closed:
                    for event in self.delta_events(row, one.finish()):
                        yield event
            if self.request.include_usage:
                yield sse(self.chunk([]) | {"usage": self.usage()})
        except BadRequest as e:
            yield sse({"error": {"message": e.message, "type": "server_error", "param": None, "code": e.code}})
        finally:
            self.cancel()
        yield b"data: [DONE]\n\n"

    def block_events(self, block: Generation) -> list[bytes]:
        events = []
        for step in block.steps():
            for row, text in enumerate(self.apply(step)):
                if text or (self.answers[row].finish_reason is not None and not self.answers[row].closed):
                    events += self.delta_events(row, text)
            if self.finished():
                break
        return events

    def delta_events(self, row: int, text: str) -> list[bytes]:
        """The events of prompt `row`'s new text (its finish reason with it, once finished)."""
        return [sse(self.chunk([self._delta(row, text)]))]

    def _delta(self, row: int, text: str) -> dict[str, Any]:
        one = self.answers[row]
        logprobs = None
        if self.request.logprobs is not None:
            upto = one.confirmed()
            logprobs = one.logprobs(one.reported, upto)
            one.reported = upto
        one.closed = one.finish_reason is not None
        return {"text": text, "index": row, "logprobs": logprobs, "finish_reason": one.finish_reason}


def sse(record: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n\n"
