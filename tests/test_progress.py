"""Progress moves at least once a second on every long verb (issue 26): generation reports its tokens chunk by
chunk, tiles and chunks sized by time (engine/pacing.py), and a batch's prompts are counted as they are
tokenized. Renderers of a given pace are simulated on a clock of the test's own."""

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pxgl.engine
import pytest
from pxgl.cli.app import app
from pxgl.engine import Engine
from pxgl.generation import Sampling
from pxgl.pacing import SMALLEST, ChunkSizer
from pxgl.progress import reporting
from pxgl.tokenizer import Tokenizer
from typer.testing import CliRunner

from tests.models import random_model

ALPHABET = list("abcdefgh ijklmnop")


class PacedRenderer:
    """A CPU renderer (llvmpipe) generating `pace` tokens a second on a clock of its own: submitting a chunk
    of steps runs it, costing its rows x steps; `gaps` are the seconds before each progress report."""

    def __init__(self, pace: float, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now, self.reported_at, self.reported = 0.0, 0.0, []
        self.gaps: list[float] = []
        make_job = pxgl.engine.generation_job

        def paced_job(executor, ids, *args):
            job = make_job(executor, ids, *args)
            submit = job.submit

            def paced_submit(first: int, last: int) -> None:
                submit(first, last)
                self.now += len(ids) * (last - first) / pace

            job.submit = paced_submit
            return job

        monkeypatch.setattr(pxgl.engine, "generation_job", paced_job)
        monkeypatch.setattr(pxgl.engine, "time", self, raising=False)

    def monotonic(self) -> float:
        return self.now

    def report(self, tokens: int) -> None:
        self.gaps.append(self.now - self.reported_at)
        self.reported_at = self.now
        self.reported.append(tokens)


@pytest.mark.parametrize(
    "executor, sampling, prompts, steps, pace",
    [
        ("auto", Sampling(), 700, 24, 2000.0),
        ("auto", Sampling(), 700, 24, 500.0),
        ("passes", Sampling(0.8, 50, 0.9, 7), 200, 8, 500.0),
    ],
)
def test_generation_reports_its_tokens_at_least_once_a_second(
    tmp_path, gpu, monkeypatch, executor, sampling, prompts, steps, pace, rng, seed
):
    """`generate --batch` of hundreds of prompts on renderers of 2,000 and 500 tokens a second (pixellm_v1 on
    a busy llvmpipe: 128 prompts, the smallest tile, take 0.26 s a step): every chunk reported as it lands, at
    least once a second, the same tokens as one un-paced run (the sampled draws follow each prompt's row,
    whatever tile it runs in)."""
    model = random_model(tmp_path, rng, 300, 8, 8, 4)
    rows = [list(map(int, rng.integers(0, 300, int(rng.integers(1, 7))))) for _ in range(prompts)]
    with Engine(model, gpu=gpu, executor=executor) as engine:
        whole = engine.generate(rows, steps, sampling)
        paced = PacedRenderer(pace, monkeypatch)
        streamed = list(engine.stream(rows, steps, sampling, on_tokens=paced.report))
    tokens = np.stack([step.tokens for step in streamed], axis=1)
    assert np.array_equal(tokens, whole.tokens), f"seed {seed}"
    assert sum(paced.reported) == len(rows) * steps, f"seed {seed}"
    assert max(paced.gaps) <= 1.0, f"{max(paced.gaps):.2f} s without progress, seed {seed}"


def test_chunks_never_leave_a_small_remainder(rng, seed):
    """A chunk leaves none or at least `smallest` items behind (a small last chunk could run on another
    kernel), and is never above `largest`."""
    for _ in range(200):
        largest = int(rng.integers(1, 3000))
        sizer = ChunkSizer(largest)
        sizer.size = min(largest, 1 << int(rng.integers(0, 12)))
        left = int(rng.integers(1, 10_000))
        while left:
            taken = sizer.take(left)
            assert 0 < taken <= min(left, sizer.largest), f"seed {seed}"
            left -= taken
            assert left == 0 or left >= min(SMALLEST, largest), f"seed {seed}"


class Clock:
    now = 0.0

    def monotonic(self) -> float:
        return self.now


class RecordingBar:
    """The progress bar surface (engine/cli/report.py), recording each task's advances in order."""

    def __init__(self, events: list) -> None:
        self.events, self.tasks = events, []

    def __enter__(self) -> "RecordingBar":
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None) -> int:
        self.tasks.append(description)
        return len(self.tasks) - 1

    def advance(self, task: int, n: float = 1) -> None:
        self.events.append((self.tasks[task], n))


def tokenized_model(folder: Path, rng: np.random.Generator) -> Path:
    model = random_model(folder, rng, 300, 8, 8, 4)
    texts = ["".join(rng.choice(ALPHABET, 2000)) for _ in range(3)]
    Tokenizer.train(texts, 300).save(folder / "random.tokenizer.json")
    return Path(model.source)


@pytest.mark.parametrize("verb", [["infer"], ["generate", "-n", "30"]])
def test_a_batch_is_counted_as_it_is_tokenized(tmp_path, monkeypatch, verb, rng, seed):
    """A batch file's prompts advance the bar one by one as they are tokenized, not all before it starts;
    generate's bar then counts every generated token."""
    import pxgl.cli.generate
    import pxgl.cli.predict

    model = tokenized_model(tmp_path, rng)
    prompts = ["".join(rng.choice(ALPHABET, int(rng.integers(1, 40)))).strip() or "a" for _ in range(400)]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    events: list = []
    monkeypatch.setattr(pxgl.cli.predict, "progress_bar", lambda total: RecordingBar(events))
    monkeypatch.setattr(pxgl.cli.generate, "progress_bar", lambda total: RecordingBar(events))
    encode = Tokenizer.encode

    def counted_encode(tokenizer: Tokenizer, text: str) -> list[int]:
        events.append(("encode", 1))
        return encode(tokenizer, text)

    monkeypatch.setattr(Tokenizer, "encode", counted_encode)
    result = CliRunner().invoke(app, [*verb, "-m", str(model), "--batch", str(tmp_path / "prompts.txt")])
    assert result.exit_code == 0, result.output
    tokenizing = [i for i, (name, _) in enumerate(events) if name == "tokenizing"]
    encodes = [i for i, (name, _) in enumerate(events) if name == "encode"]
    assert len(tokenizing) == len(prompts) and tokenizing[0] < encodes[-1], f"seed {seed}"
    if verb[0] == "generate":
        generated = [n for name, n in events if name == "generating"]
        assert sum(generated) == len(prompts) * 30 and min(tokenizing) < min(
            i for i, (name, _) in enumerate(events) if name == "generating"
        ), f"seed {seed}"


def test_deflating_in_pieces_reports_each_and_writes_zlibs_bytes(monkeypatch, rng, seed):
    """encode_png's stream, a piece at a time (no flush between pieces), is zlib.compress's, byte for byte."""
    import zlib

    import pxgl.png

    piece = int(rng.integers(1, 5000))
    monkeypatch.setattr(pxgl.png, "DEFLATE_PIECE", piece)
    data = rng.integers(0, int(rng.integers(2, 256)), int(rng.integers(1, 60_000)), dtype=np.uint8)
    events: list = []
    with reporting(lambda *event: events.append(event)):
        deflated = pxgl.png.deflate(memoryview(data))
    assert deflated == zlib.compress(data.tobytes()), f"seed {seed}"
    assert [done for _, done, _ in events] == [min(d, data.size) for d in range(piece, data.size + piece, piece)]
    assert {(stage, total) for stage, _, total in events} == {("compressing pixels", data.size)}, f"seed {seed}"


def test_import_export_and_pack_report_their_long_steps(tmp_path, monkeypatch, rng, seed):
    """export reports its three stages, the weight image read, each tensor converted and the file written;
    import each pass over each tensor and each piece of its weight image compressed; pack each piece
    compressed. Every stage (each time it runs) ends at its total."""
    import pxgl.png
    from pxgl.cli.interchange import EXPORTING

    monkeypatch.setattr(pxgl.png, "DEFLATE_PIECE", 1000)
    model = tokenized_model(tmp_path, rng)
    tensors = tmp_path / "m.safetensors"
    verbs = {
        "export": ["export", "-m", str(model), "-o", str(tensors)],
        "import": ["import", str(tensors), "-o", str(tmp_path / "back.pxi")],
        "pack": ["pack", "-m", str(tmp_path / "back.pxi"), "-o", str(tmp_path / "back.pxa")],
    }
    stages = {}
    for verb, args in verbs.items():
        events: list = []
        with reporting(lambda *event, events=events: events.append(event)):
            result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        for stage in {stage for stage, _, _ in events}:
            dones = [(done, total) for name, done, total in events if name == stage]
            # a stage may run again (pack compresses two images): it goes back to 0 only once at its total
            restarts = [a == total for (a, total), (b, _) in itertools.pairwise(dones) if b < a]
            assert all(restarts) and dones[-1][0] == dones[-1][1], f"{verb} {stage}, seed {seed}"
        stages[verb] = Counter(stage for stage, _, _ in events)
    weight_rows = Path(model).stat().st_size  # the deflated image is smaller than its rows: several pieces
    assert stages["export"][EXPORTING] == 4 and stages["export"]["reading pixels"] >= 1, f"seed {seed}"
    assert stages["export"]["converting tensors"] == 5 and stages["export"]["writing"] >= 1, f"seed {seed}"
    assert stages["import"]["quantizing weights"] == 3 * 5 and stages["import"]["checking the grid"] == 5, seed
    assert stages["import"]["compressing pixels"] > 1 and stages["pack"]["compressing pixels"] > 1, seed
    assert weight_rows > 1000, f"seed {seed}"


def test_a_worker_reports_training_twice_a_second_and_each_stages_end(rng, seed):
    """train calls its progress callback every step (here every 0-50 ms); a worker passes on an event
    every REPORT_SECONDS, never more often but at each stage's end, so the run hears of it at least once a
    second (with the runner's REPORT_SECONDS wait)."""
    from pxgl.evolve.worker import REPORT_SECONDS, Reporter

    clock = Clock()
    sent: list[tuple] = []
    reporter = Reporter(7, lambda event: sent.append((clock.now, *event)), clock.monotonic)
    totals = {"tokenizer": int(rng.integers(1, 100)), "training": int(rng.integers(100, 600)), "validating": 30}
    for stage, total in totals.items():
        for done in range(1, total + 1):
            clock.now += float(rng.uniform(0, 0.05))
            reporter(stage, done, total)
    assert all(candidate == 7 for _, candidate, *_ in sent), f"seed {seed}"
    assert {(stage, total) for stage, total in totals.items()} <= {(s, d) for _, _, s, d, _ in sent}, f"seed {seed}"
    assert sent[0][0] <= 0.05, f"seed {seed}"
    for (before, *_), (after, _, _, done, total) in itertools.pairwise(sent):
        gap = after - before
        assert gap <= REPORT_SECONDS + 0.05, f"{gap:.2f} s without an event, seed {seed}"
        assert done == total or gap >= REPORT_SECONDS, f"two events {gap:.2f} s apart, seed {seed}"


def test_local_workers_pass_on_a_candidates_training_as_it_goes(tmp_path, rng, seed):
    """A candidate trained by a LocalRunner's worker: the run hears of its training, step counts rising
    towards its total, before its result comes."""
    from pxgl.evolve.runners import LocalRunner
    from pxgl.evolve.settings import Request, new_settings
    from pxgl.evolve.worker import Task
    from pxgl.train import TrainConfig, train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(" ".join(rng.choice(["pixel", "shader", "reads", "the", "a"], 40)) for _ in range(30))
    )
    start = tmp_path / "start.pxi"
    train(TrainConfig(out=start, files=(corpus,), vocab_size=256, embed_dim=8, context="mean", window=2,
                      hidden=(8,), steps=5, eval_every=5, batch_size=32))  # fmt: skip
    settings = new_settings(Request(start=str(start), files=(corpus,), batch_size=32))
    task = Task(
        3, "screen", settings["start_genome"], 300, tmp_path / "candidates", (corpus,), settings["split"], 32, None
    )
    heard: list[tuple] = []
    runner = LocalRunner(1, lambda *event: heard.append(event))
    try:
        ((index, result),) = runner.run([task])
    finally:
        runner.close()
    assert index == 0 and "error" not in result, result
    training = [done for candidate, stage, done, total in heard if stage == "training" and total == 300]
    assert {candidate for candidate, *_ in heard} == {3} and training, f"{heard}, seed {seed}"
    assert training == sorted(training) and training[-1] <= 300, f"seed {seed}"
