"""`pxgl serve` against clients that hold on to what a server gives them (docs/FORMATS.md §12): heads and
bodies dribbled or stalled (408, closed), an answer the client does not take (cut off, its GPU work
stopped), a head past the cap (431, or cut off within a read of it), connections past --max-connections
(503 at once), clients leaving mid-body or mid-stream (nothing logged), and /health answered at once while
large requests are read. One server with short timeouts; its log is a file, read as the tests go."""

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.test_serve import call, start_server, stop_server, write_models

TIMEOUT_S = 2
"""The server's --header-timeout and --body-timeout."""
SLACK_S = 4
"""What a busy machine may add to a deadline before the server acts on it."""
MAX_CONNECTIONS = 16
MAX_HEADER_BYTES = 16 * 1024
MiB = 1 << 20


@dataclass(frozen=True)
class Guarded:
    url: str
    address: tuple[str, int]
    process: subprocess.Popen
    log: Path

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=30)

    def in_flight(self) -> int:
        return json.loads(call(self.url, "/health", key=None)[1])["models"]["gamma"]["in_flight"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Guarded:
    folder = tmp_path_factory.mktemp("serve-connections")
    seed = int(os.environ.get("PXGL_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    models, _ = write_models(folder, np.random.default_rng(seed), ("gamma",))
    log = folder / "serve.log"
    timeouts = ("--header-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S))
    url, process = start_server(folder, models, *timeouts, "--max-connections", str(MAX_CONNECTIONS), key=None, log=log)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    yield Guarded(url, (host, int(port)), process, log)
    status, _ = stop_server(process)
    said = log.read_text()
    assert status == 0 and "Traceback" not in said, f"models' seed {seed}: {said}"


def until_closed(connection: socket.socket, drip: bytes, limit_s: float) -> tuple[bytes, float | None]:
    """Send `drip` every 0.2 s (nothing if empty) and read, until the server closes the connection: what it
    sent, and the seconds that took (None: still open after `limit_s`)."""
    began, got = time.monotonic(), b""
    while time.monotonic() - began < limit_s:
        try:
            if select.select([connection], [], [], 0.2)[0]:
                chunk = connection.recv(65536)
                if not chunk:
                    return got, time.monotonic() - began
                got += chunk
            elif drip:
                connection.sendall(drip)
        except OSError:  # reset, or a broken pipe: closed
            return got, time.monotonic() - began
    return got, None


def last_answer(data: bytes) -> tuple[int | None, dict]:
    """The status and JSON error of the last HTTP answer in `data`."""
    starts = [m.start() for m in re.finditer(rb"HTTP/1\.1 \d{3} ", data)]
    if not starts:
        return None, {}
    head, _, body = data[starts[-1] :].partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


SLOW_CLIENTS = {
    "silent": (b"", b""),
    "head dribbled": (b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n"),
    "body dribbled": (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", b" "),
    "body stalled": (b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model": ', b""),
    "line ends after a request": (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n"),
}


def test_slow_clients_are_answered_408_and_closed(guarded):
    def slow_client(opening: bytes, drip: bytes) -> tuple[bytes, float | None]:
        with guarded.connect() as connection:
            connection.sendall(opening)
            return until_closed(connection, drip, TIMEOUT_S + SLACK_S + 4)

    with ThreadPoolExecutor(len(SLOW_CLIENTS)) as pool:
        running = {name: pool.submit(slow_client, *parts) for name, parts in SLOW_CLIENTS.items()}
        assert call(guarded.url, "/health", key=None)[0] == 200, "the server stopped answering"
        results = {name: future.result() for name, future in running.items()}
    for name, (data, seconds) in results.items():
        assert seconds is not None and seconds < TIMEOUT_S + SLACK_S, (name, seconds, data[-300:])
        status, error = last_answer(data)
        assert status == 408, (name, data[-300:])
        part = "body" if "body" in name else "head"
        assert error["message"] == f"the request's {part} did not arrive within {TIMEOUT_S} s", name


def server_end_state(server_port: int, client_port: int) -> str | None:
    """The TCP state of the server's end of a localhost connection, as /proc/net/tcp writes it (01:
    established; after the server closes, 04 or later while the kernel still holds data the client has not
    taken), or None once it is gone."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
            return state
    return None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the server's socket state in Linux's /proc")
def test_a_client_that_takes_none_of_its_answer_is_cut_off_and_its_work_stopped(guarded):
    """A stream (of some 20 MB) the client never reads: once the socket's buffers are full, the server waits
    --body-timeout for the client to take some, then closes the connection (its end leaves the established
    state; the client, reading nothing, sees nothing yet), and the completion's GPU work stops."""
    body = json.dumps({"model": "gamma", "prompt": ["pixels"] * 64, "max_tokens": 1024, "logprobs": 5, "stream": True})
    request = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    with socket.socket() as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the answer backs up
        connection.connect(guarded.address)
        connection.sendall(request)
        ends = guarded.address[1], connection.getsockname()[1]
        deadline = time.monotonic() + 60
        while server_end_state(*ends) == "01":
            assert time.monotonic() < deadline, "the server still holds a connection whose client takes nothing"
            time.sleep(0.1)
        while guarded.in_flight():
            assert time.monotonic() < deadline, "the completion's GPU work went on"
            time.sleep(0.05)


def test_a_head_past_the_cap_is_431_and_a_16_mb_one_is_cut_off_early(guarded):
    def head(filler: int, *extra: bytes) -> bytes:
        return b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(extra) + b"X-Big: " + b"a" * filler + b"\r\n\r\n"

    with guarded.connect() as connection:
        connection.sendall(head(MAX_HEADER_BYTES - 64, b"Connection: close\r\n"))
        data, seconds = until_closed(connection, b"", 30)
    assert data.startswith(b"HTTP/1.1 200 "), data[:300]
    with guarded.connect() as connection:
        connection.sendall(head(MAX_HEADER_BYTES))
        data, seconds = until_closed(connection, b"", 30)
    status, error = last_answer(data)
    assert seconds is not None and status == 431, data[-300:]
    assert f"past the limit of {MAX_HEADER_BYTES}" in error["message"], error
    sent = 0
    with guarded.connect() as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server may close before it is all sent
            while sent < 16 * MiB and not select.select([connection], [], [], 0.02)[0]:
                connection.sendall(b"a" * 65536)
                sent += 65536
        data, seconds = until_closed(connection, b"", 30)
    assert sent <= MiB and seconds is not None, f"{sent} bytes of one header sent"
    assert data == b"" or last_answer(data)[0] == 431, data[-300:]


def test_connections_past_the_cap_are_answered_503_at_once(guarded):
    held = [guarded.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        with guarded.connect() as extra:
            data, seconds = until_closed(extra, b"", TIMEOUT_S + SLACK_S)
        status, error = last_answer(data)
        assert status == 503 and f"holds {MAX_CONNECTIONS} connections" in error["message"], data[-300:]
        assert seconds is not None and seconds < TIMEOUT_S, "refused only once the held ones timed out"
    finally:
        for connection in held:
            connection.close()
    deadline = time.monotonic() + 30
    while call(guarded.url, "/health", key=None)[0] != 200:  # once the server has seen them close
        assert time.monotonic() < deadline, "the server no longer takes connections"
        time.sleep(0.05)


def test_clients_leaving_mid_body_or_mid_stream_log_nothing(guarded):
    start = len(guarded.log.read_text())
    for _ in range(3):
        with guarded.connect() as connection:
            connection.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model"')
            time.sleep(0.05)
    body = json.dumps({"model": "gamma", "prompt": ["pixels"] * 8, "max_tokens": 1024, "stream": True})
    with guarded.connect() as connection:
        connection.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        connection.sendall(body.encode())
        assert connection.recv(4096).startswith(b"HTTP/1.1 200 ")
    deadline = time.monotonic() + 60
    while guarded.in_flight():
        assert time.monotonic() < deadline, "the stream's GPU work went on"
        time.sleep(0.05)
    time.sleep(0.2)
    said = guarded.log.read_text()[start:]
    assert said == "", said


def test_health_answers_at_once_while_large_requests_are_read_and_run(guarded):
    """Requests of 3.8 MB of token ids, whose JSON takes some 0.5 s of CPU to read, and a long greedy
    completion of 64 prompts: the event loop read the JSON itself before, one request after another, and
    on a CPU renderer each GPU dispatch of the completion held the GIL throughout (moderngl's): /health
    waited for both."""
    prompt = b"[" + b",".join([b"1"] * 30_000) + b"]"
    large = b'{"model": "gamma", "max_tokens": 1, "prompt": [' + b",".join([prompt] * 64) + b"]}"
    long = {"model": "gamma", "prompt": ["pixels"] * 64, "max_tokens": 64, "temperature": 0, "stream": True}
    answers: list[int] = []

    def send(body: bytes | dict) -> None:
        answers.append(call(guarded.url, "/v1/completions", body, key=None)[0])

    senders = [threading.Thread(target=send, args=(body,)) for body in (long, large, large)]
    for sender in senders:
        sender.start()
    waits = []
    while any(sender.is_alive() for sender in senders):
        began = time.monotonic()
        assert call(guarded.url, "/health", key=None)[0] == 200
        waits.append(time.monotonic() - began)
        time.sleep(0.02)
    for sender in senders:
        sender.join()
    assert answers == [200] * len(senders)
    assert max(waits) < 1.0, f"/health took up to {max(waits):.2f} s ({len(waits)} probes)"
