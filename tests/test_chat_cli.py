"""`pxgl chat` (docs/FORMATS.md §16.4) as a user runs it: in a terminal (a pty) two turns, each ended by Ctrl-C
while it streams, then Ctrl-D; with stdin a file, its lines are the turns; a model without a template is one
line and exit status 2 (wild templates: tests/test_chat_hostile.py). `pxgl generate --json` says why each row
ended (§16.2)."""

import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.chat_models import TEMPLATE, write_member
from tests.cli_process import pxgl

READ_TIMEOUT_S = 120


class Terminal:
    """A `pxgl chat` on a pty: what it wrote so far, and reads until a text appears."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: pxgl chat on the pty's other end
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "pxgl.cli", "chat", *args], os.environ | {"TERM": "dumb"})
        self.seen = b""

    def until(self, text: bytes, after: int = 0) -> int:
        """Read until `text` appears at or past offset `after`; where it begins."""
        deadline = time.monotonic() + READ_TIMEOUT_S
        while (at := self.seen.find(text, after)) < 0:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen[-2000:]!r}"
            ready, _, _ = select.select([self.fd], [], [], 1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 1 << 16)
                except OSError:  # the child ended
                    raise AssertionError(f"pxgl chat ended before {text!r}: {self.seen[-2000:]!r}") from None
        return at

    def more_than(self, offset: int) -> None:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(self.seen) <= offset:
            assert time.monotonic() < deadline, f"nothing after {self.seen[-2000:]!r}"
            if select.select([self.fd], [], [], 1)[0]:
                self.seen += os.read(self.fd, 1 << 16)

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def status(self) -> int:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):  # the child ended
                    self.seen += os.read(self.fd, 1 << 16)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"pxgl chat did not end: {self.seen[-2000:]!r}")


def test_two_turns_in_a_terminal_each_ended_by_ctrl_c_then_ctrl_d_ends_the_chat(tmp_path, rng):
    member = write_member(tmp_path, rng, context=512)
    (tmp_path / "chat.jinja").write_text(TEMPLATE)
    chat = Terminal(["-m", str(member.path), "--template", "chat.jinja", "-n", "4000", "-x", "passes"], tmp_path)
    at = chat.until(b">>> ")
    for line in (b"hello there", b"how are you?"):
        chat.type(line + b"\r")
        echoed = chat.until(line + b"\r\n", at) + len(line) + 2
        chat.more_than(echoed)  # the answer is streaming (its 400+ tokens take far longer than a Ctrl-C)
        chat.type(b"\x03")
        at = chat.until(b"(answer interrupted)", echoed)
        at = chat.until(b">>> ", at)
    chat.type(b"\x04")
    assert chat.status() == 0, chat.seen[-2000:]
    assert b"Traceback" not in chat.seen and b"error" not in chat.seen


def test_piped_lines_are_the_turns_and_a_model_without_a_template_is_one_line(tmp_path, rng):
    member = write_member(tmp_path, rng)
    (tmp_path / "chat.jinja").write_text(TEMPLATE)
    args = [sys.executable, "-m", "pxgl.cli", "chat", "-m", str(member.path), "-n", "3"]
    run = subprocess.run([*args, "--template", "chat.jinja"], cwd=tmp_path, input="hi\nhow are you?\n",
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0 and run.stdout.count("\n") == 2 and not run.stderr, run
    run = subprocess.run(args, cwd=tmp_path, input="hi\n", capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == "", run
    assert run.stderr.count("\n") == 1 and "has no chat template; give one with --template FILE" in run.stderr


def test_generate_json_says_why_each_row_ended(tmp_path, rng):
    member = write_member(tmp_path, rng)
    run = pxgl("generate", "hello", "-m", str(member.path), "-n", "3", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["finish_reason"] == "length"
