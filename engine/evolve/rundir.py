"""The run directory (docs/FORMATS.md §13.1): its settings (run.json, written once), the proposals made
(proposals.jsonl) and the lineage of finished candidates (lineage.jsonl). Logs grow only by whole lines,
each one write(2) of an O_APPEND file then fsync, so a run killed at any moment leaves at most one torn
last line, which reading ignores and resuming cuts off."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import PxglError
from ..outputs import atomic_write
from ..reading import MiB, decode_utf8, parse_json, read_bounded

FORMAT = "pxgl-evolve-run"
VERSION = 1
SETTINGS = "run.json"
PROPOSALS = "proposals.jsonl"
LINEAGE = "lineage.jsonl"
CANDIDATES = "candidates"
MAX_LOG_BYTES = 256 * MiB


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def candidates(self) -> Path:
        return self.path / CANDIDATES

    def check_new(self) -> None:
        """Refuse, before anything is written, a folder a new run cannot have."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise PxglError(
                f"--out {self.path}: exists and is not an empty folder; give a new folder, or --resume {self.path}"
            )
        if self.path.is_dir() and not os.access(self.path, os.W_OK):
            raise PxglError(f"--out {self.path}: cannot write in the folder (permission denied)")

    def create(self, settings: dict[str, Any]) -> None:
        """A new run: the folder (empty or new) and its settings; a failure leaves the folder as it was."""
        self.check_new()
        made = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.candidates.mkdir(exist_ok=True)
            document = {"format": FORMAT, "version": VERSION, **settings}
            atomic_write(self.path / SETTINGS, lambda tmp: tmp.write_text(json.dumps(document, indent=2) + "\n"))
        except (OSError, PxglError) as e:
            shutil.rmtree(self.path if made else self.candidates, ignore_errors=True)
            reason = e.strerror or str(e) if isinstance(e, OSError) else str(e)
            raise PxglError(f"--out {self.path}: cannot make the run folder ({reason})") from None

    def settings(self, option: str = "--resume") -> dict[str, Any]:
        """An existing run's settings, or one line saying this is no run (`option`: what named the folder)."""
        path = self.path / SETTINGS
        if not path.is_file():
            advice = "; start one with --out" if option == "--resume" else ""
            raise PxglError(f"{option} {self.path}: not a pxgl evolve run (no {SETTINGS}){advice}")
        text = decode_utf8(read_bounded(path, "run settings", MiB), f"{path}: not UTF-8")
        document = parse_json(text, str(path))
        if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
            raise PxglError(f"{path}: not a {FORMAT} version {VERSION} settings file")
        if option == "--resume" and not os.access(self.path, os.W_OK):
            raise PxglError(f"--resume {self.path}: cannot write in the folder (permission denied)")
        return document

    def read(self, name: str) -> list[dict[str, Any]]:
        """A log's whole lines (a torn last line is not a record yet)."""
        path = self.path / name
        if not path.exists():
            return []
        data = read_bounded(path, "run log", MAX_LOG_BYTES)
        lines = data.split(b"\n")[:-1]
        records = []
        for number, line in enumerate(lines, 1):
            record = parse_json(decode_utf8(line, f"{path} line {number}: not UTF-8"), f"{path} line {number}")
            if not isinstance(record, dict):
                raise PxglError(f"{path} line {number}: not a JSON object; the log is damaged")
            records.append(record)
        return records

    def cut_torn_line(self, name: str) -> None:
        """Drop a torn last line (a kill mid-write), so the next record starts a line of its own."""
        path = self.path / name
        if not path.exists():
            return
        data = read_bounded(path, "run log", MAX_LOG_BYTES)
        whole = data.rfind(b"\n") + 1
        if whole != len(data):
            os.truncate(path, whole)

    def append(self, name: str, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
