"""The evolution loop (docs/FORMATS.md §13): propose → train → write as pixels → score on the GPU → record,
batch after batch until the screening budget is spent; then full training for the best few, and the
promotion of the best of those only if it beats the start model on held-out text.

Determinism: candidate k's proposal sees exactly the records of the batches before its own, by id, and a
generator seeded by (seed, k); training is seeded by the split seed with one BLAS thread. So the same
settings replay the same lineage whatever order workers finish in, and `--resume` replays the recorded
proposals (an external proposer is never asked twice) and runs only what has no record yet."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PxglError
from . import proposers as proposing
from .rundir import LINEAGE, PROPOSALS, RunDir
from .runners import Runner
from .space import Genome, Limits, ProposalError, check, cost, genome_from_json, key
from .worker import Task, worker_device

Progress = Callable[[str], None]
REFUSALS_IN_A_ROW = 32
"""Screening ends when a proposer's answers are refused this many times in a row."""


@dataclass
class State:
    settings: dict[str, Any]
    start: Genome
    limits: Limits
    records: dict[int, dict[str, Any]]
    proposals: dict[int, dict[str, Any]]
    screened: bool
    """Screening has ended (its end is recorded): a resumed run goes on to full training."""

    def history(self, before: int) -> list[dict[str, Any]]:
        return [self.records[i] for i in sorted(self.records) if i < before and self.records[i]["kind"] == "candidate"]

    def spent(self, stage: str, before: int | None = None) -> int:
        """Training steps of the stage's finished candidates (of ids under `before`)."""
        return sum(
            r["cost"]["steps"]
            for i, r in self.records.items()
            if r["stage"] == stage and (before is None or i < before)
        )


def load_state(run: RunDir, settings: dict[str, Any]) -> State:
    start = genome_from_json(settings["start_genome"], None)
    limits = Limits(**settings["limits"])
    lineage = run.read(LINEAGE)
    records = {r["id"]: r for r in lineage if r.get("kind") == "candidate"}
    proposals = {p["id"]: p for p in run.read(PROPOSALS)}
    screened = any(r.get("kind") == "screening-end" for r in lineage)
    return State(settings, start, limits, records, proposals, screened)


def final_budget(settings: dict[str, Any]) -> int:
    return round(settings["budget"] * settings["final_share"])


def evolve(run: RunDir, runner: Runner, progress: Progress, devices: list[int] | None = None) -> dict[str, Any]:
    """Run (or finish) the run in `run`; returns its promotion record."""
    settings = run.settings()
    run.cut_torn_line(LINEAGE)
    run.cut_torn_line(PROPOSALS)
    finished = [r for r in run.read(LINEAGE) if r.get("kind") == "promotion"]
    if finished:
        return finished[-1]
    state = load_state(run, settings)
    proposer = proposing.proposer_for(settings["proposer"], settings["proposer_timeout"])
    if not state.screened:
        reason = screen(run, state, proposer, runner, progress, devices, time.monotonic())
        run.append(LINEAGE, {"kind": "screening-end", "reason": reason, "steps": state.spent("screen")})
    finals(run, state, runner, progress, devices)
    return promote(run, state, progress, devices)


# --- screening -------------------------------------------------------------------------------------


def screen(
    run: RunDir,
    state: State,
    proposer: proposing.Proposer,
    runner: Runner,
    progress: Progress,
    devices: list[int] | None,
    began: float,
) -> str:
    """Batches of `batch` ids until the screening budget is spent (or --max-time, or a proposer whose
    answers keep being refused); returns which."""
    settings = state.settings
    budget = settings["budget"] - final_budget(settings)
    batch, refused, max_time = settings["batch"], 0, settings.get("max_time")
    first = 0
    while True:
        planned, stopped = state.spent("screen", before=first), False
        proposed: list[dict[str, Any]] = []
        for candidate in range(first, first + batch):
            left = budget - planned
            stopped = left < state.limits.min_steps or refused >= REFUSALS_IN_A_ROW
            if stopped:
                break
            proposal = proposal_for(run, state, proposer, candidate, left)
            record = candidate_record(state, candidate, proposal, left, first)
            if "error" not in record:
                refused = 0
                planned += record["cost"]["steps"]
                proposed.append(record)
                continue
            refused += 1
            if candidate not in state.records:
                state.records[candidate] = record
                run.append(LINEAGE, record)
                progress(f"c{candidate:04d} refused: {record['error']}")
        run_records(run, state, runner, [r for r in proposed if r["id"] not in state.records], progress, devices)
        if stopped:
            return "budget" if refused < REFUSALS_IN_A_ROW else f"{REFUSALS_IN_A_ROW} refused proposals in a row"
        if max_time is not None and time.monotonic() - began >= max_time * (1 - settings["final_share"]):
            progress("--max-time reached: screening stops here")
            return "max-time"
        first += batch


def proposal_for(run: RunDir, state: State, proposer: proposing.Proposer, candidate: int, left: int) -> dict[str, Any]:
    """The recorded proposal for `candidate`, else a new one (recorded before anything runs)."""
    if candidate in state.proposals:
        return state.proposals[candidate]["proposal"]
    if candidate == 0:
        proposal = proposing.Proposal(None, "start", state.start.to_json())
    else:
        limits = state.limits
        budgeted = Limits(limits.max_weights, limits.max_flops, limits.min_steps, min(limits.max_steps, left))
        context = proposing.Context(state.start, budgeted, state.settings["population"], seen_genomes(state, candidate))
        rng = np.random.default_rng([state.settings["seed"], candidate])
        proposal = proposer.propose(state.history(candidate - candidate % state.settings["batch"]), context, rng)
    entry = {"id": candidate, "proposal": proposal.to_json()}
    state.proposals[candidate] = entry
    run.append(PROPOSALS, entry)
    return entry["proposal"]


def seen_genomes(state: State, candidate: int) -> frozenset[str]:
    """Every genome proposed for a lower id (in id order, so the same whatever has finished)."""
    seen = set()
    for earlier in range(candidate):
        try:
            seen.add(key(genome_from_json(state.proposals[earlier]["proposal"]["genome"], state.start.training)))
        except (KeyError, ProposalError):
            continue
    return frozenset(seen)


def candidate_record(
    state: State, candidate: int, proposal: dict[str, Any], left: int, batch_start: int
) -> dict[str, Any]:
    """The lineage record's proposed part, or a refused proposal's whole record. A parent must be a
    candidate of an earlier batch (what the proposer saw)."""
    record: dict[str, Any] = {
        "kind": "candidate",
        "id": candidate,
        "stage": "screen",
        "parent": proposal.get("parent"),
        "mutation": proposal.get("mutation"),
        "seeds": {"proposal": [state.settings["seed"], candidate], "training": state.settings["split"]["seed"]},
    }
    try:
        if proposal.get("error"):
            raise ProposalError(proposal["error"])
        parent = record["parent"]
        if parent is not None and not (parent < batch_start and parent in state.records):
            raise ProposalError(f"parent {parent} is not a candidate in the history")
        genome = check(genome_from_json(proposal["genome"], state.start.training), state.limits, vocab(state))
        if genome.training.steps > left:
            raise ProposalError(f"too costly: {genome.training.steps} steps, the budget has {left} left")
    except ProposalError as e:
        return record | {"genome": proposal.get("genome"), "error": str(e), "cost": {"steps": 0}}
    return record | {"genome": genome.to_json(), "architecture": genome.architecture.describe(), "cost": cost(genome)}


def vocab(state: State) -> int:
    return state.start.architecture.vocab_size


def task_for(run: RunDir, state: State, record: dict[str, Any], slot: int, devices: list[int] | None) -> Task:
    settings = state.settings
    return Task(
        id=record["id"],
        stage=record["stage"],
        genome=record["genome"],
        steps=record["cost"]["steps"],
        folder=run.candidates,
        files=tuple(Path(f) for f in settings["files"]),
        split=settings["split"],
        batch_size=settings["batch_size"],
        device=worker_device(slot, devices),
    )


def run_records(
    run: RunDir,
    state: State,
    runner: Runner,
    records: list[dict[str, Any]],
    progress: Progress,
    devices: list[int] | None,
) -> None:
    """Run a batch of proposed records; each is appended to the lineage the moment it finishes."""
    tasks = [task_for(run, state, record, slot, devices) for slot, record in enumerate(records)]
    for index, measured in runner.run(tasks):
        record = records[index] | measured
        if "error" in measured:
            record["cost"] = record["cost"] | {"steps": 0}
        state.records[record["id"]] = record
        run.append(LINEAGE, record)
        progress(describe(state, record))


def describe(state: State, record: dict[str, Any]) -> str:
    """The progress line: the candidate, the best screened so far, the budget left."""
    best = best_screened(state)
    head = f"c{record['id']:04d} {record['stage']:6}"
    if "error" in record:
        result = f"failed: {record['error']}"
    else:
        result = f"{record['scores']['select']['bits_per_byte']:.4f} bits/byte in {record['wall_seconds']:.0f} s"
    best_text = f"best {proposing.selection_loss(best):.4f} (c{best['id']:04d})" if best else "no best yet"
    budget = state.settings["budget"]
    left = budget - state.spent("screen") - state.spent("final")
    return f"{head} {result} · {best_text} · budget left {left:,} of {budget:,} steps"


def best_screened(state: State) -> dict[str, Any] | None:
    ranked = sorted(
        proposing.scored(list(state.records.values())), key=lambda r: (proposing.selection_loss(r), r["id"])
    )
    return ranked[0] if ranked else None


# --- full training and promotion -------------------------------------------------------------------


def finals(run: RunDir, state: State, runner: Runner, progress: Progress, devices: list[int] | None) -> None:
    """The best `finalists` distinct screened genomes, each trained again for an equal share of the final
    budget; their ids follow the screening ones."""
    ranked = sorted(
        proposing.scored(list(state.records.values())), key=lambda r: (proposing.selection_loss(r), r["id"])
    )
    chosen: list[dict[str, Any]] = []
    for record in ranked:
        if all(record["genome"] != c["genome"] for c in chosen):
            chosen.append(record)
    chosen = chosen[: state.settings["finalists"]]
    if not chosen:
        raise PxglError(f"{run.path}: no candidate could be trained and scored; see {LINEAGE} for why")
    steps = max(1, final_budget(state.settings) // len(chosen))
    first = 1 + max(i for i, r in state.records.items() if r["stage"] == "screen")
    records = [
        {
            "kind": "candidate",
            "id": first + offset,
            "stage": "final",
            "parent": parent["id"],
            "mutation": "full training",
            "seeds": {"proposal": None, "training": state.settings["split"]["seed"]},
            "genome": parent["genome"],
            "architecture": parent["architecture"],
            "cost": parent["cost"] | {"steps": steps},
        }
        for offset, parent in enumerate(chosen)
    ]
    run_records(run, state, runner, [r for r in records if r["id"] not in state.records], progress, devices)


def promote(run: RunDir, state: State, progress: Progress, devices: list[int] | None) -> dict[str, Any]:
    from .promotion import heldout_scores, publish

    final = [r for r in state.records.values() if r["stage"] == "final" and "error" not in r]
    if not final:
        raise PxglError(f"{run.path}: no finalist could be trained and scored; see {LINEAGE} for why")
    champion = min(final, key=lambda r: (proposing.selection_loss(r), r["id"]))
    settings = state.settings
    files = tuple(Path(f) for f in settings["files"])
    device = worker_device(0, devices)
    progress(f"scoring the champion c{champion['id']:04d} and the start model on held-out text")
    mine = heldout_scores(run.path / champion["cartridge"], files, settings["split"], device)
    theirs = heldout_scores(settings["start"], files, settings["split"], device)
    gain = theirs["bits_per_byte"] - mine["bits_per_byte"]
    promoted = gain > 0
    if promoted:
        publish(run.path / champion["cartridge"], run.path / "champion.pxa")
    record = {
        "kind": "promotion",
        "champion": champion["id"],
        "architecture": champion["architecture"],
        "genome": champion["genome"],
        "heldout": mine,
        "start": {"model": settings["start"], "heldout": theirs},
        "gain_bits_per_byte": round(gain, 6),
        "promoted": promoted,
        "steps_spent": state.spent("screen") + state.spent("final"),
    }
    run.append(LINEAGE, record)
    verdict = "promoted to champion.pxa" if promoted else "not promoted: it does not beat the start model"
    progress(
        f"champion c{champion['id']:04d}: held-out {mine['bits_per_byte']:.4f} bits/byte against the start's "
        f"{theirs['bits_per_byte']:.4f} ({gain:+.4f}); {verdict}"
    )
    return record
