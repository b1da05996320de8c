"""Reading a request: JSON bodies checked field by field against the OpenAI subset pxgl serves
(docs/FORMATS.md §12), each problem one `BadRequest` naming the field."""

import json
import math
from dataclasses import dataclass
from typing import Any

from ..generation import MAX_SEED, Sampling
from ..reading import json_depth
from .limits import Limits

MAX_JSON_DEPTH = 8
MAX_INT_DIGITS = 20
"""Digits of a JSON integer read (no field takes more than 10); checked before int() converts it, which
raises ValueError past 4,300 digits and costs quadratic time below that."""


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """Every error answer's JSON (OpenAI's shape)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class BadRequest(Exception):
    """A request the server refuses: HTTP `status`, a message naming the problem, the field (`param`)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


IGNORED_AT_DEFAULT: dict[str, Any] = {
    "n": 1,
    "best_of": 1,
    "echo": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "suffix": None,
    "logit_bias": None,
}
"""OpenAI fields pxgl does not implement, accepted only at the value that changes nothing."""
COMPLETION_FIELDS = frozenset(
    {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "logprobs", "stream", "user"}
    | {"stream_options"}
)
PENALTY_FIELDS = ("repetition_penalty", "repeat_penalty")
"""One field by two names (Hugging Face's, llama-server's): §11's repetition penalty, version 2 only."""
CACHE_FIELD = "cache_prompt"
OTHER_OPENAI_FIELDS = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "max_completion_tokens",
        "top_logprobs",
        "modalities",
        "audio",
        "prediction",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
    }
)
"""OpenAI fields of other endpoints and newer models: refused by name, never ignored."""
MAX_REPETITION_PENALTY = 10.0


@dataclass(frozen=True)
class ModelTerms:
    """What a mounted model's requests are checked against."""

    vocab_size: int
    context_length: int | None = None
    """Version 2: each prompt + max_tokens must fit it. None: versions 0/1, whose window slides."""
    slots: int = 0
    """Version 2: KV-cache slots, the most prompts one request may hold."""
    bos: int | None = None
    """Version 2: the token every sequence begins with (§14.4), where the meta declares one."""

    @property
    def transformer(self) -> bool:
        return self.context_length is not None


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: list[str | list[int]]
    """Text, or token ids of the model's vocabulary."""
    max_tokens: int
    sampling: Sampling
    stops: list[bytes]
    logprobs: int | None
    """None: no logprobs object in the answer; 0..max_logprobs: the chosen token's and that many others'."""
    stream: bool
    repetition_penalty: float = 1.0
    """§11's r (version 2); 1 is off."""
    cache_prompt: bool = True
    """Whether a prompt may reuse a cached prefix (version 2, llama-server's field)."""
    include_usage: bool = False
    """A stream ends with a chunk of the usage (OpenAI's stream_options.include_usage)."""


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as e:
        raise BadRequest(400, f"the body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(value, dict):
        raise BadRequest(400, f"the body must be a JSON object, got {type_name(value)}")
    return value


def _refuse_constant(name: str) -> None:
    raise BadRequest(400, f"the body holds {name}, which is not JSON")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(
            400, f"the body holds an integer of {len(digits.lstrip('-'))} digits; no field takes {MAX_INT_DIGITS}+"
        )
    return int(digits)


def quoted(text: str, most: int = 40) -> str:
    """A name the client sent, as an error message shows it: quoted, escaped, cut after `most` characters."""
    return repr(text[:most]) + ("…" if len(text) > most else "")


def type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), "an object")


def integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, float) and not value.is_integer():
        raise BadRequest(400, f"{name} must be an integer, got {value}", name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(400, f"{name} must be an integer, got {type_name(value)}", name)
    if not low <= value <= high:  # a float compared before int(): 1e300 is not turned into 301 digits
        raise BadRequest(400, f"{name} must lie in {low}..{high}, got {value}", name)
    return int(value)


def number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(400, f"{name} must be a number, got {type_name(value)}", name)
    inside = (low < value if low_open else low <= value) and value <= high
    if not math.isfinite(value) or not inside:
        bounds = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise BadRequest(400, f"{name} must lie in {bounds}, got {value}", name)
    return float(value)


def prompts_of(value: Any, vocab_size: int, limits: Limits) -> list[str | list[int]]:
    """OpenAI's prompt: a string, an array of strings, an array of token ids or an array of such arrays."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(is_id(v) for v in value)):
        value = [value]
    if not isinstance(value, list) or not value:
        what = "an empty array" if value == [] else type_name(value)
        raise BadRequest(400, f"prompt must be a string, an array of strings or of token ids; got {what}", "prompt")
    if len(value) > limits.max_prompts:
        raise BadRequest(400, f"prompt: {len(value)} prompts, past the limit of {limits.max_prompts}", "prompt")
    for index, prompt in enumerate(value):
        where = f"prompt {index}"
        if isinstance(prompt, str):
            try:
                size = len(prompt.encode("utf-8"))
            except UnicodeEncodeError:
                raise BadRequest(400, f"{where} holds a lone surrogate: not text", "prompt") from None
        elif isinstance(prompt, list):
            size = 2 * len(prompt)
            bad = next((v for v in prompt if not is_id(v) or not 0 <= v < vocab_size), None)
            if bad is not None and not is_id(bad):
                what = json.dumps(bad)[:40] if isinstance(bad, int | float | str) else type_name(bad)
                raise BadRequest(400, f"{where}: {what} is not a token id", "prompt")
            if bad is not None:
                raise BadRequest(400, f"{where}: token id {bad} is outside 0..{vocab_size - 1}", "prompt")
        else:
            what = type_name(prompt)
            raise BadRequest(400, f"{where} must be a string or an array of token ids, got {what}", "prompt")
        if size == 0:
            raise BadRequest(400, f"{where} is empty: a prompt needs at least one token", "prompt")
        if size > limits.max_prompt_bytes:
            raise BadRequest(400, f"{where}: {size} bytes, past the limit of {limits.max_prompt_bytes}", "prompt")
    return value


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def stops_of(value: Any, limits: Limits) -> list[bytes]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest(400, f"stop must be a string or an array of strings, got {type_name(value)}", "stop")
    if len(stops) > limits.max_stops:
        raise BadRequest(400, f"stop: {len(stops)} strings, past the limit of {limits.max_stops}", "stop")
    try:
        data = [s.encode("utf-8") for s in stops]
    except UnicodeEncodeError:
        raise BadRequest(400, "stop: a stop string holds a lone surrogate: not text", "stop") from None
    if any(not d for d in data):
        raise BadRequest(400, "stop: a stop string may not be empty", "stop")
    if any(len(d) > limits.max_stop_bytes for d in data):
        raise BadRequest(400, f"stop: a stop string past the limit of {limits.max_stop_bytes} bytes", "stop")
    return data


def unknown_model(name: str, served: list[str]) -> BadRequest:
    message = f"model {quoted(name)} is not served here; GET /v1/models lists {', '.join(served)}"
    return BadRequest(404, message, "model", "model_not_found")


def refuse_unsupported(body: dict[str, Any]) -> None:
    refuse_unserved(body, COMPLETION_FIELDS, IGNORED_AT_DEFAULT)


def refuse_unserved(body: dict[str, Any], fields: set[str], at_default: dict[str, Any]) -> None:
    """Every field not served is a 400 naming it: none is ignored. `fields` the endpoint's own, `at_default`
    those accepted only at OpenAI's default value; the penalty and cache fields are every endpoint's."""
    served = fields | set(at_default) | set(PENALTY_FIELDS) | {CACHE_FIELD}
    unknown = sorted(set(body) - served)
    other = [name for name in unknown if name in OTHER_OPENAI_FIELDS]
    if other:
        raise BadRequest(400, f"{other[0]} is an OpenAI field pxgl does not serve", other[0])
    if unknown:
        name = unknown[0]
        raise BadRequest(400, f"unknown field {quoted(name)}; pxgl serves {', '.join(sorted(served))}", name)
    for name, default in at_default.items():
        if body.get(name, default) not in (default, {}, None):
            raise BadRequest(400, f"{name}: pxgl serves only {json.dumps(default)}", name)


def include_usage_of(body: dict[str, Any], stream: bool) -> bool:
    """stream_options: null, or {"include_usage": BOOL} on a stream (OpenAI refuses it without one)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise BadRequest(400, 'stream_options is only allowed with "stream": true', "stream_options")
    if not isinstance(options, dict):
        raise BadRequest(400, f"stream_options must be an object, got {type_name(options)}", "stream_options")
    extra = sorted(set(options) - {"include_usage"})
    if extra:
        raise BadRequest(400, f"stream_options.{quoted(extra[0])}: pxgl serves only include_usage", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        what = type_name(include_usage)
        raise BadRequest(400, f"stream_options.include_usage must be true or false, got {what}", "stream_options")
    return include_usage


def repetition_penalty_of(body: dict[str, Any], terms: ModelTerms) -> float:
    given = [name for name in PENALTY_FIELDS if body.get(name) is not None]
    if len(given) > 1:
        raise BadRequest(400, f"{' and '.join(given)} are one field by two names: give one", given[1])
    if not given:
        return 1.0
    name = given[0]
    penalty = number(body, name, 1.0, 0.0, MAX_REPETITION_PENALTY, low_open=True)
    if penalty != 1.0 and not terms.transformer:
        raise BadRequest(400, f"{name}: this model (version 0/1) serves only 1; version-2 models take (0, 10]", name)
    return penalty


def parse_completion(body: dict[str, Any], models: dict[str, ModelTerms], limits: Limits) -> CompletionRequest:
    """A completions request checked whole; `models`: each mounted model's terms, by name."""
    refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest(400, f"model must be a string naming a model, got {type_name(model)}", "model")
    if model not in models:
        raise unknown_model(model, list(models))
    terms = models[model]
    if "prompt" not in body:
        raise BadRequest(400, "prompt is missing", "prompt")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(400, f"stream must be true or false, got {type_name(stream)}", "stream")
    cache_prompt = body.get(CACHE_FIELD, True)
    if not isinstance(cache_prompt, bool):
        raise BadRequest(400, f"{CACHE_FIELD} must be true or false, got {type_name(cache_prompt)}", CACHE_FIELD)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise BadRequest(400, f"user must be a string, got {type_name(body['user'])}", "user")
    temperature = number(body, "temperature", 1.0, 0.0, 100.0)
    sampling = Sampling(
        temperature=temperature,
        top_k=integer(body, "top_k", None, 1, 1 << 16),
        top_p=number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        seed=integer(body, "seed", 0, 0, MAX_SEED) or 0,
    )
    prompts = prompts_of(body["prompt"], terms.vocab_size, limits)
    if terms.transformer and len(prompts) > terms.slots:
        message = f"prompt: {len(prompts)} prompts, past the {terms.slots} KV-cache slots of {quoted(model)} (--slots)"
        raise BadRequest(400, message, "prompt")
    return CompletionRequest(
        model=model,
        prompts=prompts,
        max_tokens=integer(body, "max_tokens", 16, 1, limits.max_tokens) or 16,
        sampling=sampling,
        stops=stops_of(body.get("stop"), limits),
        logprobs=integer(body, "logprobs", None, 0, limits.max_logprobs),
        stream=stream,
        include_usage=include_usage_of(body, stream),
        repetition_penalty=repetition_penalty_of(body, terms),
        cache_prompt=cache_prompt,
    )


def context_overflow(index: int, tokens: int, max_tokens: int, context_length: int) -> str | None:
    """Why prompt `index` of `tokens` tokens cannot generate `max_tokens` within the context; None if it can."""
    if tokens + max_tokens <= context_length:
        return None
    return (
        f"prompt {index}: {tokens} tokens + max_tokens {max_tokens} = {tokens + max_tokens} positions, past the "
        f"context of {context_length}; shorten the prompt or lower max_tokens"
    )


def model_sequences(rows: list[list[int]], request: CompletionRequest, terms: ModelTerms) -> list[list[int]]:
    """Each prompt's ids as the model runs them: version 2's with `bos` first where the meta declares it and the
    prompt does not begin with it (§14.4), checked to fit the context with max_tokens (never a silent
    truncation)."""
    if terms.context_length is None:
        return rows
    if terms.bos is not None:
        rows = [row if row[:1] == [terms.bos] else [terms.bos, *row] for row in rows]
    for index, row in enumerate(rows):
        problem = context_overflow(index, len(row), request.max_tokens, terms.context_length)
        if problem is not None:
            raise BadRequest(400, problem, "prompt", "context_length_exceeded")
    return rows
