"""Run `pxgl` as a user does: a new process with this process's environment (the editable install, or the
PYTHONPATH the GPU machine brings pxgl and moderngl with)."""

import os
import subprocess
import sys
from pathlib import Path


def pxgl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = os.environ | (env or {})
    command = [sys.executable, "-m", "pxgl.cli", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)
