"""The Makefile's setup, its recipes run for real against a stand-in Python: `make run` installs pxgl alone,
`make test` adds the extras, each once, whichever of them runs first. The stand-in's venv is a folder whose
programs (python, pxgl, ruff) only log how they were called."""

import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVERY_EXTRA = ",".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
FULL_INSTALL = f"-e .[{EVERY_EXTRA}]"
"""What `make test` installs: pxgl with every optional extra pyproject declares, so no test skips."""
STAND_IN = """#!/bin/sh
echo "$(basename "$0") $*" >> "$MAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  for program in python pxgl ruff; do cp "$0" "$3/bin/$program"; done
fi
"""


@pytest.fixture
def checkout(tmp_path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    folder = tmp_path / "checkout"
    folder.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, folder / name)
    python = tmp_path / "python3"
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return folder


def make(checkout: Path, target: str) -> list[str]:
    """Run `make target` in the checkout; the installs it ran (pip's arguments after `install -q`)."""
    log = checkout.parent / "calls.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VENV", "PYTHON", "MAKEFLAGS")}
    env["MAKE_LOG"] = str(log)
    done = subprocess.run(
        ["make", "-s", target, f"PYTHON={checkout.parent / 'python3'}"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return [call.split(" install -q ", 1)[1] for call in calls if call.startswith("python -m pip install -q ")]


def test_make_run_installs_pxgl_alone_and_make_test_then_adds_the_extras(checkout):
    assert make(checkout, "run") == ["--upgrade pip", "-e ."]  # pip upgraded, then pxgl without extras
    assert make(checkout, "run") == []
    assert make(checkout, "test") == [FULL_INSTALL]
    assert make(checkout, "test") == []
    assert make(checkout, "run") == []


def test_make_test_first_leaves_nothing_for_make_run_to_install(checkout):
    assert make(checkout, "test") == ["--upgrade pip", FULL_INSTALL]
    assert make(checkout, "run") == []
    assert make(checkout, "lint") == []


def test_a_changed_pyproject_reinstalls(checkout):
    make(checkout, "test")
    pyproject = checkout / "pyproject.toml"
    later = pyproject.stat().st_mtime + 10
    os.utime(pyproject, (later, later))
    assert make(checkout, "run") == ["-e ."]
    assert make(checkout, "test") == [FULL_INSTALL]
