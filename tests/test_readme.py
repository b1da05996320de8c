"""The README, run as written: the wheel built and installed into a fresh venv, then every `console` block's
`$ ` command and every `python` block run from an empty folder, in order, each checked against the output
the README shows under it (`...` stands for any text). Commands marked `# long-running` are written in the
README with their small flags, so they run as they stand."""

import os
import re
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(console|python)\n(.*?)^```\n(?:\n```text\n(.*?)^```\n)?", re.S | re.M)


@dataclass(frozen=True)
class Step:
    kind: str
    """"console": one shell command; "python": one snippet."""
    code: str
    expected: list[str]
    """The lines the README shows it printing; `...` matches any text."""


def readme_steps(text: str) -> list[Step]:
    steps = []
    for kind, body, output in BLOCK.findall(text):
        if kind == "python":
            steps.append(Step(kind, body, output.splitlines() if output else []))
            continue
        for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
            command, *shown = chunk.rstrip("\n").split("\n")
            steps.append(Step(kind, command, shown))
    return steps


def runnable(command: str, wheel: Path) -> str:
    """The command as the test runs it: `pip install '.[extras]'` installs the wheel built from this checkout
    (with the same extras); a `# long-running (quick: FLAGS)` command runs with FLAGS added."""
    command = re.sub(r"^pip install (['\"]?)\.", rf"python -m pip install -q \g<1>{wheel}", command)
    quick = re.search(r"#\s*long-running \(quick: ([^)]*)\)", command)
    if quick:
        command = command[: quick.start()].rstrip() + " " + quick.group(1)
    return command


def matches(expected: str, line: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, line) is not None


def assert_prints(step: Step, output: str) -> None:
    """Every line the README shows appears in the output, in order."""
    lines = output.splitlines()
    at = 0
    for wanted in step.expected:
        while at < len(lines) and not matches(wanted, lines[at]):
            at += 1
        assert at < len(lines), f"README: `{step.code}` should print {wanted!r}; it printed:\n{output}"
        at += 1


def test_readme_steps_are_found():
    steps = readme_steps(README.read_text())
    commands = [s.code for s in steps if s.kind == "console"]
    assert any(c.startswith("pip install '.") for c in commands)
    assert any("# long-running (quick: " in c for c in commands)
    assert any(c.startswith("pxgl infer") for c in commands)
    assert any(s.kind == "python" for s in steps)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> tuple[Path, Path]:
    """A fresh venv for the wheel built from this checkout (nothing from the checkout itself on its path)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    return env_dir / "bin", wheel


def test_every_readme_command_and_snippet_runs_from_an_empty_folder(installed, tmp_path):
    bin_dir, wheel = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "NO_COLOR": "1", "COLUMNS": "120"}
    work = tmp_path / "empty"
    work.mkdir()
    for step in readme_steps(README.read_text()):
        if step.kind == "python":
            command = [str(bin_dir / "python"), "-c", step.code]
        else:
            command = ["bash", "-c", runnable(step.code, wheel)]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README: `{step.code}` failed:\n{done.stdout}\n{done.stderr}"
        assert_prints(step, done.stdout + done.stderr)
