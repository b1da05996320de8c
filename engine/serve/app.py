"""The HTTP app (Starlette): routes, the API key, bounded bodies and JSON errors (docs/FORMATS.md §12).
Every GPU call goes through a model's EngineWorker; a handler only parses, submits, awaits and shapes."""

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..chat.template import ChatTemplate
from ..errors import PxglError
from ..loading import Runnable
from ..pxi import MAX_TOKEN_PIXELS, decode_rgb, encode_rgb, encode_tokens, is_prediction_image
from ..transformer import TransformerSpec
from ..transformer.gpu.trace import trace_tokens
from .chat import ChatServer
from .completions import Completion
from .limits import Limits
from .offloop import OffLoop
from .page import page_html, trace_fragment, transformer_trace_fragment
from .requests import (
    BadRequest,
    error_body,
    model_sequences,
    parse_completion,
    parse_json_body,
    quoted,
    type_name,
    unknown_model,
)
from .worker import PASSES, CallJob, Engines, EngineWorker, JobFailed, QueueFull, Sink

INLINE_BYTES = 4096
"""A body up to this is read (JSON, checks, tokenizing; PNG) on the event loop, a larger one off it; so is
an answer's PNG."""
OPEN_PATHS = frozenset({"/", "/health"})
"""Served without the API key: the health check, and the page (a static shell: every call it makes
carries the key the user types into it)."""


@dataclass(frozen=True)
class Mounted:
    """A model the server answers for, by name."""

    name: str
    runnable: Runnable
    worker: EngineWorker


def worker_state(worker: EngineWorker) -> dict[str, int]:
    return {"in_flight": worker.in_flight, "batches": worker.batches, "requests": worker.requests} | worker.counters()


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


class RequireKey:
    """Every path but OPEN_PATHS needs `Authorization: Bearer KEY` when a key is set."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            if not secrets.compare_digest(given, b"Bearer " + self.key.encode("utf-8")):
                problem = "a wrong API key" if given else "no API key"
                response = error_response(
                    401,
                    f"{problem}: send the header Authorization: Bearer KEY (the server's PXGL_API_KEY)",
                    code="invalid_api_key",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit` bytes, whatever Content-Length said."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is {declared} bytes, past the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"the body is past the limit of {limit} bytes")
    return bytes(body)


def create_app(
    models: list[Mounted], limits: Limits, api_key: str | None = None, chat_template: ChatTemplate | None = None
) -> Starlette:
    by_name = {m.name: m for m in models}
    terms = {m.name: m.worker.terms for m in models}
    chat = ChatServer({m.name: m.runnable for m in models}, chat_template)
    page = page_html([m.name for m in models])
    off_loop = OffLoop()

    def mounted(name: Any) -> Mounted:
        if not isinstance(name, str):
            raise BadRequest(400, f"model must be a string naming a model, got {type_name(name)}", "model")
        if name not in by_name:
            raise unknown_model(name, list(by_name))
        return by_name[name]

    async def run_alone(model: Mounted, call: Callable[[Engines], Any]) -> Any:
        """`call(engines)` on the model's engine thread, queued like any request."""
        job = CallJob(Sink(), call=call)
        model.worker.submit(job)
        result = await job.sink.get()
        if isinstance(result, JobFailed):
            raise BadRequest(400 if result.bad_input else 500, result.message)
        return result

    async def home(request: Request) -> Response:
        return HTMLResponse(page)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": {m.name: worker_state(m.worker) for m in models}})

    async def list_models(request: Request) -> Response:
        data = [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "pxgl", "executor": m.worker.executor_name}
            for m in models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def completions(request: Request) -> Response:
        body = await read_body(request, limits.max_body_bytes)

        def prepare() -> Completion:
            asked = parse_completion(parse_json_body(body), terms, limits)
            tokenizer = by_name[asked.model].runnable.model.tokenizer
            rows = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in asked.prompts]
            rows = model_sequences(rows, asked, terms[asked.model])
            return Completion(asked, rows, tokenizer, off_loop, tokenizer.eos_ids)

        return await respond(await off_loop.run(prepare, len(body) > INLINE_BYTES))

    async def chat_completions(request: Request) -> Response:
        body = await read_body(request, limits.max_body_bytes)
        # a template's render may take its time (§16.1's bounds): off the loop, as a large body's work is
        prepared = await off_loop.run(lambda: chat.prepare(parse_json_body(body), terms, limits, off_loop), True)
        return await respond(prepared)

    async def respond(completion: Completion) -> Response:
        completion.start(by_name[completion.request.model].worker)
        if not completion.request.stream:
            try:
                return Response(await completion.answer(), media_type="application/json")
            finally:
                completion.cancel()
        blocks = completion.blocks()
        try:
            first = await anext(blocks, None)
        except BaseException:
            completion.cancel()
            raise
        return StreamingResponse(
            completion.events(first, blocks), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def predict(request: Request) -> Response:
        """Pixels in, pixels out: a token texture PNG → its prediction pixels PNG (pxgl infer --input)."""
        model = mounted(request.query_params.get("model"))
        body = await read_body(request, limits.max_body_bytes)

        def decode() -> Any:
            most = min(limits.max_texture_pixels, MAX_TOKEN_PIXELS)
            pixels = decode_rgb(body, "the request body", most, kind="token texture")
            if is_prediction_image(pixels):
                raise BadRequest(400, "the request body holds prediction pixels, not a token texture")
            return pixels

        pixels = await off_loop.run(decode, len(body) > INLINE_BYTES)
        predictions = await run_alone(model, lambda engines: engines.main.predict(pixels, "the request body"))
        png = await off_loop.run(partial(encode_rgb, predictions), predictions.nbytes > INLINE_BYTES)
        return Response(png, media_type="image/png")

    async def trace(request: Request) -> Response:
        """What the page shows for a prompt: the `pxgl viz` images of its run, as an HTML fragment."""
        body = await read_body(request, limits.max_body_bytes)

        def prepare() -> tuple[Mounted, str, list[int]]:
            asked = parse_json_body(body)
            unknown = sorted(set(asked) - {"model", "prompt"})
            if unknown:
                raise BadRequest(400, f"unknown field {quoted(unknown[0])}; /v1/trace takes model and prompt")
            model = mounted(asked.get("model"))
            prompt = asked.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise BadRequest(400, f"prompt must be a non-empty string, got {type_name(prompt)}", "prompt")
            if len(prompt.encode("utf-8", "surrogatepass")) > limits.max_prompt_bytes:
                raise BadRequest(400, f"prompt: past the limit of {limits.max_prompt_bytes} bytes", "prompt")
            return model, prompt, model.runnable.model.tokenizer.encode(prompt)

        model, prompt, row = await off_loop.run(prepare, len(body) > INLINE_BYTES)
        spec, tokenizer = model.runnable.model.spec, model.runnable.model.tokenizer
        if isinstance(spec, TransformerSpec):  # version 2: FORMATS §14.8's trace, from position 0
            ids = row if spec.bos is None or row[:1] == [spec.bos] else [spec.bos, *row]
            traced = await run_alone(model, lambda engines: trace_tokens(engines.passes, ids))
            about = {"model": model.name, "executor": PASSES}
            vocab = spec.architecture.vocab_size
            html, record = await off_loop.run(
                lambda: transformer_trace_fragment(traced, vocab, prompt, tokenizer.token_bytes, about), large=True
            )
            return JSONResponse({"html": html, "view": record})
        pixels = encode_tokens([row[-spec.context_window :]], spec.vocab_size)
        traced = await run_alone(model, lambda engines: engines.passes.trace(pixels, "prompt"))
        about = {"model": model.name, "executor": PASSES}
        html, record = await off_loop.run(
            lambda: trace_fragment(traced, spec, prompt, len(row), tokenizer.token_bytes, about), large=True
        )
        return JSONResponse({"html": html, "view": record})

    async def bad_request(request: Request, error: Exception) -> Response:
        assert isinstance(error, BadRequest)
        return error_response(error.status, error.message, error.param, error.code)

    async def bad_input(request: Request, error: Exception) -> Response:
        return error_response(400, str(error))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return error_response(404, f"no such path {request.url.path}; see docs/FORMATS.md §12 for the API")
        if error.status_code == 405:
            return error_response(405, f"{request.method} is not served at {request.url.path}")
        return error_response(error.status_code, str(error.detail))

    async def client_left(request: Request, error: Exception) -> Response:
        """The client went before its body was in (or was cut off: connections.py): nobody to answer."""
        return Response(status_code=400)

    async def queue_full(request: Request, error: Exception) -> Response:
        return error_response(503, str(error), code="queue_full")

    async def server_error(request: Request, error: Exception) -> Response:
        return error_response(500, f"the server failed: {type(error).__name__}")

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Exception: server_error,
        BadRequest: bad_request,
        PxglError: bad_input,
        QueueFull: queue_full,
        ClientDisconnect: client_left,
        HTTPException: http_error,
    }
    routes = [
        Route("/", home, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/trace", trace, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(RequireKey, key=api_key)
    return app
