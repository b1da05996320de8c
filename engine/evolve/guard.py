"""Run one external proposer command so that nothing it starts outlives it (docs/FORMATS.md §13).

    python guard.py PARENT_PID COMMAND

Run as a script by proposers.External, never imported by pxgl (it needs only the standard library, so it
starts in milliseconds). It makes itself a child subreaper: every process the command starts, detached with
`setsid` or double-forked included, is its descendant until it dies, and any whose parent died is
re-parented here rather than to init. It runs the command through the shell, stdin/stdout/stderr shared,
and when the shell exits, or on SIGTERM (pxgl's timeout, or pxgl's own death through PR_SET_PDEATHSIG),
kills every descendant before it exits. So its exit is the end of every writer of the proposer's stdout."""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILLED_BY_SIGTERM = 128 + signal.SIGTERM


def parent_of(pid: str) -> int | None:
    """A live process's parent id, or None for a zombie or one gone since /proc was listed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    state, parent = stat[stat.rindex(b")") + 2 :].split()[:2]  # the name, in parentheses, may hold spaces
    return None if state == b"Z" else int(parent)


def descendants(root: int) -> set[int]:
    """Every live process below `root` in the process tree."""
    parents = {int(pid): parent_of(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return found


def reap() -> None:
    """Collect every child that has exited (this subreaper's orphans included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_descendants() -> None:
    """SIGKILL every descendant until none is left: one forked between a listing and its kill is listed,
    and killed, on the next round (its parent's death re-parents it here)."""
    while True:
        alive = descendants(os.getpid())
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reap()
        if not alive:
            return
        time.sleep(0.005)


def on_sigterm(_signum: int, _frame: object) -> None:
    end_descendants()
    os._exit(KILLED_BY_SIGTERM)


def main(parent: int, command: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    signal.signal(signal.SIGTERM, on_sigterm)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # pxgl died before PR_SET_PDEATHSIG took effect
        return KILLED_BY_SIGTERM
    shell = subprocess.Popen(command, shell=True)
    status = shell.wait()
    end_descendants()
    return status if status >= 0 else 128 - status  # killed by a signal: as the shell reports it


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
