"""The on-disk cache of the fused executor's prepared weights (engine/cache.py): a second engine of the same
weights reads them instead of computing them, and a damaged, strange or unwritable cache is never used and
never an error — every engine still answers as the oracle does."""

import os

import numpy as np
import pytest
from pxgl.engine import Engine
from pxgl.executors import fused_weights
from pxgl.pxi import encode_tokens

from tests.models import random_model
from tests.reference import oracle
from tests.reference.models import params_at, random_rows


def answers(tmp_path, gpu, model, rows):
    with Engine(model, gpu=gpu, executor="fused") as engine:
        return engine.predict(encode_tokens(rows, model.spec.vocab_size))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PXGL_CACHE_DIR", str(folder))
    return folder


def computed(monkeypatch) -> list[int]:
    """Count the engines that compute their prepared weights (the others read the cache)."""
    calls: list[int] = []
    real = fused_weights.prepare_weights
    monkeypatch.setattr(fused_weights, "prepare_weights", lambda *a: (calls.append(1), real(*a))[1])
    return calls


def check(tmp_path, model, rows, pixels, seed):
    lg = oracle.logits(params_at(tmp_path / model.source), [list(r) for r in rows])
    oracle.assert_agrees(pixels, lg, f"seed {seed}")


def test_a_second_engine_reads_what_the_first_prepared(tmp_path, gpu, rng, seed, cache, monkeypatch):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    rows = random_rows(rng, 20, 300, max_len=10)
    calls = computed(monkeypatch)
    first = answers(tmp_path, gpu, model, rows)
    assert len(calls) == 1 and len(list(cache.glob("*.bin"))) == 1
    second = answers(tmp_path, gpu, model, rows)
    assert len(calls) == 1, "the second engine computed its weights again"
    assert np.array_equal(first, second)
    check(tmp_path, model, rows, second, seed)
    (tmp_path / "other").mkdir()
    other = random_model(tmp_path / "other", rng, vocab=300, embed=24, hidden=20, window=6)
    answers(tmp_path, gpu, other, rows)
    assert len(calls) == 2 and len(list(cache.glob("*.bin"))) == 2, "other weights, another entry"


@pytest.mark.parametrize("damage", ["flip", "truncate", "grow", "fifo", "folder", "link"])
def test_a_damaged_or_strange_entry_is_computed_again(tmp_path, gpu, rng, seed, cache, monkeypatch, damage):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    rows = random_rows(rng, 20, 300, max_len=10)
    answers(tmp_path, gpu, model, rows)
    (entry,) = cache.glob("*.bin")
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        entry.write_bytes(bytes(data))
    elif damage == "truncate":
        entry.write_bytes(bytes(data[: int(rng.integers(0, len(data)))]))
    elif damage == "grow":
        entry.write_bytes(bytes(data) + b"\0")
    else:
        entry.unlink()
        if damage == "fifo":
            os.mkfifo(entry)
        elif damage == "folder":
            entry.mkdir()
        else:
            entry.symlink_to("/dev/zero")
    calls = computed(monkeypatch)
    pixels = answers(tmp_path, gpu, model, rows)
    assert len(calls) == 1, f"{damage}: the damaged entry was used"
    check(tmp_path, model, rows, pixels, seed)


def test_no_cache_where_none_can_be_written_or_none_is_wanted(tmp_path, gpu, rng, seed, monkeypatch):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    rows = random_rows(rng, 10, 300, max_len=10)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("PXGL_CACHE_DIR", str(blocked / "cache"))
    check(tmp_path, model, rows, answers(tmp_path, gpu, model, rows), seed)
    monkeypatch.setenv("PXGL_CACHE_DIR", "off")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    check(tmp_path, model, rows, answers(tmp_path, gpu, model, rows), seed)
    assert not (tmp_path / "home").exists(), "PXGL_CACHE_DIR=off wrote a cache"


@pytest.mark.parametrize("cached", [True, False])
def test_the_engine_never_computes_from_a_buffer_the_host_read_back(
    tmp_path, gpu, rng, seed, cache, monkeypatch, cached
):
    """Filling the cache reads the prepared buffers back, and NVIDIA's driver moves a buffer the host reads to
    host memory (every fused kernel then ran ~8x slower on the H200): the engine's buffers are others."""
    if not cached:
        monkeypatch.setenv("PXGL_CACHE_DIR", "off")
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    read_back: list[object] = []  # the buffer objects themselves: GL recycles a freed buffer's name
    real = gpu.read_storage
    monkeypatch.setattr(gpu, "read_storage", lambda buffer, *a: (read_back.append(buffer), real(buffer, *a))[1])
    with Engine(model, gpu=gpu, executor="fused") as engine:
        used = engine.executor.prepared.buffers()
        assert read_back if cached else not read_back, f"the cache was {'not ' if cached else ''}filled"
        assert not [b for b in used if any(b is r for r in read_back)], f"computes from a read-back buffer, seed {seed}"
        rows = random_rows(rng, 20, 300, max_len=10)
        check(tmp_path, model, rows, engine.predict(encode_tokens(rows, 300)), seed)
