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


# `python -c PEAK_MEMORY ARGS…` runs `pxgl ARGS…` and prints its peak resident bytes last on stderr.
PEAK_MEMORY = """
import re, sys
from pathlib import Path
from pxgl import cli

sys.argv = ["pxgl", *sys.argv[1:]]
try:
    cli.main()
finally:  # this process's own peak (ru_maxrss would keep the forking parent's across exec)
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) << 10, file=sys.stderr)
"""
