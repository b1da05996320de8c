"""The resident one-prompt kernel (engine/executors/fused_resident.py) against the numpy oracle: prompts of
random family members one at a time, one or several work groups, other GPU work stopping it first, leaving
when idle, closing, torn requests. A CPU renderer never chooses it; these tests force it there (the
protocol is the same, only slower) and run it as chosen on a GPU."""

import time

import numpy as np
import pytest
from pxgl.constants import REFUSED_WORD
from pxgl.engine import Engine
from pxgl.executors.fused_config import FusedConfig
from pxgl.executors.fused_resident import MAILBOX, resident_shape
from pxgl.loading import load_model

from tests.reference import oracle
from tests.reference.models import params_at, random_architecture, random_rows, write_random_member

PROMPTS = 8


@pytest.fixture
def resident_gpu(gpu, monkeypatch):
    """The session's GL backend, told it is no CPU renderer where it is one (never outside these tests)."""
    monkeypatch.setattr(gpu, "cpu_renderer", False)
    return gpu


def member(tmp_path, rng, mode: str, width: int | None = None, window: int | None = None):
    arch = random_architecture(rng, mode=mode)
    arch["context"]["window"] = window or min(arch["context"]["window"], 8)
    if width is not None:
        arch["hidden"][-1] = width
    path = write_random_member(tmp_path, rng, arch, name=mode)
    return load_model(path), path


def one_at_a_time(engine: Engine, rows: list[list[int]]) -> np.ndarray:
    return np.stack([engine.predict_one(row) for row in rows])[:, None, :]


def test_a_cpu_renderer_never_chooses_it(gpu, tmp_path, rng, seed):
    if not gpu.cpu_renderer:
        pytest.skip(f"{gpu.renderer} is not a CPU renderer")
    model, path = member(tmp_path, rng, "mean")
    with Engine(model, gpu=gpu, executor="fused") as engine:
        assert resident_shape(engine.executor) is None
        rows = random_rows(rng, 3, model.spec.vocab_size, max_len=6)
        oracle.assert_agrees(one_at_a_time(engine, rows), oracle.logits(params_at(path), rows), f"seed {seed}")
        assert engine.executor.resident is None, "a CPU renderer ran the resident kernel"


@pytest.mark.parametrize(("mode", "split"), [("mean", 0), ("concat", 0), ("attention", 0), ("attention", 4)])
def test_prompts_one_at_a_time_agree_with_the_oracle(resident_gpu, tmp_path, rng, seed, mode, split):
    model, path = member(tmp_path, rng, mode, width=40 if split else None)
    with Engine(model, gpu=resident_gpu, executor="fused", tuning=FusedConfig(resident_split=split)) as engine:
        shape = resident_shape(engine.executor)
        assert shape is not None and shape[3] == (split or 1)
        rows = random_rows(rng, PROMPTS, model.spec.vocab_size, max_len=12)
        rows[0] = rows[0][:1]
        what = f"{model.spec.architecture.describe()}, split {shape[3]}, seed {seed}"
        logits = oracle.logits(params_at(path), rows)
        oracle.assert_agrees(one_at_a_time(engine, rows), logits, what)
        assert engine.executor.resident is not None and engine.executor.resident.launches >= 1
        # fused_small's few-prompt dispatch shares the scratch (arrival counts, partial states) with the
        # resident groups: each goes on agreeing after the other.
        oracle.assert_agrees(engine.predict_ids(rows), logits, f"few prompts after it, {what}")
        oracle.assert_agrees(one_at_a_time(engine, rows[:2]), logits[:2], f"after few prompts, {what}")


def test_other_gpu_work_idling_and_closing_stop_it(resident_gpu, tmp_path, rng, seed):
    model, path = member(tmp_path, rng, "concat")
    rows = random_rows(rng, 6, model.spec.vocab_size, max_len=10)
    logits = oracle.logits(params_at(path), rows)
    engine = Engine(model, gpu=resident_gpu, executor="fused")
    resident = None
    try:
        oracle.assert_agrees(one_at_a_time(engine, rows[:2]), logits[:2], f"seed {seed}")
        resident = engine.executor.resident
        assert resident is not None
        words = resident.words
        # A batch is other GPU work: the kernel is told to leave first, and the batch agrees.
        batch = engine.predict_ids(rows)
        assert not resident.running and words[MAILBOX.exited] == resident.epoch
        oracle.assert_agrees(batch, logits, f"batch after the resident kernel, seed {seed}")
        # Left alone, it leaves by itself; the next prompt launches it again.
        oracle.assert_agrees(one_at_a_time(engine, rows[2:3]), logits[2:3], f"seed {seed}")
        deadline = time.monotonic() + 30
        while words[MAILBOX.exited] != resident.epoch:
            assert time.monotonic() < deadline, f"the resident kernel did not leave when idle (seed {seed})"
            time.sleep(0.01)
        launches = resident.launches
        oracle.assert_agrees(one_at_a_time(engine, rows[3:]), logits[3:], f"after idling, seed {seed}")
        assert resident.launches > launches  # it had left: the next prompt launched it again
    finally:
        engine.close()
    assert resident is not None and not resident.running
    assert resident_gpu._resident_stop is None


@pytest.mark.parametrize("split", [0, 4])
def test_a_torn_request_is_refused_never_answered(resident_gpu, tmp_path, rng, seed, split):
    """Ids whose tag is not the request's (stores the GPU saw before the request's own) make the kernel
    refuse the prompt, never predict from a mix of two requests; with several groups, the merged answer."""
    model, path = member(tmp_path, rng, "attention" if split else "mean", width=40 if split else None)
    with Engine(model, gpu=resident_gpu, executor="fused", tuning=FusedConfig(resident_split=split)) as engine:
        engine.predict_one([1])
        resident = engine.executor.resident
        resident.stop()
        words = resident.words
        seq = resident.seq + 1
        words[MAILBOX.ids] = (((seq - 1) & 0xFFFF) << 16) | 2  # the id of an older request
        words[MAILBOX.length] = ((seq & 0xFFFF) << 16) | 1
        words[MAILBOX.seq] = seq
        resident.seq = seq
        resident.launch(seq - 1)  # a fresh dispatch finds the torn request waiting
        deadline = time.monotonic() + 30
        while words[MAILBOX.ack] != seq:
            assert time.monotonic() < deadline, f"the resident kernel did not answer (seed {seed})"
        assert words[MAILBOX.prediction] == REFUSED_WORD
        rows = random_rows(rng, 2, model.spec.vocab_size, max_len=6)  # and it goes on answering
        oracle.assert_agrees(one_at_a_time(engine, rows), oracle.logits(params_at(path), rows), f"seed {seed}")


def test_every_slot_holds_the_last_request(resident_gpu, tmp_path, rng, seed):
    """A slot the last request did not use still gets its tag: a word left from 65,536 requests ago would
    carry the tag of the one being written, and the kernel would take it for the request's own."""
    window = 5
    model, _ = member(tmp_path, rng, "concat", window=window)
    with Engine(model, gpu=resident_gpu, executor="fused") as engine:
        engine.predict_one(random_rows(rng, 1, model.spec.vocab_size, max_len=window + 1)[0][-window:])
        engine.predict_one([3])
        resident = engine.executor.resident
        tags = resident.words[MAILBOX.ids : MAILBOX.ids + window] >> 16
        assert (tags == resident.seq & 0xFFFF).all(), f"slots {tags} after request {resident.seq} (seed {seed})"
