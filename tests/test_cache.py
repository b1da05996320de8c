"""The on-disk cache of the fused executor's prepared weights (engine/cache.py): a second engine of the same
weights reads them instead of computing them, and a damaged, strange or unwritable cache is never used and
never an error — every engine still answers as the oracle does."""

import json
import os
import secrets
import subprocess
import time

import numpy as np
import pytest
from pxgl import cache as pxgl_cache
from pxgl.engine import Engine
from pxgl.executors import fused_weights
from pxgl.pxi import encode_tokens

from tests.cli_process import pxgl
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


def entry_bytes(data: bytes, about: dict) -> int:
    """What an entry costs by the cache's layout: its bytes, their CRC-32, the about note's JSON."""
    return len(data) + 4 + len(json.dumps(about, ensure_ascii=False, sort_keys=True).encode())


def read_entry(key: str, size: int) -> bytes | None:
    got = bytearray(size)
    whole = pxgl_cache.load(key, size, lambda at, chunk: got.__setitem__(slice(at, at + len(chunk)), chunk))
    return bytes(got) if whole else None


def test_the_cache_holds_at_most_its_bound_evicting_the_least_recently_used(cache, monkeypatch, rng, seed):
    """Random stores and reads against a reference LRU: after every store the entries kept are exactly the most
    recently written or read ones that fit the bound (an entry over the bound is not kept at all)."""
    bound = int(rng.integers(20_000, 80_000))
    monkeypatch.setenv("PXGL_CACHE_MAX_MB", repr(bound / (1 << 20)))
    assert pxgl_cache.max_bytes() == bound
    stored: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    recent: list[str] = []  # the reference: least recently used first
    clock = 1_000_000_000  # the past: a file pxgl just touched is newer than any time the test set
    for step in range(60):
        began = time.time()
        if recent and rng.random() < 0.4:
            key = str(rng.choice(recent))
            assert read_entry(key, len(stored[key])) == stored[key], (seed, step)
            recent = [k for k in recent if k != key] + [key]
        else:
            key = secrets.token_hex(32)  # keys name contents: a new entry has a new key
            longest = bound // 2 if rng.random() < 0.9 else 2 * bound
            stored[key] = rng.integers(0, 256, int(rng.integers(1, longest)), np.uint8).tobytes()
            about = {"model": f"m{step}", "architecture": "x" * int(rng.integers(0, 50)), "renderer": "r"}
            pxgl_cache.store(key, stored[key], about)
            if entry_bytes(stored[key], about) <= bound:
                recent.append(key)
                sizes[key] = entry_bytes(stored[key], about)
            while sum(sizes[k] for k in recent) > bound:
                recent.pop(0)
        if key in recent:
            path = cache / f"{key}.bin"
            assert path.stat().st_mtime >= began - 1, (seed, step, "a used entry was not marked as used now")
            clock += 10
            os.utime(path, (clock, clock))
        found = pxgl_cache.entries(cache)
        assert [e.key for e in found] == recent, (seed, step, bound)
        assert sum(e.bytes for e in found) == sum(sizes[k] for k in recent) <= bound, (seed, step)
        assert {p.name for p in cache.iterdir()} == {f"{k}{suffix}" for k in recent for suffix in (".bin", ".json")}


def test_pxgl_cache_lists_and_clears_what_engines_kept_and_nothing_else(tmp_path, gpu, rng, seed, cache, monkeypatch):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    rows = random_rows(rng, 20, 300, max_len=10)
    answers(tmp_path, gpu, model, rows)
    (entry,) = cache.glob("*.bin")
    foreign = {"notes.txt": "mine", "ABC.bin": "mine too", f"{entry.stem}.txt": "and this"}
    # named as an entry's note, without its entry: removed only when it holds what pxgl writes there
    foreign |= {f"{'f' * 64}.json": '{"mine": "yes"}', f"{'e' * 64}.json": "not JSON at all"}
    for name, text in foreign.items():
        (cache / name).write_text(text)
    gone = subprocess.Popen(["true"])  # a process that has ended: like a pxgl killed mid-write
    gone.wait()
    (cache / f".{'0' * 64}.bin.{gone.pid}.pxgl-tmp").write_bytes(b"torn")
    listed = pxgl("cache", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    size = entry.stat().st_size + (cache / f"{entry.stem}.json").stat().st_size
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [{k: r[k] for k in ("key", "bytes", "model", "architecture", "renderer")} for r in records] == [
        {
            "key": entry.stem,
            "bytes": size,
            "model": "random",
            "architecture": model.spec.architecture.describe(),
            "renderer": gpu.renderer,
        }
    ], seed
    words = pxgl("cache", "list", cwd=tmp_path)
    assert words.returncode == 0 and "random" in words.stdout and f"{cache}: 1 entry" in words.stdout, words.stdout
    cleared = pxgl("cache", "clear", "--json", cwd=tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout) == {"folder": str(cache), "removed": 1, "bytes": size}
    assert {p.name: p.read_text() for p in cache.iterdir()} == foreign, "clear removed what pxgl did not write"
    assert pxgl("cache", "list", "--json", cwd=tmp_path).stdout == ""
    monkeypatch.setenv("PXGL_CACHE_MAX_MB", "0")
    check(tmp_path, model, rows, answers(tmp_path, gpu, model, rows), seed)
    assert not {p.name for p in cache.glob("*.json")} - set(foreign), "an entry was kept past a bound of 0"
    for bad in ("-3", "nan"):
        refused = pxgl("cache", "list", cwd=tmp_path, env={"PXGL_CACHE_MAX_MB": bad})
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and "PXGL_CACHE_MAX_MB" in lines[0], refused.stderr
    off = pxgl("cache", "clear", cwd=tmp_path, env={"PXGL_CACHE_DIR": "off"})
    assert off.returncode == 0 and "off" in off.stderr and off.stdout == "", off.stderr
    assert {p.name for p in cache.iterdir()} == set(foreign)
