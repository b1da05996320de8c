"""`pxgl serve`: resident engines over HTTP (docs/FORMATS.md §12) on Starlette and Uvicorn, the optional
extra `serve`.

    server.py       engines started once, the socket bound, Uvicorn run until SIGTERM (drained)
    connections.py  each connection bounded: head and body deadlines, head size, open connections
    app.py          routes, the API key, bounded bodies, JSON errors
    offloop.py      a large request's CPU work on one thread, off the event loop
    requests.py     request bodies checked against the OpenAI subset served
    completions.py  /v1/completions: OpenAI-shaped answers and server-sent events
    chat.py         /v1/chat/completions: a conversation's prompt (engine/chat/), answers as OpenAI's chat
    chat_requests.py  chat request bodies checked (§16.3)
    worker.py       one thread per engine (it owns the GL context), dynamic batching
    limits.py       every bound
    page.py         the live page at / (page.html, page.js) and the trace fragment it shows"""

from .app import Mounted, create_app
from .limits import Limits
from .server import serve, start_models, stop_models

__all__ = ["Limits", "Mounted", "create_app", "serve", "start_models", "stop_models"]
