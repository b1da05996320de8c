"""`pxgl train` checkpoints (docs/FORMATS.md §15): Ctrl-C or a kill keeps the run, `--resume` continues it to the
bytes of the uninterrupted run, and a checkpoint is untrusted input (one line on anything wrong with it)."""

import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pxgl import train as train_module
from pxgl.checkpoint import FORMAT, VERSION
from pxgl.errors import PxglError
from pxgl.loading import load_model
from pxgl.spec import meta_path_for
from pxgl.train import TrainConfig, TrainingInterrupted, checkpoint_path, resume, train

from tests.cartridges import pxgl
from tests.test_train import grammar_text


def small(corpus: Path, out: Path, **changes) -> TrainConfig:
    """Every kind of state at work: attention, both dropouts, epochs of 37 steps, validation every 15 steps."""
    config = TrainConfig(
        out=out, files=(corpus,), vocab_size=300, embed_dim=8, context="attention", window=3, concat=1, head_dim=4,
        hidden=(8,), input_dropout=0.1, dropout=0.1, weight_decay=0.01, batch_size=128, steps=100, eval_every=15,
    )  # fmt: skip
    return replace(config, **changes)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "grammar.txt"
    path.write_text(grammar_text(0))
    return path


def run_folder(base: Path, name: str) -> Path:
    (base / name).mkdir()
    return base / name / "m.pxi"


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> TrainConfig:
    config = small(corpus, run_folder(tmp_path_factory.mktemp("straight"), "run"))
    train(config)
    return config


def written(out: Path) -> dict[str, bytes | dict]:
    """The model's files: weights and tokenizer as bytes, the meta without its wall-clock train_seconds."""
    meta = json.loads(meta_path_for(out).read_text())
    del meta["eval"]["train_seconds"]
    return {"weights": out.read_bytes(), "tokenizer": out.with_name("m.tokenizer.json").read_bytes(), "meta": meta}


def interrupt_at(step: int):
    def progress(stage: str, done: int, total: int) -> None:
        if stage == "training" and done == step:
            os.kill(os.getpid(), signal.SIGINT)

    return progress


@pytest.mark.parametrize("patience", [0, 2])
def test_ctrl_c_then_resume_writes_the_uninterrupted_runs_bytes(corpus, straight, tmp_path, rng, seed, patience):
    config = replace(straight, out=run_folder(tmp_path, "straight"), patience=patience) if patience else straight
    if patience:
        train(config)
    steps = json.loads(meta_path_for(config.out).read_text())["eval"]["training"]["steps"]
    stop = int(rng.integers(1, steps))
    out = run_folder(tmp_path, "resumed")
    with pytest.raises(TrainingInterrupted) as stopped:
        train(replace(config, out=out), interrupt_at(stop), checkpoint_every=1000)
    assert (stopped.value.step, stopped.value.path) == (stop, checkpoint_path(out)), f"seed {seed}"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.checkpoint.npz"], f"seed {seed}"
    resumed_config, _ = resume(checkpoint_path(out))
    assert resumed_config == replace(config, out=out.absolute(), files=(corpus.absolute(),))
    assert written(out) == written(config.out), f"stopped at {stop}, seed {seed}"
    assert not checkpoint_path(out).exists()


def test_a_run_killed_between_checkpoints_resumes_from_the_last(straight, tmp_path, rng, seed):
    every = int(rng.integers(5, 40))
    killed = int(rng.integers(every + 1, 100))

    def crash(stage: str, done: int, total: int) -> None:
        if stage == "training" and done == killed:
            raise RuntimeError("killed")

    out = run_folder(tmp_path, "resumed")
    with pytest.raises(RuntimeError, match="killed"):
        train(replace(straight, out=out), crash, checkpoint_every=every)
    with zipfile.ZipFile(checkpoint_path(out)) as archive:
        assert json.loads(archive.read("manifest.json"))["step"] == (killed - 1) // every * every, f"seed {seed}"
    resume(checkpoint_path(out))
    assert written(out) == written(straight.out), f"every {every}, killed at {killed}, seed {seed}"


def test_a_run_that_ignores_sigint_keeps_ignoring_it(straight, tmp_path):
    """A run started with SIGINT ignored (a shell script's background job, as Python itself does) is not
    stopped by it: the checkpoint handler took SIGINT over and the run stopped with exit 130."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out = run_folder(tmp_path, "run")
        train(replace(straight, out=out), interrupt_at(40), checkpoint_every=1000)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert written(out) == written(straight.out) and not checkpoint_path(out).exists()


def test_ctrl_c_on_pxgl_train_saves_says_how_to_resume_and_exits_130(corpus, tmp_path):
    args = ["train", str(corpus), "--vocab", "300", "--embed", "4", "--context", "mean", "--window", "1"]
    args += ["--hidden", "4", "--steps", "400", "--checkpoint-every", "5", "-o", "m.pxi"]
    command = [sys.executable, "-m", "pxgl.cli", *args]
    run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "m.checkpoint.npz"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert f"continue with: pxgl train --resume {checkpoint.name}" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.checkpoint.npz"]
    again = subprocess.run(
        [sys.executable, "-m", "pxgl.cli", "train", "--resume", checkpoint.name, "--json"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["training"]["steps"] == 400 and load_model(tmp_path / "m.pxi").spec.embed_dim == 4
    assert not checkpoint.exists()


@pytest.fixture(scope="module")
def saved(straight, tmp_path_factory) -> Path:
    """A checkpoint of `straight`'s run, stopped at step 40."""
    out = run_folder(tmp_path_factory.mktemp("saved"), "run")
    with pytest.raises(TrainingInterrupted):
        train(replace(straight, out=out), interrupt_at(40), checkpoint_every=1000)
    return checkpoint_path(out)


def rewritten(source: Path, target: Path, manifest=None, member=None, compression=zipfile.ZIP_STORED) -> None:
    """The checkpoint's members copied, the manifest edited by `manifest`, a member's bytes by `member`."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", compression) as out:
        for name in archive.namelist():
            data = archive.read(name)
            if name == "manifest.json" and manifest is not None:
                record = json.loads(data)
                manifest(record)
                data = json.dumps(record).encode()
            if member is not None and name == member[0]:
                data = member[1](data)
            out.writestr(name, data)


MANIFEST_HEAD = {"format": FORMAT, "version": VERSION}


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


CORRUPTIONS = {
    "a flipped bit": ({"member": ("params/embed.npy", flip_last_byte)}, "do not match their sha256"),
    "a member's shape": (
        {"manifest": lambda m: m["arrays"]["params/embed"].update(shape=[1 << 39, 8])},
        "declares 17592186044416 bytes",
    ),
    "a compressed member": ({"compression": zipfile.ZIP_DEFLATED}, "is compressed"),
    "an extra array": ({"manifest": lambda m: m["arrays"].pop("adam_v/out.bias")}, "not the arrays its manifest"),
    "the tokenizer": ({"manifest": lambda m: m["tokenizer"].update(vocab_size=3)}, "its tokenizer"),
    "the config": ({"manifest": lambda m: m["config"].update(out="m.png")}, "must end in .pxi"),
    "a config type": ({"manifest": lambda m: m["config"].update(seed=1.5)}, "config's seed is 1.5"),
    "the rng": ({"manifest": lambda m: m["rng"].update(bit_generator="MT19937")}, "PCG64"),
    "the step": ({"manifest": lambda m: m.update(step=100)}, "do not fit the run"),
    "the text": ({"manifest": lambda m: m.update(text_sha256="0" * 64)}, "training text has changed"),
    "the format": ({"manifest": lambda m: m.update(version=2)}, "not a pxgl-train-checkpoint version 1"),
    "a NUL in out": ({"manifest": lambda m: m["config"].update(out="n\0.pxi")}, "config's out is 'n"),
    "a NUL in a file": ({"manifest": lambda m: m["config"].update(files=["a\0b"])}, "config's files is"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_bad_checkpoint_is_one_line_and_writes_nothing(saved, tmp_path, case):
    changes, message = CORRUPTIONS[case]
    bad = tmp_path / "m.checkpoint.npz"
    rewritten(saved, bad, **changes)
    with pytest.raises(PxglError, match=message) as refused:
        resume(bad)
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.checkpoint.npz"]


def test_a_member_claiming_more_bytes_than_the_file_holds_is_refused_before_any_is_read(tmp_path):
    """A checkpoint of under a kilobyte whose zip directory and manifest agree on a 256 TiB array was a MemoryError
    traceback (the array's buffer was allocated before its bytes were read); a smaller lie cost its size in
    memory. A stored member's bytes lie inside the file: one that claims more is refused first."""
    shape = (1 << 38, 1 << 7)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": shape})
    entry = {"dtype": "int64", "shape": list(shape), "sha256": "0" * 64}
    bad = tmp_path / "m.checkpoint.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("manifest.json", json.dumps({**MANIFEST_HEAD, "arrays": {"order": entry}}))
        archive.writestr("order.npy", header.getvalue() + bytes(64))
        claimed = archive.getinfo("order.npy")
        claimed.file_size = claimed.compress_size = len(header.getvalue()) + 8 * math.prod(shape)
    with pytest.raises(PxglError, match=r"array order: its member claims \d+ bytes; the file holds \d+") as refused:
        resume(bad)
    assert "\n" not in str(refused.value)


def test_a_truncated_checkpoint_or_another_file_is_refused_by_the_cli(saved, tmp_path):
    data = saved.read_bytes()
    for name, content in (("half.npz", data[: len(data) // 2]), ("empty.npz", b""), ("text.npz", b"not a zip\n")):
        (tmp_path / name).write_bytes(content)
        run = subprocess.run(
            [sys.executable, "-m", "pxgl.cli", "train", "--resume", name], cwd=tmp_path, capture_output=True, text=True
        )
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert f"{name}: not a readable training checkpoint" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "pxgl.cli", "train", "--resume", str(saved), "--steps", "3", "--seed", "2"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2 and "leave out steps, seed" in run.stderr, run.stderr


def test_resume_never_writes_over_a_users_file(saved, tmp_path):
    """The outputs a checkpoint names are checked as a new run's are (FORMATS §0.3): a checkpoint pointing its
    `out` at a user's files (one sent by someone else, or files made since) replaced them with exit 0."""
    out = tmp_path / "notes.pxi"
    mine = {path: f"the user's {path.name}\n".encode() for path in (out, meta_path_for(out))}
    for path, data in mine.items():
        path.write_bytes(data)
    bad = tmp_path / "sent.checkpoint.npz"
    rewritten(saved, bad, manifest=lambda m: m["config"].update(out=str(out)))
    with pytest.raises(PxglError, match=r"notes\.pxi: exists and is not a pixel file .* --force to replace it"):
        resume(bad)
    assert {path: path.read_bytes() for path in mine} == mine and bad.exists()
    resume(bad, force=True)
    assert load_model(out).spec.vocab_size == 300 and not bad.exists()


@pytest.mark.parametrize("option", [("--split-seed", "0"), ("--seed", "3"), ("--out", "x.pxi")])
def test_resume_refuses_every_option_it_would_ignore(saved, monkeypatch, capsys, option):
    """--split-seed 0 is a choice (its default is none): it was taken and silently ignored."""
    code, _, err = pxgl(monkeypatch, capsys, "train", "--resume", str(saved), *option)
    name = option[0].removeprefix("--").replace("-", "_")
    assert code == 2 and f"leave out {name}" in err, err


def test_a_new_run_never_replaces_a_checkpoint(saved, corpus, tmp_path):
    out = saved.with_name("m.pxi")
    before = saved.read_bytes()
    with pytest.raises(PxglError, match="a checkpoint of an interrupted run is there; continue it with"):
        train(small(corpus, out), checkpoint_every=10)
    assert saved.read_bytes() == before


def test_checkpoint_arrays_are_plain_numpy(saved):
    """Any numpy reads a checkpoint's arrays (np.load, no pickles)."""
    with np.load(saved, allow_pickle=False) as arrays:
        assert arrays["params/embed"].shape == (300, 8) and arrays["order"].dtype == np.int64


def test_training_reports_progress_through_every_stage(straight, tmp_path, monkeypatch):
    """Steps one by one, and validation and the final evaluation a batch of positions at a time (v1's final
    evaluation was one jump from 0 to 1 after minutes)."""
    monkeypatch.setattr(train_module, "EVAL_BATCH", 64)
    reports: dict[str, list[tuple[int, int]]] = {}
    evaluation = train(
        replace(straight, out=run_folder(tmp_path, "run")), lambda *r: reports.setdefault(r[0], []).append(r[1:])
    )
    positions = evaluation["positions"]
    assert reports["training"] == [(step, 100) for step in range(1, 101)]
    for stage, total, runs in (
        ("validating", positions["validation"], 100 // 15 + 1),
        ("evaluating", 2 * (positions["validation"] + positions["heldout"]), 1),
    ):
        done = [d for d, t in reports[stage] if t == total]
        assert len(done) == len(reports[stage]) and done.count(0) == runs and done.count(total) == runs, stage
        assert all(0 < b - a <= 64 for a, b in itertools.pairwise(done) if b), stage
