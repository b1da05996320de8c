"""/v1/chat/completions (docs/FORMATS.md §16.3): each served model's chat format, found once; a request turned
into the one-prompt completion serve runs (continuous batching, the prefix cache), its answer shaped as OpenAI's
chat completion — a message, or chunks of deltas (the role first, the finish reason last)."""

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from ..chat.prompt import ChatFormat, model_template
from ..chat.template import ChatTemplate
from ..errors import PxglError
from ..generation import Generation
from ..loading import Runnable
from .chat_requests import parse_chat
from .completions import Completion, sse
from .limits import Limits
from .offloop import OffLoop
from .requests import BadRequest, ModelTerms, model_sequences

ASSISTANT = "assistant"


class ChatCompletion(Completion):
    ID_PREFIX = "chatcmpl-"

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return super().chunk(choices) | {"object": "chat.completion.chunk"}

    def rendered(self, texts: list[str]) -> bytes:
        (answer,) = self.answers
        message = {"role": ASSISTANT, "content": texts[0] + answer.finish()}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
        record = super().chunk([choice]) | {"object": "chat.completion", "usage": self.usage()}
        return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")

    async def events(self, first: Generation | None, rest: AsyncIterator[Generation]) -> AsyncIterator[bytes]:
        yield sse(self.chunk([self.choice({"role": ASSISTANT, "content": ""}, None)]))
        async for event in super().events(first, rest):
            yield event

    def delta_events(self, row: int, text: str) -> list[bytes]:
        """The new text as a content delta, and once the answer is finished, an empty delta with the reason."""
        answer = self.answers[row]
        events = [sse(self.chunk([self.choice({"content": text}, None)]))] if text else []
        if answer.finish_reason is not None and not answer.closed:
            answer.closed = True
            events.append(sse(self.chunk([self.choice({}, answer.finish_reason)])))
        return events

    @staticmethod
    def choice(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


class ChatServer:
    def __init__(self, runnables: dict[str, Runnable], template: ChatTemplate | None) -> None:
        self.runnables = runnables
        self.template = template
        """serve's --chat-template, every model's in place of its tokenizer's."""
        self.formats: dict[str, ChatFormat | str] = {}
        """Each model's format, or why it has none, found at its first chat request."""
        self.lock = threading.Lock()

    def format(self, name: str) -> ChatFormat:
        with self.lock:
            if name not in self.formats:
                try:
                    tokenizer = self.runnables[name].model.tokenizer
                    template = self.template or model_template(tokenizer, name, "pxgl serve --chat-template")
                    self.formats[name] = ChatFormat(template, tokenizer)
                except PxglError as e:
                    self.formats[name] = str(e)
            chat = self.formats[name]
        if isinstance(chat, str):
            raise BadRequest(400, chat, "model")
        return chat

    def prepare(
        self, body: dict[str, Any], terms: dict[str, ModelTerms], limits: Limits, off_loop: OffLoop
    ) -> "ChatCompletion":
        """The chat request's completion, checked, its prompt rendered and tokenized (a template's error: 400)."""
        asked = parse_chat(body, terms, limits)
        chat, model = self.format(asked.model), terms[asked.model]
        try:
            prompt = chat.ids(asked.messages)
        except PxglError as e:
            raise BadRequest(400, str(e), "messages") from None
        if model.bos is not None and prompt[:1] != [model.bos]:
            prompt.insert(0, model.bos)
        assert model.context_length is not None
        request = asked.completion(prompt, limits, model.context_length)
        rows = model_sequences([prompt], request, model)
        return ChatCompletion(request, rows, chat.tokenizer, off_loop, chat.tokenizer.eos_ids)
