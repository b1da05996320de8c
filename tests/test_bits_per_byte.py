"""Bits per byte are over the documents' UTF-8 bytes (FORMATS §9, §14.6), not their tokens' bytes: with a
SentencePiece-style tokenizer in Llama-2's layout (a `▁` put before every document, byte-fallback pieces) and a
byte-level one, both trained with Hugging Face `tokenizers`, on engines whose every target has log p = -1 nat,
against the hand computation from `tokenizers`' own ids."""

import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pxgl.evaluate import score
from pxgl.text_tokenizer.hf import tokenizer_from_hf
from pxgl.transformer.scoring import score_documents
from tokenizers import Tokenizer as HFTokenizer

from tests.text_tokenizers import random_text, write_folder

KINDS = ["tinyllama", "gpt2"]
CONTEXT = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = {}
    for name in KINDS:
        made[name] = tmp_path_factory.mktemp(name)
        write_folder(name, made[name])
    return made


class EveryPosition:
    """A version-1 engine's scoring (§9) where every position's target has log p = -1."""

    spec = SimpleNamespace(context_window=CONTEXT, check_vocabulary=lambda *_: None)

    def score(self, contexts: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((targets.size, 3), np.uint8), np.full(targets.size, -1.0, np.float32)


class EveryWindow:
    """A version-2 engine's strided scoring (§14.6) where every target has log p = -1."""

    def __init__(self, bos: int | None) -> None:
        self.architecture = SimpleNamespace(context_length=CONTEXT)
        self.spec = SimpleNamespace(bos=bos)

    def score_window(self, tokens: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        count = len(tokens) - first
        return np.full(count, -1, np.int64), np.full(count, -1.0, np.float32)


def documents_of(seed: int) -> list[str]:
    """Documents of many scripts, emoji (byte-fallback pieces) and whitespace, each begun by an ASCII word."""
    rng = random.Random(seed)
    return ["word" + random_text(rng, [], long=True) for _ in range(12)]


@pytest.mark.parametrize("kind", KINDS)
def test_bits_per_byte_count_each_documents_utf8_bytes(kind: str, folders, seed: int) -> None:
    reference = HFTokenizer.from_file(str(folders[kind] / "tokenizer.json"))
    tokenizer = tokenizer_from_hf(folders[kind])
    documents = documents_of(seed)
    ids = [reference.encode(d, add_special_tokens=False).ids for d in documents]
    utf8 = [len(d.encode()) for d in documents]
    what = f"seed {seed}, {kind}"
    assert max(map(len, ids)) > CONTEXT, f"{what}: a document scored in strided windows"

    reported: list[int] = []
    got = score(EveryPosition(), tokenizer, documents, reported.append)  # type: ignore[arg-type]
    positions = sum(map(len, ids))  # §9: every position, the first from the empty context
    assert (got.positions, got.bytes, sum(reported)) == (positions, sum(utf8), sum(utf8)), what
    assert got.bits_per_byte == pytest.approx(positions / math.log(2) / sum(utf8), rel=1e-9), what

    reported = []
    got = score_documents(EveryWindow(bos=1), tokenizer, documents, reported.append)  # type: ignore[arg-type]
    assert (got.positions, got.bytes, sum(reported)) == (positions, sum(utf8), sum(utf8)), what
    assert got.bits_per_byte == pytest.approx(positions / math.log(2) / sum(utf8), rel=1e-9), what

    # Without bos the first token is no target: its text ("word…", no `▁`) is not counted.
    unpredicted = [len(reference.decode(row[:1]).encode()) for row in ids]
    expected = sum(utf8) - sum(unpredicted)
    reported = []
    got = score_documents(EveryWindow(bos=None), tokenizer, documents, reported.append)  # type: ignore[arg-type]
    assert (got.positions, got.bytes, sum(reported)) == (positions - len(ids), expected, expected), what
    assert got.bits_per_byte == pytest.approx((positions - len(ids)) / math.log(2) / expected, rel=1e-9), what
