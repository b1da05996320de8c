"""Run `pxgl` as a user does: a new process, on this source tree, keeping whatever PYTHONPATH already
provides (the GPU machine brings moderngl that way)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pxgl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment = os.environ | {"PYTHONPATH": path} | (env or {})
    command = [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)
