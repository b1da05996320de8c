"""`pxgl evolve` (docs/FORMATS.md §13) on a tiny corpus and tiny models: a whole run, a SIGKILL then
--resume, an external proposer's garbage, the Ray runner, and bad input. Every run's seed is fresh (or
PXGL_TEST_SEED) and named in each assertion."""

import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from pxgl.evolve.rundir import LINEAGE, PROPOSALS, RunDir
from pxgl.evolve.space import Limits, ProposalError, check, cost, genome_from_json, mutate, random_genome
from pxgl.loading import load_model
from pxgl.reading import parse_json
from pxgl.train import TrainConfig, train

from tests.cli_process import PEAK_MEMORY, pxgl

WORDS = ["the", "a", "one", "cat", "dog", "pixel", "model", "shader", "texture", "reads", "writes", "sees", "draws"]
LIMITS = ["--max-weights", "60000", "--max-flops", "60000"]


@pytest.fixture(scope="module")
def run_seed() -> int:
    return int(os.environ.get("PXGL_TEST_SEED") or secrets.randbits(16))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """60 documents of a tiny grammar (the next word depends on the last ones): something to learn."""
    r = np.random.default_rng(7)
    documents = []
    for _ in range(60):
        sentences = [
            " ".join(WORDS[i] for i in (r.integers(0, 3), r.integers(3, 9), r.integers(9, 13))) for _ in range(8)
        ]
        documents.append(". ".join(sentences) + ".")
    path = tmp_path_factory.mktemp("corpus") / "grammar.txt"
    path.write_text("\n\n".join(documents))
    return path


@pytest.fixture(scope="module")
def start(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("start") / "start.pxi"
    config = TrainConfig(
        out=out, files=(corpus,), vocab_size=256, embed_dim=16, context="concat", window=2, hidden=(24,),
        steps=10, eval_every=10, batch_size=64,
    )  # fmt: skip
    train(config)
    return out


def run_args(corpus: Path, start: Path, seed: int, *extra: str) -> list[str]:
    return [
        str(corpus), "--start", str(start), "--seed", str(seed), "--budget", "360", "--population", "3",
        "--batch", "2", "--batch-size", "64", *LIMITS, *extra,
    ]  # fmt: skip


def comparable(run: Path) -> list[dict]:
    """The lineage by id, without what the clock says (a cartridge's meta holds the trainer's seconds)."""
    clock = ("wall_seconds", "cartridge_sha256")
    records = [{k: v for k, v in r.items() if k not in clock} for r in RunDir(run).read(LINEAGE)]
    return sorted(records, key=lambda r: r.get("id", 1 << 30))


@pytest.fixture(scope="module")
def finished(corpus, start, run_seed, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "whole"
    done = pxgl("evolve", "--out", str(run), *run_args(corpus, start, run_seed), "--workers", "2", cwd=run.parent)
    assert done.returncode == 0, (run_seed, done.stderr)
    return run


def test_a_short_run_trains_packs_scores_and_promotes_only_a_winner(finished, start, run_seed):
    records = RunDir(finished).read(LINEAGE)
    candidates = [r for r in records if r["kind"] == "candidate"]
    (promotion,) = [r for r in records if r["kind"] == "promotion"]
    assert sorted(r["id"] for r in candidates) == list(range(len(candidates))), run_seed
    settings = RunDir(finished).settings()
    assert sum(r["cost"]["steps"] for r in candidates) <= settings["budget"], run_seed
    trained = [r for r in candidates if "scores" in r]
    assert {r["stage"] for r in trained} == {"screen", "final"}, run_seed
    for record in trained:
        cartridge = finished / record["cartridge"]
        assert hashlib.sha256(cartridge.read_bytes()).hexdigest() == record["cartridge_sha256"], run_seed
        model = load_model(cartridge)
        assert model.spec.architecture.describe() == record["architecture"], run_seed
        # the GPU's selection score and the numpy trainer's, on the same split, agree
        gpu, trainer = record["scores"]["select"]["bits_per_byte"], record["scores"]["trainer"]["bits_per_byte"]
        assert abs(gpu - trainer) < 1e-3, (run_seed, record["id"], gpu, trainer)
    finals = [r for r in trained if r["stage"] == "final"]
    best = min(finals, key=lambda r: (r["scores"]["select"]["bits_per_byte"], r["id"]))
    assert promotion["champion"] == best["id"], run_seed
    assert all(r["cost"]["steps"] > max(s["cost"]["steps"] for s in trained if s["stage"] == "screen") for r in finals)
    # held-out: the GPU's figure for the champion equals the numpy trainer's, recorded in its meta
    champion_meta = load_model(finished / best["cartridge"]).spec.eval["heldout"]["quantized"]
    assert abs(promotion["heldout"]["bits_per_byte"] - champion_meta["bits_per_byte"]) < 1e-3, run_seed
    start_meta = load_model(start).spec.eval["heldout"]["quantized"]
    assert abs(promotion["start"]["heldout"]["bits_per_byte"] - start_meta["bits_per_byte"]) < 1e-3, run_seed
    gain = promotion["start"]["heldout"]["bits_per_byte"] - promotion["heldout"]["bits_per_byte"]
    assert promotion["gain_bits_per_byte"] == pytest.approx(gain, abs=1e-6)
    assert promotion["promoted"] == (gain > 0) == (finished / "champion.pxa").exists(), run_seed
    if promotion["promoted"]:
        assert (finished / "champion.pxa").read_bytes() == (finished / best["cartridge"]).read_bytes()
    page = (finished / "index.html").read_text()
    assert "data:image/png;base64," in page, run_seed
    assert not any(outside in page for outside in ("http://", "https://", "<script", "<link")), run_seed
    assert (finished / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("mark", "count", "whole_group"),
    [(b'"stage":"screen"', 2, True), (b'"kind":"screening-end"', 1, True), (b'"stage":"screen"', 1, False)],
    ids=["screening", "finals", "screening-parent-only"],
)
def test_sigkill_mid_candidate_then_resume_gives_the_same_lineage(
    mark, count, whole_group, finished, corpus, start, run_seed, tmp_path
):
    """Killed with its whole process group, or only the run itself (as an OOM killer does): in both its
    workers end with it (none goes on writing into the folder), and --resume gives the uninterrupted
    lineage."""
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "pxgl.cli", "evolve", "--out", str(run), *run_args(corpus, start, run_seed)]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        lineage = run / LINEAGE
        if lineage.exists() and lineage.read_bytes().count(mark) >= count:
            break
        time.sleep(0.05)
    assert process.poll() is None, (run_seed, "the run ended before it could be killed", process.stderr.read())
    workers = children(process.pid)
    assert workers, run_seed
    if whole_group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait()
    process.stderr.close()
    deadline = time.monotonic() + 30
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in workers if alive(pid)]
    with contextlib.suppress(ProcessLookupError):  # whatever is left, so the test leaves nothing running
        os.killpg(process.pid, signal.SIGKILL)
    assert not survivors, (run_seed, f"workers {survivors} outlived the killed run")
    killed_at = len(RunDir(run).read(LINEAGE))
    done = pxgl("evolve", "--resume", str(run), "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, (run_seed, done.stderr)
    assert killed_at < len(comparable(run)), run_seed
    assert comparable(run) == comparable(finished), run_seed
    again = pxgl("evolve", "--resume", str(run), cwd=tmp_path)
    assert again.returncode == 0 and comparable(run) == comparable(finished), (run_seed, again.stderr)


PROPOSER = textwrap.dedent(
    """
    import json, sys
    document = json.load(sys.stdin)
    history = document["history"]
    with open(sys.argv[1], "a") as calls:
        calls.write(json.dumps([r["id"] for r in history]) + "\\n")
    parent = history[0]["genome"]
    lstm = {"mode": "lstm", "window": 2}
    answers = {
        1: "this is not JSON",
        2: json.dumps({"parent": 0, "architecture": dict(parent["architecture"], context=lstm)}),
        3: json.dumps({"parent": 0, "architecture": dict(parent["architecture"], hidden=[4000])}),
    }
    valid = {"parent": 0, "mutation": "wider", "architecture": dict(parent["architecture"], hidden=[32]),
             "training": {"steps": document["limits"]["max_steps"]}}
    print(answers.get(len(history), json.dumps(valid)))
    """
)


def test_an_external_proposer_is_checked_recorded_and_never_asked_twice(corpus, start, run_seed, tmp_path):
    script, calls = tmp_path / "proposer.py", tmp_path / "calls.jsonl"
    script.write_text(PROPOSER)
    command = f"{sys.executable} {script} {calls}"
    run = tmp_path / "external"
    args = run_args(corpus, start, run_seed, "--proposer", command, "--workers", "1", "--max-steps", "40")
    args += ["--finalists", "1"]
    args[args.index("--batch") + 1] = "1"
    done = pxgl("evolve", "--out", str(run), *args, cwd=tmp_path)
    assert done.returncode == 0, (run_seed, done.stderr)
    by_id = {r["id"]: r for r in RunDir(run).read(LINEAGE) if r["kind"] == "candidate"}
    assert "not JSON" in by_id[1]["error"], by_id[1]
    assert "lstm" in by_id[2]["error"], by_id[2]
    assert "too costly" in by_id[3]["error"] and "weights" in by_id[3]["error"], by_id[3]
    assert by_id[4]["mutation"] == "wider" and "scores" in by_id[4] and "error" not in by_id[4], by_id[4]
    assert all(by_id[i]["cost"]["steps"] == 0 for i in (1, 2, 3))
    asked = [json.loads(line) for line in calls.read_text().splitlines()]
    # each proposal saw every record before it, refusals with their reasons included
    assert asked[:4] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]], asked
    proposed = RunDir(run).read(PROPOSALS)
    assert len(asked) == len(proposed) - 1  # candidate 0 is the start model, not asked for
    # lose the last records (a kill after their proposals were made): resume replays, never asks again
    whole = comparable(run)
    lines = (run / LINEAGE).read_bytes().splitlines(keepends=True)
    (run / LINEAGE).write_bytes(b"".join(lines[:5]) + lines[5][:7])
    done = pxgl("evolve", "--resume", str(run), "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, (run_seed, done.stderr)
    assert [json.loads(line) for line in calls.read_text().splitlines()] == asked
    assert comparable(run) == whole


RAY_THEN_PXGL = """
import sys
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
from pxgl.cli import main
sys.argv = ["pxgl", *sys.argv[1:]]
main()
"""


def test_the_ray_runner_gives_the_local_runners_lineage(finished, corpus, start, run_seed, tmp_path):
    """On a local Ray the test starts (in a process of its own, so no GL context lives in pytest's)."""
    run = tmp_path / "ray"
    command = [sys.executable, "-c", RAY_THEN_PXGL, "evolve", "--out", str(run), *run_args(corpus, start, run_seed)]
    done = subprocess.run([*command, "--ray", "local"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, (run_seed, done.stderr[-2000:])
    assert comparable(run) == comparable(finished), run_seed


def running(argv: list[str]) -> list[int]:
    """Processes whose command line is `argv`."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes() == wanted:
                found.append(int(cmdline.parent.name))
    return found


def test_a_flooding_then_hanging_proposer_is_cut_off_and_leaves_no_process(corpus, start, run_seed, tmp_path):
    """Asked first, the proposer floods stdout (`yes`): cut at 1 MiB as it streams, a refused proposal, in
    bounded memory. Asked again, it hangs with a detached child (its own session) holding its stdout: at the
    timeout the run ends with one line, and nothing the proposer started is left."""
    detached, hanging = ["sleep", str(4000 + run_seed)], ["sleep", str(5000 + run_seed)]
    script, flag = tmp_path / "proposer.sh", tmp_path / "asked"
    script.write_text(
        f"if [ -e {flag} ]; then setsid {' '.join(detached)} & {' '.join(hanging)}; else touch {flag}; yes; fi"
    )
    run = tmp_path / "run"
    args = run_args(corpus, start, run_seed, "--proposer", f"sh {script}", "--proposer-timeout", "2", "--workers", "1")
    args[args.index("--batch") + 1] = "3"  # ids 1 and 2 are both asked before anything trains
    try:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_MEMORY, "evolve", "--out", str(run), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        left = running(detached) + running(hanging)
        for pid in left:  # the test leaves nothing running, even when pxgl did
            os.kill(pid, signal.SIGKILL)
    assert not left, (run_seed, "the proposer's processes outlived the run")
    *lines, peak = done.stderr.splitlines()
    assert int(peak) < 500_000_000, f"peak {int(peak) >> 20} MiB"  # FORMATS §0.3's bound (the input is tiny)
    assert lines == ["c0001 refused: proposal over 1048576 bytes", lines[-1]], (run_seed, lines)
    assert done.returncode == 2 and "no answer within 2 s" in lines[-1], (run_seed, lines)
    refused = RunDir(run).read(PROPOSALS)[1]
    assert refused["id"] == 1 and refused["proposal"]["error"] == "proposal over 1048576 bytes", refused


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--budget", "0"], "--budget 0"),
        (["--population", "0"], "--population 0: give at least 1"),
        (["--proposer", "no-such-proposer-xyz"], "unknown"),
        (["--proposer", "sleep 30", "--proposer-timeout", "1"], "no answer within 1 s"),
        (["--max-time", "soon"], "--max-time"),
        (["--proposer-timeout", "nan"], "--proposer-timeout nan: give a number of seconds above 0"),
        (["--proposer-timeout", "inf"], "--proposer-timeout inf: give a number of seconds above 0"),
        (["--proposer-timeout", "0"], "--proposer-timeout 0: give a number of seconds above 0"),
    ],
)
def test_bad_run_options_are_one_line_and_exit_2(change, message, corpus, start, tmp_path):
    run = tmp_path / "run"
    args = run_args(corpus, start, 0, "--workers", "1", "--max-steps", "4")
    done = pxgl("evolve", "--out", str(run), *args, *change, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr, done.stderr
    if "sleep 30" in change:  # nothing lost: the run is there, with what was proposed, and it resumes
        assert RunDir(run).settings()["proposer"] == "sleep 30"
        assert [p["id"] for p in RunDir(run).read(PROPOSALS)] == [0]
    else:
        assert not run.exists()


def test_bad_run_folders_are_one_line_and_exit_2(corpus, start, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--out", "/proc/pxgl-run"], "cannot make the run folder"),
        (["--out", str(tmp_path / "full")], "not an empty folder"),
        (["--resume", str(tmp_path / "empty")], "not a pxgl evolve run"),
        (["--resume", str(tmp_path / "empty"), "--budget", "10"], "drop --budget"),
        ([], "give --out"),
    ]
    for options, message in cases:
        extra = [str(corpus), "--start", str(start)] if "--out" in options else []
        done = pxgl("evolve", *options, *extra, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, (options, done.stderr)
        assert done.stderr.strip().count("\n") == 0, done.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert list((tmp_path / "full").iterdir()) == [tmp_path / "full" / "keep.txt"]
    assert not list((tmp_path / "empty").iterdir())


WITHOUT_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
sys.meta_path.insert(0, NoRay())
from pxgl.cli import main
sys.argv = ["pxgl", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--ray", "local"], "--ray needs Ray"),
        (["--workers", "0"], "--workers 0"),
        (["--baseline", "no-such-run"], "--baseline no-such-run: not a pxgl evolve run"),
        (["no-such-corpus.txt"], "no-such-corpus.txt"),
        (["latin1.txt"], "latin1.txt"),
        (["--device", "0,999"], "GPU 999"),
    ],
    ids=["no-ray", "workers", "baseline", "missing-corpus", "corpus-not-utf8", "device"],
)
def test_a_run_that_cannot_start_leaves_its_folder_as_it_was(options, message, corpus, start, tmp_path):
    """Every precondition (Ray importable, workers, baselines, the corpus, GPUs) is checked before anything is
    written: a new folder is not made, an empty one stays empty, so the next run is not refused."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n\nna\xefve\n\nthird".encode("latin-1"))
    for folder in (tmp_path / "new", tmp_path / "empty")[: 2 if "--ray" in options else 1]:
        args = ["evolve", "--out", str(folder), *run_args(corpus, start, 0, "--max-steps", "4"), *options]
        if options[0].endswith(".txt"):
            args.remove(str(corpus))
        done = subprocess.run([sys.executable, "-c", WITHOUT_RAY, *args], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, (options, done.stderr)
        assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "new").exists(), (options, "a run that never started made its folder")
        assert not list((tmp_path / "empty").iterdir()), (options, "a run that never started wrote in its folder")


def test_resuming_without_the_runs_corpus_records_nothing(corpus, start, tmp_path):
    """A run resumed after its corpus moved is refused before any candidate runs (each would be recorded as
    failed, spending the run's budget on nothing)."""
    from pxgl.evolve.settings import Request, new_settings

    moved = tmp_path / "corpus.txt"
    moved.write_bytes(corpus.read_bytes())
    run = RunDir(tmp_path / "run")
    run.create(new_settings(Request(files=(moved,), start=str(start), budget=360, max_steps=4, batch_size=64)))
    moved.unlink()
    done = pxgl("evolve", "--resume", str(run.path), "--workers", "1", cwd=tmp_path)
    assert done.returncode == 2 and "corpus.txt" in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert run.read(LINEAGE) == [] and run.read(PROPOSALS) == []


def test_full_training_is_never_shorter_than_a_screening(start, rng, seed):
    """Each finalist's share of the full-training budget is at least the longest screening a candidate may
    have (`--max-steps` given or not); settings that cannot give that are refused in one line."""
    from pxgl.errors import PxglError
    from pxgl.evolve.settings import Request, new_settings

    accepted = 0
    for _ in range(60):
        budget, finalists = int(rng.integers(1, 5000)), int(rng.integers(1, 6))
        max_steps = int(rng.integers(1, budget + 1)) if rng.random() < 0.7 else None
        request = Request(budget=budget, finalists=finalists, max_steps=max_steps, start=str(start))
        try:
            settings = new_settings(request)
        except PxglError as e:
            assert "--budget" in str(e) or "--max-steps" in str(e), (seed, request, str(e))
            continue
        accepted += 1
        full = round(budget * settings["final_share"])
        assert full // finalists >= settings["limits"]["max_steps"], (seed, request, settings["limits"])
    assert accepted >= 10, seed


def fabricated_run(folder: Path, rng: np.random.Generator, candidates: int, steps: int) -> RunDir:
    """A finished run's files as the loop writes them, with long words where a user's may be long."""
    run = RunDir(folder)
    start = "/home/someone/projects/models/a start model with a long name and ünïcode.pxi"
    run.create({"seed": 0, "budget": 2 * candidates * steps, "proposer": "python3 /home/someone/propose.py --model x"})
    architecture = "vocab 4096, embed 2048, attention 64 (concat 64, head 128), hidden 2048x2048x2048x2048, residual"
    for i in range(candidates):
        score = {"bits_per_byte": float(rng.uniform(2, 4))}
        record = {
            "kind": "candidate",
            "id": i,
            "stage": "final" if i == candidates - 1 else "screen",
            "mutation": "width",
        }
        record |= {"parent": i - 1 if i else None, "genome": {}, "architecture": architecture, "cartridge": "none"}
        run.append(LINEAGE, record | {"cost": {"steps": steps}, "scores": {"select": score}})
    heldout = {"bits_per_byte": 2.0}
    promotion = {"kind": "promotion", "champion": candidates - 1, "architecture": architecture, "genome": {}}
    promotion |= {"heldout": heldout, "start": {"model": start, "heldout": heldout}, "gain_bits_per_byte": -1e-6}
    run.append(LINEAGE, promotion | {"promoted": False})
    return run


def drawn_text(monkeypatch) -> list[tuple[tuple[int, int], tuple[float, float, float, float], str]]:
    """Every text Pillow draws: (image size, bounding box, text)."""
    from PIL import ImageDraw

    calls = []
    real = ImageDraw.ImageDraw.text

    def text(self, xy, text, *args, **kwargs):
        box = self.textbbox(xy, text, font=kwargs.get("font"), anchor=kwargs.get("anchor"))
        calls.append((self.im.size, box, text))
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    return calls


@pytest.mark.parametrize(("candidates", "steps"), [(3, 7), (2, 50), (41, 2437), (120, 60000)])
def test_the_reports_text_lies_inside_its_images_and_its_id_ticks_are_distinct_integers(
    candidates, steps, tmp_path, rng, seed, monkeypatch
):
    from pxgl.evolve.report import MARGIN, PANEL, draw_tree, write_report
    from pxgl.visuals.colour import DRAWABLE

    run = fabricated_run(tmp_path / "run", rng, candidates, steps)
    calls = drawn_text(monkeypatch)
    write_report(run, [])
    assert calls, seed
    for (width, height), (left, top, right, bottom), text in calls:
        assert left >= 0 and top >= 0 and right <= width and bottom <= height, (seed, text, (width, height))
    tofu = [text for *_, text in calls if not set(text) <= DRAWABLE]
    assert not tofu, (seed, "drawn with characters the font has no glyph for", tofu)
    calls.clear()
    draw_tree([r for r in run.read(LINEAGE) if r["kind"] == "candidate"], None)
    axis = PANEL[1] - MARGIN[3]
    ticks = [text for _, (_, top, _, _), text in calls if top > axis and text.replace(",", "").isdigit()]
    values = [int(text.replace(",", "")) for text in ticks]
    assert len(values) >= 2 and values == sorted(set(values)), (seed, ticks)
    assert values[0] >= 0 and values[-1] <= candidates - 1, (seed, ticks)


def test_mutations_and_random_draws_stay_in_the_space_and_within_limits(rng, seed):
    limits = Limits(max_weights=200_000, max_flops=150_000, min_steps=5, max_steps=50)
    start = random_genome(512, limits, rng)
    genome = start
    for _ in range(200):
        child, name = mutate(genome, limits, rng)
        assert child != genome and check(child, limits, 512) == child, (seed, name)
        spent = cost(child)
        assert spent["weights"] <= limits.max_weights and spent["flops"] <= limits.max_flops, seed
        assert genome_from_json(json.loads(json.dumps(child.to_json())), None) == child, seed
        genome = child if rng.random() < 0.7 else start
    with pytest.raises(ProposalError, match="too costly"):
        check(
            genome_from_json(start.to_json() | {"training": start.to_json()["training"] | {"steps": 51}}, None),
            limits,
            512,
        )


def test_a_torn_last_line_is_no_record_and_resuming_cuts_it(tmp_path, rng):
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0})
    records = [{"id": i, "value": float(rng.random())} for i in range(3)]
    for record in records:
        run.append(LINEAGE, record)
    with open(tmp_path / "run" / LINEAGE, "ab") as log:
        log.write(b'{"id": 3, "val')
    assert run.read(LINEAGE) == records
    run.cut_torn_line(LINEAGE)
    run.append(LINEAGE, {"id": 3})
    assert run.read(LINEAGE) == [*records, {"id": 3}]
    assert parse_json((tmp_path / "run" / LINEAGE).read_text().splitlines()[-1], "line") == {"id": 3}
