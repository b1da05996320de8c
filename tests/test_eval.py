"""`pxgl eval` streams its text (docs/FORMATS.md §9, §0.3): a document is tokenized a piece at a time, its
positions scored a chunk at a time, each chunk sized so progress moves several times a second, and memory
follows the text, not its positions."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxgl import evaluate
from pxgl.engine import Engine
from pxgl.evaluate import TextPositions, pieces, score
from pxgl.pacing import CHUNK_SECONDS, SMALLEST, ChunkSizer
from pxgl.tokenizer import Tokenizer

from tests.cli_process import PEAK_MEMORY
from tests.models import random_model
from tests.reference.models import write_random_member

ONE_UNIT = {"embed_dim": 1, "context": {"mode": "mean", "window": 1}, "hidden": [1], "residual": False}
ALPHABET = [*"abcxyz019.,;!-'\"é€😀", " ", "  ", "\t", "\n", "\n\n", "\u2028", "\xa0", "\u3000", "ab"]


def random_document(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(ALPHABET, length))


def reference_rows(tokenizer: Tokenizer, documents: list[str], window: int) -> tuple[np.ndarray, np.ndarray]:
    """FORMATS §9's positions, one by one: each token of each document after its last ≤ window tokens."""
    rows, targets = [], []
    for document in documents:
        ids = tokenizer.encode(document)
        for i, target in enumerate(ids):
            row = np.zeros((window, 3), np.uint8)
            for column, token in enumerate(ids[max(0, i - window) : i]):
                row[column] = (token % 256, token // 256, 255)
            rows.append(row)
            targets.append(target)
    return np.array(rows, np.uint8).reshape(-1, window, 3), np.array(targets, np.int64)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    rng = np.random.default_rng(7)
    return Tokenizer.train([random_document(rng, 3000) for _ in range(4)], 300)


def test_a_document_in_pieces_tokenizes_as_a_whole(tokenizer, monkeypatch, rng, seed):
    monkeypatch.setattr(evaluate, "PIECE_CHARS", int(rng.integers(1, 12)))
    for _ in range(20):
        document = random_document(rng, int(rng.integers(0, 400)))
        cut = list(pieces(document))
        assert "".join(cut) == document, f"seed {seed}"
        assert [t for piece in cut for t in tokenizer.encode(piece)] == tokenizer.encode(document), f"seed {seed}"
    assert len(list(pieces("word " * 100))) > 1


def test_the_stream_gives_every_position_its_context(tokenizer, monkeypatch, rng, seed):
    """Small pieces and batches: contexts cross pieces and batches, and chunks of any size cross both."""
    monkeypatch.setattr(evaluate, "PIECE_CHARS", int(rng.integers(1, 40)))
    monkeypatch.setattr(evaluate, "BATCH_TOKENS", int(rng.integers(1, 64)))
    monkeypatch.setattr(evaluate, "GATHER_ENTRIES", int(rng.integers(1, 50)))
    window = int(rng.integers(1, 9))
    documents = [random_document(rng, int(rng.integers(1, 300))) for _ in range(12)]
    want_rows, want_targets = reference_rows(tokenizer, documents, window)
    text = TextPositions(tokenizer, iter(documents), window)
    rows, targets = [], []
    while True:
        chunk_rows, chunk_targets, _ = text.take(int(rng.integers(1, 100)))
        if chunk_targets.size == 0:
            break
        rows.append(chunk_rows)
        targets.append(chunk_targets)
    assert np.array_equal(np.concatenate(targets), want_targets), f"seed {seed}"
    assert np.array_equal(np.concatenate(rows), want_rows), f"seed {seed}"


@pytest.mark.parametrize("largest", [1, 1365, 1 << 16])
def test_chunks_follow_the_pace_so_progress_moves_several_times_a_second(largest, rng, seed):
    """A renderer of any pace, steady or jittering: once the sizes settle (at most doubling a chunk), each
    chunk takes at most twice CHUNK_SECONDS (or is the smallest), and at least a quarter of that unless it
    is the largest."""
    for pace in np.exp(rng.uniform(np.log(1.0), np.log(1e8), 30)):
        sizer, sizes = ChunkSizer(largest), []
        for _ in range(40):
            sizes.append(sizer.size)
            sizer.after(sizer.size, sizer.size / (pace * rng.uniform(0.9, 1.1)))
        assert all(size & (size - 1) == 0 and min(SMALLEST, largest) <= size <= largest for size in sizes), seed
        assert all(b <= 2 * a for a, b in itertools.pairwise(sizes)), f"seed {seed}"
        for size in sizes[25:]:
            assert size == sizer.smallest or size / (pace * 0.9) <= 2 * CHUNK_SECONDS, f"pace {pace}, seed {seed}"
            assert 2 * size > largest or size / (pace * 1.1) >= CHUNK_SECONDS / 4, f"pace {pace}, seed {seed}"


class PacedEngine:
    """An engine whose scoring takes a fixed time a position, on a clock of its own."""

    def __init__(self, engine: Engine, pace: float) -> None:
        self.engine, self.spec, self.pace, self.now = engine, engine.spec, pace, 0.0
        self.chunks: list[int] = []

    def score(self, contexts: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.now += len(targets) / self.pace
        self.chunks.append(len(targets))
        return self.engine.score(contexts, targets)


def test_eval_reports_progress_a_chunk_at_a_time(tmp_path, gpu, monkeypatch, tokenizer, rng, seed):
    """On a renderer of 2,000 positions a second, the text's thousands of positions are scored in chunks of at
    most 0.3 s each, every one reported (in UTF-8 bytes); the scores are the positions' one by one."""
    model = random_model(tmp_path, rng, 300, 8, 8, int(rng.integers(1, 6)))
    tokenizer.save(tmp_path / "random.tokenizer.json")
    documents = [random_document(rng, int(rng.integers(100, 1500))) for _ in range(8)]
    with Engine(model, gpu=gpu) as engine:
        paced = PacedEngine(engine, 2000.0)
        monkeypatch.setattr(evaluate, "monotonic", lambda: paced.now)
        reported: list[int] = []
        got = score(paced, tokenizer, documents, reported.append)  # type: ignore[arg-type]
        rows, targets = reference_rows(tokenizer, documents, model.spec.context_window)
        _, logprobs = engine.score(rows, targets)
    text_bytes = sum(len(d.encode()) for d in documents)
    assert got.positions == targets.size and got.bytes == text_bytes == sum(reported), f"seed {seed}"
    assert len(reported) == len(paced.chunks) >= targets.size / (2000 * CHUNK_SECONDS), f"seed {seed}"
    assert max(paced.chunks) <= 2000 * CHUNK_SECONDS, f"seed {seed}"
    expected_bits = -float(logprobs.astype(np.float64).sum()) / np.log(2) / text_bytes
    assert abs(got.bits_per_byte - expected_bits) <= 1e-5 * expected_bits, f"seed {seed}"


def peak_of_eval(folder: Path, text: Path) -> int:
    args = ["eval", "-m", str(folder / "random.pxi"), "--text", str(text), "--json"]
    # Each thread of the GL driver would take a malloc arena of its own, touched as the threads happened to
    # run: peaks 15 MB apart from one run to the next.
    environment = os.environ | {"MALLOC_ARENA_MAX": "2"}
    run = subprocess.run([sys.executable, "-c", PEAK_MEMORY, *args], capture_output=True, text=True, env=environment)
    assert run.returncode == 0, run.stderr
    return int(run.stderr.split()[-1])


def test_eval_memory_follows_the_text_not_its_positions(tmp_path, rng):
    """FORMATS §0.3: 500 MB plus 4 bytes a byte of text. 4 MiB of one-token documents (233,016 of them)
    cost at most 4 bytes a byte more than 1 MiB of them (a token array per document and every position's
    int64s took 6.2 bytes a byte more: 19.5 MB; now about 2)."""
    document = "abcdefghijklmnop"
    vocab = 256 + len(document) - 1
    write_random_member(tmp_path, rng, ONE_UNIT | {"vocab_size": vocab}, "random")
    Tokenizer.train(document, vocab).save(tmp_path / "random.tokenizer.json")
    sizes = {"small.txt": 1 << 20, "big.txt": 4 << 20}
    for name, size in sizes.items():
        (tmp_path / name).write_text(f"{document}\n\n" * (size // (len(document) + 2)))
    small, big = (peak_of_eval(tmp_path, tmp_path / name) for name in sizes)
    assert big <= 500_000_000 + 4 * sizes["big.txt"], f"peak {big >> 20} MiB"
    assert big - small <= 4 * (sizes["big.txt"] - sizes["small.txt"]), f"peak {big >> 20} MiB, {small >> 20} MiB"


class PacedClock:
    now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_predictions_with_progress_come_in_time_sized_tiles(tmp_path, gpu, monkeypatch, rng, seed):
    """`infer --batch`'s progress: on a renderer of 2,000 prompts a second, 5,000 prompts are predicted in
    tiles of at most 0.6 s each (one tile of all of them without a progress callback), the same pixels."""
    import pxgl.engine

    model = random_model(tmp_path, rng, 300, 8, 8, 4)
    ids = rng.integers(0, 300, (5000, 4))
    pixels = np.stack([ids % 256, ids // 256, np.full_like(ids, 255)], axis=-1).astype(np.uint8)
    clock = PacedClock()
    monkeypatch.setattr(pxgl.engine, "time", clock, raising=False)
    with Engine(model, gpu=gpu) as engine:
        whole = engine.predict(pixels)
        run = engine.executor.run

        def paced_run(rows: np.ndarray) -> np.ndarray:
            clock.now += len(rows) / 2000
            return run(rows)

        monkeypatch.setattr(engine.executor, "run", paced_run)
        tiles: list[int] = []
        paced = engine.predict(pixels, on_tile=tiles.append)
    assert np.array_equal(paced, whole), f"seed {seed}"
    assert sum(tiles) == 5000 and max(tiles) <= 2000 * 2 * CHUNK_SECONDS, f"seed {seed}"
