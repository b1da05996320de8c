"""Each connection held to its bounds before the app sees a request (docs/FORMATS.md §12). Uvicorn bounds
none of them: its httptools protocol waits forever for a head or a body dribbled a byte at a time and for a
client that does not read its answer, buffers a header of any size and accepts any number of connections.
This protocol is Uvicorn's with a deadline for a request's head, one for its body and one for each stall
of its answer, a cap on the head's bytes, counted as they arrive (before httptools has buffered a whole
header), and one on open connections."""

import asyncio
import http
import json
from collections.abc import Callable
from enum import Enum, auto

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import Limits
from .requests import error_body


class Phase(Enum):
    HEAD = auto()
    """Waiting for a request's line and headers: from the connection's start, or the first byte after a
    request's body."""
    BODY = auto()
    """The head is in; waiting for the body's end."""
    IDLE = auto()
    """A request is whole: the app answers it, then Uvicorn's keep-alive timeout bounds the wait for more."""


def closing_error(status: int, message: str) -> bytes:
    """A whole HTTP response, written straight to the socket where no app runs: the JSON error, and the
    connection closed after it."""
    body = json.dumps(error_body(status, message), separators=(",", ":")).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def refusal(status: int, message: str) -> ASGIApp:
    """The app a request gets in place of the real one when its head is refused whole (it is parsed)."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(error_body(status, message), status, headers={"connection": "close"})
        await response(scope, receive, send)

    return refuse


class BoundedProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol under `limits` (set on the subclass `protocol_for` makes)."""

    limits: Limits

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.phase = Phase.HEAD
        self.deadline: asyncio.TimerHandle | None = None
        self.head_bytes = 0
        """Bytes of the head so far, from whole reads that ended inside it; a read across its start or end is
        not counted, so a head past the cap is cut off within one read (≤ 256 KiB) of it."""
        self.boundaries = 0
        """Heads and bodies that ended so far: whether one ended inside a read."""
        self.stalled: asyncio.TimerHandle | None = None
        """Armed while the answer cannot be written (the client takes none of it)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            most = self.limits.max_connections
            self.refuse(503, f"the server holds {most} connections, its --max-connections; retry shortly")
            return
        self.arm(self.limits.header_timeout_s, self.head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.stalled is not None:
            self.stalled.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.stalled = self.loop.call_later(self.limits.body_timeout_s, self.transport.abort)

    def resume_writing(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.phase is Phase.IDLE:  # the first byte of the next request (or stray bytes between requests)
            self.phase = Phase.HEAD
            self.arm(self.limits.header_timeout_s, self.head_too_slow)
        boundaries = self.boundaries
        super().data_received(data)
        if self.phase is Phase.HEAD and self.boundaries == boundaries and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self.refuse(431, f"the request's head is past the limit of {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self.boundaries += 1
        self.head_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            message = (
                f"the request's target and headers are {size} bytes, past the limit of {self.limits.max_header_bytes}"
            )
            self.app = refusal(431, message)
        try:
            super().on_headers_complete()
        finally:
            self.app = self.config.loaded_app
        self.phase = Phase.BODY
        self.arm(self.limits.body_timeout_s, self.body_too_slow)

    def on_message_complete(self) -> None:
        self.boundaries += 1
        self.phase = Phase.IDLE
        self.disarm()
        super().on_message_complete()

    def head_too_slow(self) -> None:
        self.deadline = None
        if self.flow.read_paused:  # the server stopped reading (a pipelined request waits): not the client's fault
            self.arm(self.limits.header_timeout_s, self.head_too_slow)
        elif self.cycle is None or self.cycle.response_complete:
            self.refuse(408, f"the request's head did not arrive within {self.limits.header_timeout_s:g} s")
        else:  # an answer is being written: a 408 would land inside it
            self.transport.close()

    def body_too_slow(self) -> None:
        self.deadline = None
        if self.flow.read_paused:
            self.arm(self.limits.body_timeout_s, self.body_too_slow)
            return
        if self.pipeline or self.cycle.response_started:
            self.transport.close()
            return
        # The app is waiting for the body: it gets a disconnect and sends nothing more.
        self.cycle.disconnected = True
        self.cycle.message_event.set()
        self.refuse(408, f"the request's body did not arrive within {self.limits.body_timeout_s:g} s")

    def refuse(self, status: int, message: str) -> None:
        self.disarm()
        self.transport.write(closing_error(status, message))
        self.transport.close()

    def arm(self, seconds: float, expire: Callable[[], None]) -> None:
        self.disarm()
        self.deadline = self.loop.call_later(seconds, expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None


def protocol_for(limits: Limits) -> type[BoundedProtocol]:
    """The protocol class Uvicorn is given (`Config(http=...)`): it builds one per connection."""
    return type("Bounded", (BoundedProtocol,), {"limits": limits})
