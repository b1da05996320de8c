"""Running the server: engines built once (one thread each), the socket bound before anything is served (a
busy port is one PxglError), Uvicorn until SIGTERM or Ctrl-C, which first drains the requests in flight."""

import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PxglError
from ..loading import Runnable
from .app import Mounted, create_app
from .batching import SlotWorker, is_transformer
from .connections import protocol_for
from .limits import Limits
from .worker import EngineWorker

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from ..chat.template import ChatTemplate

FILES_BESIDE_CONNECTIONS = 256
"""Open files the process needs besides its connections: the listener, the engines' GPU, models, logs."""
GIL_SWITCH_S = 0.001
"""The interpreter's thread switch interval while serving (Python's default is 5 ms): an engine thread wanting
the GIL back from a busy event loop (after each fence, for each new batch) waits up to this long."""


def model_name(runnable: Runnable) -> str:
    """The name a request gives in `model`: the model file's name without its suffix."""
    return Path(runnable.model.source).stem


def start_models(runnables: Sequence[Runnable], limits: Limits, device: int | None = None) -> list[Mounted]:
    """One started EngineWorker per model (kernels compiled, weights uploaded); two of one name are refused."""
    names = [model_name(r) for r in runnables]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise PxglError(f"-m: two models are named {twice!r}; a request chooses a model by its file's name")
    mounted: list[Mounted] = []
    try:
        for name, runnable in zip(names, runnables, strict=True):
            kind = SlotWorker if is_transformer(runnable) else EngineWorker
            worker = kind(name, runnable, limits, device)
            worker.start()
            mounted.append(Mounted(name, runnable, worker))
    except BaseException:
        stop_models(mounted)
        raise
    return mounted


def stop_models(models: Sequence[Mounted]) -> None:
    for model in models:
        model.worker.stop()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # Nagle's algorithm holds each response's body until the client's delayed ACK (40 ms a request).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as e:
        listener.close()
        raise PxglError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    listener.listen(2048)
    return listener


def uvicorn_config(app: "ASGIApp", limits: Limits) -> "uvicorn.Config":
    """Uvicorn running `app` with every connection held to `limits` (connections.py); no websockets."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=protocol_for(limits),
        ws="none",
        log_level="warning",
        timeout_graceful_shutdown=None,
        access_log=False,
    )


def allow_open_files(limits: Limits) -> None:
    """Raise the process's open-file limit to what --max-connections needs, or refuse: past it, accept()
    would fail for every client instead of a 503 for one."""
    if sys.platform == "win32":  # no such limit there
        return
    import resource

    needed = limits.max_connections + FILES_BESIDE_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise PxglError(
                f"--max-connections {limits.max_connections} needs {needed} open files; this process may open "
                f"{hard} (ulimit -Hn): lower --max-connections"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def serve(
    runnables: Sequence[Runnable],
    *,
    host: str,
    port: int,
    limits: Limits,
    api_key: str | None,
    device: int | None = None,
    on_listening: Callable[[str], None] = print,
    chat_template: "ChatTemplate | None" = None,
) -> None:
    """Serve until SIGTERM or SIGINT; both drain the requests in flight, then the engines close."""
    import uvicorn

    allow_open_files(limits)
    listener = bind(host, port)
    models = start_models(runnables, limits, device)
    try:
        server = uvicorn.Server(uvicorn_config(create_app(models, limits, api_key, chat_template), limits))
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        on_listening(f"http://{shown}:{bound_port}")
        # Uvicorn re-raises the signal that stopped it once it has drained; by then the work is done, so the
        # engines close below and the process ends with status 0.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
        switch = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        try:
            server.run(sockets=[listener])
        finally:
            sys.setswitchinterval(switch)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        listener.close()
        stop_models(models)
