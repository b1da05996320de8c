"""Headless Chromium for the viewer test: find it, install it where that is possible (root with apt-get,
as on a fresh Debian CI machine), and drive it over the DevTools protocol on a pipe (no webdriver, no
new Python dependency). Tests only."""

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_PACKAGES = ("chromium",)
"""The browser alone: the test drives it over the DevTools pipe, so chromium-driver is not needed."""
INSTALL_TIMEOUT_S = 900
PIPE_IN, PIPE_OUT = 3, 4
"""--remote-debugging-pipe: Chromium reads commands from fd 3 and writes replies and events to fd 4."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
)


def find_browser() -> str | None:
    """PXGL_CHROMIUM, else the first Chromium-family browser on PATH."""
    if os.environ.get("PXGL_CHROMIUM"):
        return shutil.which(os.environ["PXGL_CHROMIUM"])
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def ensure_browser() -> tuple[str | None, str]:
    """(browser path, "") or (None, why no browser can be had here); installs Chromium with apt-get when
    it is missing and we are root on a machine with apt-get."""
    if path := find_browser():
        return path, ""
    if shutil.which("apt-get") is None:
        return None, "no Chromium on PATH and no apt-get to install it (set PXGL_CHROMIUM to a Chromium binary)"
    if os.geteuid() != 0:
        return None, f"no Chromium on PATH and installing it needs root (apt-get install {' '.join(APT_PACKAGES)})"
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(command)} took over {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            tail = " ".join(done.stderr.split())[-300:]
            return None, f"{' '.join(command)} failed with status {done.returncode}: {tail}"
    path = find_browser()
    return (path, "") if path else (None, f"apt-get installed {' '.join(APT_PACKAGES)} but no browser is on PATH")


@dataclass
class PageVisit:
    """What the browser saw: the value the probe expression returned, a screenshot, and every error."""

    probe: Any
    screenshot_png: bytes
    errors: list[str] = field(default_factory=list)


class DevToolsPipe:
    """One headless Chromium, spoken to in DevTools protocol messages (JSON, NUL-terminated) on a pipe."""

    def __init__(self, browser: str, profile: Path, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipe_fds() -> None:  # runs in the child: move the pipe ends to fds 3 and 4
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, PIPE_IN)
            os.dup2(high_w, PIPE_OUT)

        self.process = subprocess.Popen(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(PIPE_IN, PIPE_OUT),
            preexec_fn=wire_pipe_fds,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its reply (collecting the events that arrive meanwhile)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._receive()
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.stderr_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def stderr_tail(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return " ".join(self.process.stderr.read().decode(errors="replace").split())[-500:]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.process.stderr.close()


def visit(
    browser: str, page: Path | str, probe_js: str, profile: Path, size: tuple[int, int], timeout_s: float
) -> PageVisit:
    """Open `page` (a file on disk, or a URL), wait for its load event, evaluate `probe_js` (its value is
    returned as JSON) and take a screenshot of the window; console errors, uncaught exceptions and
    failed loads come back in `errors`."""
    devtools = DevToolsPipe(browser, profile, timeout_s)
    try:
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            devtools.send(f"{domain}.enable", session=session)
        width, height = size
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        devtools.send("Emulation.setDeviceMetricsOverride", metrics, session)
        url = page if isinstance(page, str) else page.resolve().as_uri()
        devtools.send("Page.navigate", {"url": url}, session)
        devtools.wait_for("Page.loadEventFired", session)
        evaluated = devtools.send(
            "Runtime.evaluate", {"expression": probe_js, "returnByValue": True, "awaitPromise": True}, session
        )
        if "exceptionDetails" in evaluated:
            raise RuntimeError(f"probe failed: {evaluated['exceptionDetails']}")
        shot = devtools.send("Page.captureScreenshot", {"format": "png"}, session)
        return PageVisit(evaluated["result"].get("value"), base64.b64decode(shot["data"]), page_errors(devtools.events))
    finally:
        devtools.close()


def page_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    return errors
