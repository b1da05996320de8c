"""A /v1/chat/completions body checked field by field (docs/FORMATS.md §16.3), as serve's requests.py checks a
completions body: every problem one BadRequest naming the field, nothing ignored."""

from dataclasses import dataclass
from typing import Any

from ..chat.prompt import Message
from ..generation import MAX_SEED, Sampling
from .limits import Limits
from .requests import (
    CACHE_FIELD,
    IGNORED_AT_DEFAULT,
    BadRequest,
    CompletionRequest,
    ModelTerms,
    include_usage_of,
    integer,
    number,
    quoted,
    refuse_unserved,
    repetition_penalty_of,
    stops_of,
    type_name,
    unknown_model,
)

MAX_MESSAGES = 256
MAX_MESSAGES_BYTES = 256 << 10
CHAT_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop"}
    | {"stream", "stream_options", "user"}
)
CHAT_DEFAULTS: dict[str, Any] = {
    name: IGNORED_AT_DEFAULT[name] for name in ("n", "presence_penalty", "frequency_penalty", "logit_bias")
} | {"logprobs": False}
"""OpenAI chat fields pxgl does not implement, accepted only at the value that changes nothing."""
MESSAGE_KEYS = frozenset({"role", "content", "name"})


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[Message]
    max_tokens: int | None
    """None: the context's room after the prompt, at most the server's --max-tokens."""
    sampling: Sampling
    stops: list[bytes]
    stream: bool
    include_usage: bool
    repetition_penalty: float
    cache_prompt: bool

    def completion(self, prompt: list[int], limits: Limits, context_length: int) -> CompletionRequest:
        """The one-prompt completion this chat runs as (§16.3), its max_tokens settled against the context."""
        room = context_length - len(prompt)
        max_tokens = self.max_tokens if self.max_tokens is not None else min(limits.max_tokens, room)
        if max_tokens < 1 or len(prompt) + max_tokens > context_length:
            asked = max(max_tokens, 1)
            raise BadRequest(
                400,
                f"messages: {len(prompt)} tokens + max_tokens {asked} = {len(prompt) + asked} positions, past the "
                f"context of {context_length}; shorten the conversation or lower max_tokens",
                "messages",
                "context_length_exceeded",
            )
        return CompletionRequest(
            model=self.model,
            prompts=[prompt],
            max_tokens=max_tokens,
            sampling=self.sampling,
            stops=self.stops,
            logprobs=None,
            stream=self.stream,
            include_usage=self.include_usage,
            repetition_penalty=self.repetition_penalty,
            cache_prompt=self.cache_prompt,
        )


def refuse_unsupported(body: dict[str, Any]) -> None:
    refuse_unserved(body, CHAT_FIELDS, CHAT_DEFAULTS)


def messages_of(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        what = "an empty array" if value == [] else type_name(value)
        raise BadRequest(400, f"messages must be an array of messages, got {what}", "messages")
    if len(value) > MAX_MESSAGES:
        raise BadRequest(400, f"messages: {len(value)} messages, past the limit of {MAX_MESSAGES}", "messages")
    messages, size = [], 0
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise BadRequest(400, f"{where} must be an object, got {type_name(message)}", "messages")
        extra = sorted(set(message) - MESSAGE_KEYS)
        if extra:
            raise BadRequest(400, f"{where}.{extra[0]}: pxgl serves messages of role, content and name", "messages")
        for key in ("role", "content"):
            if key not in message:
                raise BadRequest(400, f"{where}.{key} is missing", "messages")
        message = dict(message)
        if isinstance(message["content"], list):
            message["content"] = text_of_parts(message["content"], f"{where}.content")
        for key in sorted(MESSAGE_KEYS & set(message)):
            if not isinstance(message[key], str):
                what = type_name(message[key])
                expected = "a string or an array of parts" if key == "content" else "a string"
                raise BadRequest(400, f"{where}.{key} must be {expected}, got {what}", "messages")
            try:
                size += len(message[key].encode("utf-8"))
            except UnicodeEncodeError:
                raise BadRequest(400, f"{where}.{key} holds a lone surrogate: not text", "messages") from None
        messages.append(message)
    if size > MAX_MESSAGES_BYTES:
        raise BadRequest(400, f"messages: {size} bytes, past the limit of {MAX_MESSAGES_BYTES}", "messages")
    return messages


def text_of_parts(parts: list[Any], where: str) -> str:
    """Content given as OpenAI's parts: the text parts' texts joined with "" (§16.3); any other part a 400."""
    texts = []
    for index, part in enumerate(parts):
        at = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise BadRequest(400, f"{at} must be an object, got {type_name(part)}", "messages")
        kind = part.get("type")
        if kind != "text":
            shown = quoted(kind) if isinstance(kind, str) else type_name(kind)
            raise BadRequest(400, f"{at}.type {shown}: pxgl serves text parts only", "messages")
        extra = sorted(set(part) - {"type", "text"})
        if extra:
            raise BadRequest(400, f"{at}.{quoted(extra[0])}: a text part holds type and text only", "messages")
        if not isinstance(part.get("text"), str):
            raise BadRequest(400, f"{at}.text must be a string, got {type_name(part.get('text'))}", "messages")
        texts.append(part["text"])
    return "".join(texts)


def max_tokens_of(body: dict[str, Any], limits: Limits) -> int | None:
    given = [name for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None]
    if len(given) > 1:
        raise BadRequest(400, "max_tokens and max_completion_tokens are one field by two names: give one", given[1])
    return integer(body, given[0], None, 1, limits.max_tokens) if given else None


def parse_chat(body: dict[str, Any], models: dict[str, ModelTerms], limits: Limits) -> ChatRequest:
    """A chat request checked whole; `models`: each mounted model's terms, by name."""
    refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest(400, f"model must be a string naming a model, got {type_name(model)}", "model")
    if model not in models:
        raise unknown_model(model, list(models))
    terms = models[model]
    if not terms.transformer:
        raise BadRequest(400, f"model {quoted(model)} is version 0/1: chat needs a version-2 model (§14)", "model")
    if "messages" not in body:
        raise BadRequest(400, "messages is missing", "messages")
    for name in ("stream", CACHE_FIELD):
        if not isinstance(body.get(name, False), bool):
            raise BadRequest(400, f"{name} must be true or false, got {type_name(body[name])}", name)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise BadRequest(400, f"user must be a string, got {type_name(body['user'])}", "user")
    sampling = Sampling(
        temperature=number(body, "temperature", 1.0, 0.0, 100.0),
        top_k=integer(body, "top_k", None, 1, 1 << 16),
        top_p=number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        seed=integer(body, "seed", 0, 0, MAX_SEED) or 0,
    )
    return ChatRequest(
        model=model,
        messages=messages_of(body["messages"]),
        max_tokens=max_tokens_of(body, limits),
        sampling=sampling,
        stops=stops_of(body.get("stop"), limits),
        stream=body.get("stream", False),
        include_usage=include_usage_of(body, body.get("stream", False)),
        repetition_penalty=repetition_penalty_of(body, terms),
        cache_prompt=body.get(CACHE_FIELD, True),
    )
