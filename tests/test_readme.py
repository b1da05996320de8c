"""The README, run as written: every block that holds commands runs, in order, each checked against the output
the README shows (`...` stands for any text).

- ```console: each `$ ` command (a line ending in `\\` goes on to the next) runs in bash; the lines under it
  are what it prints. `make` commands run in a copy of this checkout, as in a clone; the others from an
  empty folder, in the venv the copy's `make setup` made (the one `make run` starts with).
- ```python (or ```py): run by that venv's Python from the empty folder; a ```text block right after it is
  what it prints.
- ```text and untagged blocks are shown, not run. A block of any other kind, or one that holds a `$ `
  command without being ```console, fails the test: nothing in the README goes unrun.

As in a terminal, a variable a command exports holds for every step after it. Where the README cannot be taken
literally here:
- `pip install '.[extras]'` installs the wheel built from this checkout (with the same extras), which replaces
  the copy's editable install: from then on nothing of a checkout is on the path; every pip install skips
  compiling bytecode (time only: Python compiles a module when it first imports it);
- a command marked `# long-running (quick: FLAGS)` runs with FLAGS added;
- a command marked `# serves until Ctrl-C` runs in the background from there to the end of the README, then
  gets Ctrl-C (SIGINT) and must exit 0 having printed what the README shows; its port 8000 (in every step)
  is a free port here, so the test never meets another server."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\n", re.M | re.S)
RUN, SHOWN = ("console", "python", "py"), ("text", "")
QUICK = re.compile(r"#\s*long-running \(quick: ([^)]*)\)")
SERVER = "# serves until Ctrl-C"
README_PORT = 8000
STEP_TIMEOUT_S = 300
SERVER_START_S = 120
SHELL_OWN = ("PWD", "OLDPWD", "SHLVL", "_")
"""Variables bash sets for itself: not carried from one step to the next."""


@dataclass(frozen=True)
class Step:
    kind: str
    """"console": one shell command; "python": one snippet."""
    code: str
    expected: list[str]
    """The lines the README shows it printing; `...` matches any text."""
    line: int
    """Where it begins in the README."""

    @property
    def in_checkout(self) -> bool:
        return self.kind == "console" and re.match(r"make\b", self.code) is not None

    @property
    def serves(self) -> bool:
        return self.kind == "console" and SERVER in self.code


def readme_steps(text: str) -> list[Step]:
    """Every step of the README in order; a block the test would leave unrun is an error."""
    steps = []
    blocks = list(FENCE.finditer(text))
    fences = re.findall(r"^[ \t]*```", text, re.M)
    if len(fences) != 2 * len(blocks):
        raise ValueError(f"README: {len(fences)} ``` fences make {len(blocks)} blocks: one is indented or unclosed")
    for index, block in enumerate(blocks):
        kind, body = block[1].strip(), block[2]
        line = text.count("\n", 0, block.start()) + 1
        if kind not in RUN + SHOWN:
            raise ValueError(
                f"README line {line}: a ```{kind} block; the README test runs ```console and ```python blocks and "
                "shows ```text ones: write it as one of them"
            )
        if kind in SHOWN and re.search(r"^\$ ", body, re.M):
            raise ValueError(f"README line {line}: a `$ ` command in a ```{kind} block, which is shown, not run")
        if kind == "console":
            steps += console_steps(body, line)
        elif kind in ("python", "py"):
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            shown = following is not None and following[1] == "text" and not text[block.end() : following.start()]
            steps.append(Step("python", body, following[2].splitlines() if shown else [], line))
    return steps


def console_steps(body: str, line: int) -> list[Step]:
    lines = body.splitlines()
    if lines and not lines[0].startswith("$ "):
        raise ValueError(f"README line {line}: a ```console block begins with {lines[0]!r}, not a `$ ` command")
    steps = []
    at = 0
    while at < len(lines):
        start = at
        command = [lines[at][2:]]
        while command[-1].endswith("\\") and at + 1 < len(lines):
            at += 1
            command.append(lines[at])
        at += 1
        shown = []
        while at < len(lines) and not lines[at].startswith("$ "):
            shown.append(lines[at])
            at += 1
        steps.append(Step("console", "\n".join(command), shown, line + 1 + start))
    return steps


def runnable(step: Step, wheel: Path, port: int) -> str:
    """The step as the test runs it (the module docstring says why each change)."""
    code = on_port(step.code, port)
    if step.kind == "python":
        return code
    code = re.sub(r"^pip install (['\"]?)\.", rf"pip install \g<1>{wheel}", code)
    code = re.sub(r"^pip install ", "python -m pip install -q --no-compile ", code)
    quick = QUICK.search(code)
    if quick:
        code = code[: quick.start()].rstrip() + " " + quick[1]
    return code


def on_port(text: str, port: int) -> str:
    return text.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}").replace(
        f"--port {README_PORT}", f"--port {port}"
    )


def matches(expected: str, line: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, line) is not None


def assert_prints(step: Step, output: str, port: int) -> None:
    """Every line the README shows appears in the output, in order."""
    lines = output.splitlines()
    at = 0
    for wanted in step.expected:
        wanted = on_port(wanted, port)
        while at < len(lines) and not matches(wanted, lines[at]):
            at += 1
        assert at < len(lines), f"README line {step.line}: `{step.code}` should print {wanted!r}; it printed:\n{output}"
        at += 1


def test_readme_steps_are_found():
    steps = readme_steps(README.read_text())
    commands = [s.code for s in steps if s.kind == "console"]
    assert any(c.startswith("make run") for c in commands)
    assert any(c.startswith("pip install '.") for c in commands)
    assert any("# long-running (quick: " in c for c in commands)
    assert any(c.startswith("pxgl infer") for c in commands)
    assert sum(s.serves for s in steps) == 1
    assert any(s.kind == "python" and "pxgl.ray_data" in s.code for s in steps)


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ("```sh\npxgl serve\n```\n", "a ```sh block"),
        ("```text\n$ pxgl infer hi\n```\n", "a `$ ` command in a ```text block"),
        ("```\n$ make run\n```\n", "a `$ ` command in a ``` block"),
        ("```console\npxgl infer hi\n```\n", "begins with 'pxgl infer hi'"),
        ("```python title\nprint(1)\n```\n", "a ```python title block"),
        ("- a list\n  ```console\n  $ pxgl info\n  ```\n", "one is indented or unclosed"),
        ("```console\n$ pxgl info\n", "one is indented or unclosed"),
    ],
)
def test_a_block_the_test_would_not_run_is_an_error(block, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        readme_steps(f"# pxgl\n\n{block}")


def test_console_commands_go_on_past_a_backslash():
    steps = readme_steps("```console\n$ curl -s URL \\\n  -d '{}'\n{\"id\": ...\n$ pxgl info\n```\n")
    assert [(s.code, s.expected, s.line) for s in steps] == [
        ("curl -s URL \\\n  -d '{}'", ['{"id": ...'], 2),
        ("pxgl info", [], 5),
    ]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of this checkout (its tracked files and the new ones git does not ignore) with the venv
    `make setup` makes there: pxgl installed editable, nothing else of the checkout's own."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    folder = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is listed too
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    made = subprocess.run(["make", "setup"], cwd=folder, env=clean_env(folder), capture_output=True, text=True)
    assert made.returncode == 0, f"make setup failed:\n{made.stdout}\n{made.stderr}"
    return folder


def clean_env(checkout: Path) -> dict[str, str]:
    """This process's environment without what would point the README's commands elsewhere (this venv, an
    enclosing make), the checkout copy's venv first on the PATH."""
    outside = ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV", "PYTHON", "PXGL_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in outside}
    return env | {"PATH": f"{checkout / '.venv' / 'bin'}{os.pathsep}{env['PATH']}", "NO_COLOR": "1", "COLUMNS": "120"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bash(script: str, state: Path, *args: str) -> list[str]:
    """bash running `script` after the variables exported so far, then saving them for the next step."""
    saved = f'export -p | grep -Ev "^declare -x ({"|".join(SHELL_OWN)})(=|$)" > "{state}"'
    body = f'source "{state}"\n{script}\nstatus=$?\n{saved}\nexit $status'
    return ["bash", "-c", body, "bash", *args]


def test_every_readme_step_runs(checkout, wheel, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    state = tmp_path / "exported.sh"
    state.write_text("")
    env = clean_env(checkout)
    port = free_port()
    with ExitStack() as servers:
        for step in readme_steps(README.read_text()):
            code = runnable(step, wheel, port)
            if step.serves:
                servers.enter_context(Server(step, bash(f"exec {code}", state), env, work, port, tmp_path))
                continue
            command = bash('exec python -c "$1"', state, code) if step.kind == "python" else bash(code, state)
            done = subprocess.run(
                command,
                cwd=checkout if step.in_checkout else work,
                env=env,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_S,
            )
            assert done.returncode == 0, f"README line {step.line}: `{step.code}` failed:\n{done.stdout}\n{done.stderr}"
            assert_prints(step, done.stdout + done.stderr, port)


class Server:
    """A step that serves until Ctrl-C: started in a session of its own, ready once /health answers; on exit
    (the README's end, or a failure), Ctrl-C, then its exit status and output checked."""

    def __init__(self, step: Step, command: list[str], env: dict[str, str], cwd: Path, port: int, logs: Path):
        self.step, self.port = step, port
        self.log = logs / f"server-{step.line}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text()

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise AssertionError(f"README line {self.step.line}: `{self.step.code}` ended:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"README line {self.step.line}: `{self.step.code}` never answered:\n{self.output()}")

    def __exit__(self, *failure) -> None:
        status = self.stop()
        if failure[0] is None:
            assert status == 0, f"README line {self.step.line}: Ctrl-C ended it with {status}:\n{self.output()}"
            assert_prints(self.step, self.output(), self.port)

    def stop(self) -> int:
        """Ctrl-C to the whole session; what still runs after a while is killed."""
        for signal_number, patience in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, signal_number)
            except ProcessLookupError:
                break
            try:
                self.process.wait(patience)
                break
            except subprocess.TimeoutExpired:
                continue
        return self.process.wait()
