"""`pxgl serve`: models resident on the GPU behind an HTTP API (docs/FORMATS.md §12)."""

import os
from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from .app import app
from .options import DeviceOption, ExecutorOption, one_device

API_KEY_VARIABLE = "PXGL_API_KEY"


@app.command()
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A model to serve (repeatable; a request names it by its file's name without "
            "the suffix). Default: the bundled pixellm_v1.",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens it to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free one, printed).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Prompts in one GPU batch (1: no batching).")] = 256,
    slots: Annotated[
        int,
        typer.Option(
            "--slots",
            help="Version-2 models: KV-cache slots, the prompts generating at once (a request joins between steps).",
        ),
    ] = 8,
    queue: Annotated[int, typer.Option("--queue", help="Requests a model holds at once (≥ 64); past it, 503.")] = 512,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Largest max_tokens a completion may ask.")] = 1024,
    batch_wait_ms: Annotated[
        float | None,
        typer.Option(
            "--batch-wait-ms",
            help="Under load, how long a batch waits for more requests to join it (default: FORMATS §12's).",
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", help="Seconds a request's headers may take to arrive; then 408.")
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            help="Seconds a request's body may take to arrive, and a client may take none of its answer; then 408.",
        ),
    ] = 60.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Connections open at once; one more gets 503.")
    ] = 1024,
    chat_template: Annotated[
        Path | None,
        typer.Option("--chat-template", help="A Jinja chat template for every model, in place of its tokenizer's."),
    ] = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
) -> None:
    """Serve models over HTTP: OpenAI-style /v1/completions and /v1/chat/completions (streamed as server-sent
    events), /v1/predict (a token texture PNG in, prediction pixels out), /v1/models, /health, and a live page
    at /. With PXGL_API_KEY set, every endpoint but /health and the page needs `Authorization: Bearer KEY`.
    Version 1:
    sampled completions, alternatives and the page run on the passes executor beside the one -x chooses.
    Version 2: requests join the running ones between decode steps, each prompt in a KV-cache slot (--slots).
    SIGTERM or Ctrl-C finishes the requests in flight, then exits."""
    try:
        from ..serve import Limits, serve
    except ImportError as e:
        from ..extras import install_command

        raise PxglError(f"pxgl serve needs its extra ({e.name} is missing): {install_command('serve')}") from None
    from ..chat.prompt import read_template
    from ..loading import open_model

    if not 0 <= port <= 65535:
        raise PxglError(f"--port must lie in 0..65535, got {port}")
    waits = {} if batch_wait_ms is None else {"batch_wait_s": batch_wait_ms / 1000}
    limits = Limits(
        max_batch=max_batch,
        slots=slots,
        queue=queue,
        max_tokens=max_tokens,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_connections=max_connections,
        **waits,
    )
    api_key = os.environ.get(API_KEY_VARIABLE) or None
    template = read_template(chat_template) if chat_template is not None else None
    runnables = [open_model(name, executor) for name in (model or [None])]
    serve(
        runnables,
        host=host,
        port=port,
        limits=limits,
        api_key=api_key,
        device=one_device(device),
        chat_template=template,
        on_listening=lambda url: typer.echo(
            f"pxgl serve: listening on {url} ({'API key required' if api_key else 'no API key'})"
        ),
    )
