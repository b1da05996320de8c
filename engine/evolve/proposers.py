"""Proposers behind one interface: given the run's history (every finished candidate, by id) and a
generator seeded by the run's seed and the new candidate's id, say what to try next (docs/FORMATS.md §13).

    evolution  aging (regularized) evolution: tournament among the youngest `population`, mutate the winner
    random     the baseline: a uniform draw from the space
    COMMAND    any program: the history as JSON on stdin, one proposal as JSON on stdout"""

import json
import math
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import PxglError
from ..reading import parse_json
from .space import Genome, Limits, ProposalError, genome_from_json, mutate, random_genome

BUILT_IN = ("evolution", "random")
TOURNAMENT = 3
MAX_PROPOSAL_BYTES = 1 << 20
STDERR_TAIL_BYTES = 4096
"""Of a proposer's stderr only the end is kept (its last line goes in the error)."""
MAX_TIMEOUT_S = 86_400
GUARD = Path(__file__).with_name("guard.py")
GUARD_PATIENCE_S = 10
"""The guard kills a command's processes in milliseconds; past this it is killed with its process group."""


@dataclass(frozen=True)
class Proposal:
    """What a proposer answered: a genome's JSON (checked by the loop), or the reason it has none."""

    parent: int | None
    mutation: str
    genome: Any
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        record = {"parent": self.parent, "mutation": self.mutation, "genome": self.genome}
        return record | ({"error": self.error} if self.error else {})


@dataclass(frozen=True)
class Context:
    """What every proposer may look at."""

    start: Genome
    limits: Limits
    population: int
    seen: frozenset[str]
    """Genomes (space.key) already recorded or proposed earlier in this batch: built-ins propose new ones."""


class Proposer(Protocol):
    name: str

    def propose(self, history: list[dict[str, Any]], context: Context, rng: np.random.Generator) -> Proposal: ...


def scored(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished screening candidates that have a selection score, by id."""
    return [r for r in history if r.get("stage") == "screen" and r.get("scores", {}).get("select") is not None]


def selection_loss(record: dict[str, Any]) -> float:
    return record["scores"]["select"]["bits_per_byte"]


class Evolution:
    """Aging evolution (Real et al., 2019): the population is the youngest `population` scored candidates;
    a tournament of TOURNAMENT of them picks the parent (lowest selection bits/byte), whose child moves
    one gene. Until the population is full, children of the start model fill it."""

    name = "evolution"

    def propose(self, history: list[dict[str, Any]], context: Context, rng: np.random.Generator) -> Proposal:
        alive = scored(history)[-context.population :]
        if len(alive) < context.population:
            parent_id, parent = None, context.start
            if alive:
                parent_id, parent = alive[0]["id"], genome_from_json(alive[0]["genome"], context.start.training)
        else:
            picks = rng.choice(len(alive), size=min(TOURNAMENT, len(alive)), replace=False)
            best = min((alive[int(i)] for i in picks), key=lambda r: (selection_loss(r), r["id"]))
            parent_id, parent = best["id"], genome_from_json(best["genome"], context.start.training)
        try:
            child, mutation = mutate(parent, context.limits, rng, context.seen)
        except ProposalError as e:
            return Proposal(parent_id, "none", None, str(e))
        return Proposal(parent_id, mutation, child.to_json())


class RandomSearch:
    name = "random"

    def propose(self, history: list[dict[str, Any]], context: Context, rng: np.random.Generator) -> Proposal:
        genome = random_genome(context.start.architecture.vocab_size, context.limits, rng, context.seen)
        return Proposal(None, "random", genome.to_json())


class External:
    """A program run through the shell for each proposal: the history on stdin, one JSON object on stdout
    ({"parent": id or null, "mutation": "...", "architecture": {...}, "training": {...}}). Garbage is a
    refused proposal; a program that fails or outlives `timeout` seconds stops the run."""

    def __init__(self, command: str, timeout: float) -> None:
        self.name = command
        self.command = command
        self.timeout = timeout

    def propose(self, history: list[dict[str, Any]], context: Context, rng: np.random.Generator) -> Proposal:
        document = {
            "start": context.start.to_json(),
            "limits": context.limits.to_json(),
            "seed": int(rng.integers(2**31)),
            "history": history,
        }
        answer = ask(self.command, json.dumps(document).encode(), self.timeout)
        if answer.timed_out:
            raise PxglError(
                f"--proposer {self.command!r}: no answer within {self.timeout:g} s; the run is kept, "
                "fix the proposer and continue with --resume"
            )
        if answer.stdout is None:
            return Proposal(None, "external", None, f"proposal over {MAX_PROPOSAL_BYTES} bytes")
        if answer.status != 0:
            tail = answer.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise PxglError(
                f"--proposer {self.command!r}: exit status {answer.status} {tail[0][:120]!r}; the run is "
                "kept, fix the proposer and continue with --resume"
            )
        return parse_proposal(answer.stdout)


@dataclass(frozen=True)
class Answer:
    """What a proposer command gave: its stdout (None when it passed MAX_PROPOSAL_BYTES), the tail of its
    stderr, and its exit status; or nothing when it outlived its time."""

    stdout: bytes | None
    stderr: bytes
    status: int
    timed_out: bool = False


def ask(command: str, document: bytes, timeout: float) -> Answer:
    """Run `command` through the guard (guard.py: nothing it starts survives it) with `document` on stdin,
    reading its stdout with the bound as it streams: past MAX_PROPOSAL_BYTES, or past `timeout` seconds,
    the guard is told to kill everything the command started and its output is never waited for."""
    guard = subprocess.Popen(
        [sys.executable, "-I", str(GUARD), str(os.getpid()), command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    streams = {guard.stdout: bytearray(), guard.stderr: bytearray()}
    pending = memoryview(document)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            os.set_blocking(stream.fileno(), False)  # type: ignore[union-attr]
            selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        os.set_blocking(guard.stdin.fileno(), False)  # type: ignore[union-attr]
        selector.register(guard.stdin, selectors.EVENT_WRITE)  # type: ignore[arg-type]
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return end(guard, Answer(None, b"", -1, timed_out=True))
            for key, _ in selector.select(left):
                if key.fileobj is guard.stdin:
                    pending = feed(guard, selector, pending)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                kept = streams[key.fileobj]  # type: ignore[index]
                kept += chunk
                if key.fileobj is guard.stdout and len(kept) > MAX_PROPOSAL_BYTES:
                    return end(guard, Answer(None, b"", -1))
                if key.fileobj is guard.stderr:
                    del kept[:-STDERR_TAIL_BYTES]
    status = guard.wait()
    return Answer(bytes(streams[guard.stdout]), bytes(streams[guard.stderr]), status)


def feed(guard: subprocess.Popen, selector: selectors.BaseSelector, pending: memoryview) -> memoryview:
    """Write what stdin takes now; close it when all is written or the command stopped reading."""
    try:
        pending = pending[os.write(guard.stdin.fileno(), pending[: 1 << 16]) :]  # type: ignore[union-attr]
    except BrokenPipeError:
        pending = pending[:0]
    if not pending:
        selector.unregister(guard.stdin)  # type: ignore[arg-type]
        guard.stdin.close()  # type: ignore[union-attr]
    return pending


def end(guard: subprocess.Popen, answer: Answer) -> Answer:
    """Stop the guard (it kills all the command started), without waiting for the command's output."""
    for stream in (guard.stdin, guard.stdout, guard.stderr):
        stream.close()  # type: ignore[union-attr]
    guard.terminate()
    try:
        guard.wait(GUARD_PATIENCE_S)
    except subprocess.TimeoutExpired:
        os.killpg(guard.pid, signal.SIGKILL)
        guard.wait()
    return answer


def parse_proposal(output: bytes) -> Proposal:
    """A proposer's stdout as a Proposal; anything else is one with the reason as its error."""
    try:
        raw = parse_json(output.decode("utf-8"), "proposal")
    except (UnicodeDecodeError, PxglError) as e:
        return Proposal(None, "external", None, f"not JSON: {str(e)[:120]}")
    if not isinstance(raw, dict):
        return Proposal(None, "external", None, "not a JSON object")
    parent = raw.get("parent")
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)):
        return Proposal(None, "external", None, f"parent {str(parent)[:40]!r} is not a candidate id")
    mutation = raw.get("mutation", "external")
    mutation = mutation[:200] if isinstance(mutation, str) else "external"
    genome = {key: raw[key] for key in ("architecture", "training") if key in raw}
    return Proposal(parent, mutation, genome)


def proposer_for(name: str, timeout: float) -> Proposer:
    """evolution, random, or a command whose program exists; anything else is refused in one line."""
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
        raise PxglError(f"--proposer-timeout {timeout:g}: give a number of seconds above 0, at most {MAX_TIMEOUT_S}")
    if name == "evolution":
        return Evolution()
    if name == "random":
        return RandomSearch()
    try:
        program = shlex.split(name)[:1]
    except ValueError:
        program = []
    if not program or shutil.which(program[0]) is None:
        raise PxglError(
            f"--proposer {name!r}: unknown; give {' or '.join(BUILT_IN)}, or a command whose program is on PATH "
            "or a path to an executable"
        )
    return External(name, timeout)
