"""`pxgl chat` (docs/FORMATS.md §16.4) as a user runs it: in a terminal (a pty) two turns, each ended by Ctrl-C
while it streams, then Ctrl-D; with stdin a file, its lines are the turns; a model without a template is one
line and exit status 2 (wild templates: tests/test_chat_hostile.py). `pxgl generate` stops at the model's EOS
and says why each row ended in --json (§16.2)."""

import contextlib
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.chat_models import write_member
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

    def until(self, text: bytes, after: int = 0, seconds: float = READ_TIMEOUT_S) -> int:
        """Read until `text` appears at or past offset `after`; where it begins (-1: not within `seconds`)."""
        deadline = time.monotonic() + seconds
        while (at := self.seen.find(text, after)) < 0:
            if time.monotonic() > deadline:
                return -1
            ready, _, _ = select.select([self.fd], [], [], 1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 1 << 16)
                except OSError:  # the child ended
                    raise AssertionError(f"pxgl chat ended before {text!r}: {self.seen[-2000:]!r}") from None
        return at

    def found(self, text: bytes, after: int = 0) -> int:
        at = self.until(text, after)
        assert at >= 0, f"no {text!r} in {self.seen[-2000:]!r}"
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


def test_a_line_and_two_turns_in_a_terminal_each_ended_by_ctrl_c_then_ctrl_d_ends_the_chat(tmp_path, seed):
    member = write_member(tmp_path, seed, context=512, eos=None)  # no EOS: an answer runs until Ctrl-C
    chat = Terminal(["-m", str(member.path), "-n", "4000", "-x", "passes"], tmp_path)
    at = chat.found(b">>> ")
    chat.type(b"half a line")
    typed = chat.found(b"half a line", at)
    chat.type(b"\x03")  # at the prompt: the line is discarded, the prompt comes again on a new line
    if chat.until(b"\n>>> ", typed, seconds=3) < 0:
        # CPython's readline notices a signal only when it interrupts its select(): a Ctrl-C landing while a
        # key is still being echoed waits for the next key or Ctrl-C (seen twice in 40 runs)
        chat.type(b"\x03")
    at = chat.found(b"\n>>> ", typed)  # not readline redrawing the line ("\r>>> …")
    for line in (b"hello there", b"how are you?"):
        chat.type(line + b"\r")
        echoed = chat.found(line + b"\r\n", at) + len(line) + 2
        chat.more_than(echoed)  # the answer is streaming (its 400+ tokens take far longer than a Ctrl-C)
        chat.type(b"\x03")
        at = chat.found(b"(answer interrupted)", echoed)
        at = chat.found(b">>> ", at)
    chat.type(b"\x04")
    assert chat.status() == 0, chat.seen[-2000:]
    assert b"Traceback" not in chat.seen and b"error" not in chat.seen
    assert chat.seen.endswith(b">>> \r\n"), chat.seen[-200:]  # Ctrl-D leaves the shell's prompt a line of its own


def test_piped_lines_are_the_turns_and_a_model_without_a_template_is_one_line(tmp_path, seed):
    member = write_member(tmp_path, seed)
    args = [sys.executable, "-m", "pxgl.cli", "chat", "-m", str(member.path), "-n", "3"]
    run = subprocess.run(args, cwd=tmp_path, input="hi\nhow are you?\n", capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.endswith("\n") and not run.stderr, run
    bare = write_member(tmp_path, seed, name="bare", template=None)
    args[args.index(str(member.path))] = str(bare.path)
    run = subprocess.run(args, cwd=tmp_path, input="hi\n", capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == "", run
    assert run.stderr.count("\n") == 1 and "has no chat template; give one with --template FILE" in run.stderr


def test_generate_stops_at_the_models_end_of_sequence_and_says_so(tmp_path, seed, rng):
    plain = write_member(tmp_path / "plain", seed, eos=None)
    prompt = [plain.bos, *plain.tokenizer.encode("hello there")]
    expected = plain.greedy(prompt, 8)
    run = pxgl("generate", "hello there", "-m", str(plain.path), "-n", "8", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["finish_reason"] == "length" and record["tokens"][: len(expected)] == expected
    if not expected:
        return  # the first step is a near-tie (rare): the GPU may take either
    eos = expected[int(rng.integers(len(expected)))]
    end = expected.index(eos)
    ended = write_member(tmp_path / "ended", seed, eos=plain.tokenizer.id_string(eos))  # the same weights
    run = pxgl("generate", "hello there", "-m", str(ended.path), "-n", "8", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["finish_reason"] == "eos" and record["tokens"] == expected[:end], (record, expected, eos)
    assert record["text"] == plain.tokenizer.decode(expected[:end])


def test_a_notice_longer_than_80_columns_is_one_line_where_stderr_is_no_terminal(monkeypatch, capsys):
    from pxgl.cli.chat import converse, notice_console
    from pxgl.errors import PxglError

    refusal = "this message is 5020 tokens with the conversation's opening; " + "it passes the context " * 6

    class Refusing:
        def fitted(self, text: str):
            raise PxglError(refusal)

    monkeypatch.setattr(sys, "stdin", io.StringIO("a very long message\n"))
    converse(Refusing(), False, notice_console())
    assert capsys.readouterr().err == refusal + "\n"
