"""The evolution runs issue 14 asks for, in one command on a many-core machine (workers = cores):

    python -m bench.evolve_runs --out bench/results/evolve-DATE --max-time 8m [--seeds 3] [--budget 15000] [--large]

1. Evolution against the random baseline from pixellm_v0's architecture: `--seeds` seeds each, the same
   budget, the runs side by side (cores / runs workers each, the issue's 2-core run at 16 cores); each
   run must beat v0 on held-out bits/byte to promote a champion.
2. `--large`: one run from pixellm_v1 with every core, larger limits, for a champion that beats v1.

It writes every run's folder (run.json, lineage.jsonl, report.png, index.html, champion.pxa), a
comparison PNG (best selection score against steps spent, every run) and summary.json: per run the best
screened selection score, the champion's and the start model's held-out bits/byte and whether it was
promoted; per proposer the median best score. `--max-time` caps each run's wall clock (it ends screening
early, so a capped run is no longer replayable step for step, and runs stopped by it spent unequal budgets:
summary.json records each run's steps).

Time: a candidate's cost is its training plus five numpy passes over the 64k-position validation and
held-out splits (the trainer's scores) and one GPU pass; the comparison keeps candidates under 800k
weights and multiply-adds (v0 has 280k) so that 6 runs of 2 workers each fit 16 cores in about 8 minutes.
The --large run cannot beat v1 in 10 minutes: v1 itself is 11,128 steps of a 1.3M-weight model (440 s
on 4 BLAS threads; a single-threaded worker takes several times that), so give it --large-budget 150000
and an hour."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pxgl.evolve.proposers import scored, selection_loss
from pxgl.evolve.report import draw_curves, png
from pxgl.evolve.rundir import LINEAGE, RunDir
from pxgl.outputs import atomic_write

PROPOSERS = ("evolution", "random")


COMPARISON_LIMITS = ["--max-weights", "800000", "--max-flops", "800000"]
LARGE_LIMITS = ["--max-weights", "3000000", "--max-flops", "3000000"]


def evolve_command(
    out: Path, start: str, proposer: str, seed: int, budget: int, workers: int, args, max_time: str | None
) -> list[str]:
    command = [sys.executable, "-m", "pxgl.cli", "evolve", "--out", str(out), "--start", start]
    command += ["--proposer", proposer, "--seed", str(seed), "--budget", str(budget), "--workers", str(workers)]
    command += ["--batch", str(args.batch), "--population", str(args.population), "--finalists", str(args.finalists)]
    if max_time:
        command += ["--max-time", max_time]
    return command


def run_all(commands: list[list[str]], logs: list[Path]) -> list[int]:
    """Every command at once, each logging to its file; their exit statuses."""
    processes = []
    for command, log in zip(commands, logs, strict=True):
        with open(log, "w") as handle:
            processes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT))
    return [p.wait() for p in processes]


def summarise(run: Path) -> dict:
    records = RunDir(run).read(LINEAGE)
    settings = RunDir(run).settings()
    screened = scored(records)
    promotion = next((r for r in records if r.get("kind") == "promotion"), None)
    record = {
        "run": run.name,
        "proposer": settings["proposer"],
        "seed": settings["seed"],
        "budget": settings["budget"],
        "candidates": sum(1 for r in records if r.get("kind") == "candidate"),
        "best_selection_bits_per_byte": min(map(selection_loss, screened), default=None),
        "screening_steps": sum(r["cost"]["steps"] for r in screened),
    }
    if promotion:
        record |= {
            "steps_spent": promotion["steps_spent"],
            "champion": promotion["architecture"],
            "champion_heldout_bits_per_byte": promotion["heldout"]["bits_per_byte"],
            "start_heldout_bits_per_byte": promotion["start"]["heldout"]["bits_per_byte"],
            "gain_bits_per_byte": promotion["gain_bits_per_byte"],
            "promoted": promotion["promoted"],
        }
    return record


def comparison_runs(args) -> list[tuple[str, int, Path]]:
    """(proposer, seed, folder) of every comparison run."""
    return [(p, seed, args.out / f"{p}-seed{seed}") for seed in range(args.seeds) for p in PROPOSERS]


def comparison_folders(args) -> list[Path]:
    return [folder for _, _, folder in comparison_runs(args)]


def comparison(args, began: float) -> dict:
    """Evolution against random from pixellm_v0, --seeds seeds each, side by side."""
    folders = comparison_folders(args)
    workers = max(1, args.cores // len(folders))
    commands = [
        evolve_command(folder, "pixellm_v0", proposer, seed, args.budget, workers, args, args.max_time)
        + COMPARISON_LIMITS
        for proposer, seed, folder in comparison_runs(args)
    ]
    statuses = run_all(commands, [folder.with_suffix(".log") for folder in folders])
    summary: dict = {"workers_per_run": workers, "comparison_seconds": round(time.monotonic() - began)}
    return summary | compare(args.out, folders, statuses)


def best_within(records: list[dict], steps: int) -> float | None:
    """The best selection score among the screened candidates a run finished within its first `steps`
    screening steps (candidates in id order, as proposed)."""
    spent, best = 0, None
    for record in sorted(scored(records), key=lambda r: r["id"]):
        spent += record["cost"]["steps"]
        if spent > steps:
            break
        best = selection_loss(record) if best is None else min(best, selection_loss(record))
    return best


def median_or_none(values: list[float | None]) -> float | None:
    """The median of the runs that scored a candidate; None when none did."""
    scored_values = [v for v in values if v is not None]
    return statistics.median(scored_values) if scored_values else None


def compare(out: Path, folders: list[Path], statuses: list[int | None]) -> dict:
    """Each run's summary, each proposer's median best score, and the same at equal steps: a --max-time cap
    ends screening early, and the random proposer's costlier candidates spend fewer steps in the same
    time, so the medians are also taken over the first steps every run spent."""
    summary: dict = {"runs": [summarise(f) | {"exit_status": s} for f, s in zip(folders, statuses, strict=True)]}
    equal = min((r["screening_steps"] for r in summary["runs"] if r["screening_steps"]), default=0)
    summary["equal_screening_steps"] = equal
    for proposer in PROPOSERS:
        runs = [(f, r) for f, r in zip(folders, summary["runs"], strict=True) if r["proposer"] == proposer]
        best = [r["best_selection_bits_per_byte"] for _, r in runs]
        at_equal = [best_within(RunDir(f).read(LINEAGE), equal) for f, _ in runs]
        summary[f"median_best_{proposer}"] = median_or_none(best)
        summary[f"median_best_{proposer}_at_equal_steps"] = median_or_none(at_equal)
    for suffix in ("", "_at_equal_steps"):
        evolution, random = summary[f"median_best_evolution{suffix}"], summary[f"median_best_random{suffix}"]
        beats = None if evolution is None or random is None else evolution < random
        summary[f"evolution_beats_random{suffix}"] = beats
    curves = [(folder.name, RunDir(folder).read(LINEAGE)) for folder in folders]
    (out / "comparison.png").write_bytes(png(draw_curves(curves)))
    return summary


def write_summary(out: Path, summary: dict) -> None:
    """summary.json, whole or not at all."""
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=15_000, help="training steps per comparison run")
    parser.add_argument("--large-budget", type=int, default=60_000, help="training steps of the --large run")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--finalists", type=int, default=1)
    parser.add_argument("--max-time", default=None, help="each run's wall-clock cap, e.g. 8m")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--large", action="store_true", help="also the run from pixellm_v1")
    parser.add_argument("--large-only", action="store_true", help="only the run from pixellm_v1")
    parser.add_argument("--large-time", default=None, help="the --large run's wall-clock cap (default --max-time)")
    parser.add_argument("--summarise", action="store_true", help="only rewrite the comparison's summary in --out")
    args = parser.parse_args()
    if args.summarise:
        previous = json.loads((args.out / "summary.json").read_text())
        runs = previous["runs"]
        summary = previous | compare(args.out, [args.out / r["run"] for r in runs], [r["exit_status"] for r in runs])
        write_summary(args.out, summary)
        print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
        return
    args.out.mkdir(parents=True, exist_ok=False)
    began = time.monotonic()

    summary: dict = {"cores": args.cores}
    if not args.large_only:
        summary |= comparison(args, began)
    if args.large or args.large_only:
        folder = args.out / "large-from-v1"
        max_time = args.large_time or args.max_time
        command = evolve_command(folder, "pixellm_v1", "evolution", 0, args.large_budget, args.cores, args, max_time)
        command += LARGE_LIMITS
        (status,) = run_all([command], [folder.with_suffix(".log")])
        summary["large"] = summarise(folder) | {"exit_status": status}
    summary["seconds"] = round(time.monotonic() - began)
    write_summary(args.out, summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
