"""Streamed text (FORMATS §11): on every path that streams — `pxgl generate`'s follow_text, /v1/completions' and
/v1/chat/completions' answers (stream or not), `pxgl chat`'s session — the pieces joined are `decode` of the
generated ids exactly, for a SentencePiece-style tokenizer (a first `▁`'s space dropped, byte-fallback runs
decoded as a whole) as for a byte-level one; both trained with Hugging Face `tokenizers`."""

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pxgl.chat.prompt import ChatFormat
from pxgl.chat.session import ChatSession
from pxgl.chat.template import ChatTemplate
from pxgl.generation import GeneratedStep, TextStream, follow_text
from pxgl.serve.completions import Answer
from pxgl.text_tokenizer import TextTokenizer
from pxgl.text_tokenizer.hf import tokenizer_from_hf
from pxgl.transformer.gpu import Choice as Sampler

from tests.text_tokenizers import SPECIALS, random_text, write_folder

KINDS = ["tinyllama", "gpt2"]


class PieceTokens:
    """A stand-in tokenizer whose tokens are the given bytes, decoded as §6 decodes: their bytes joined."""

    def __init__(self, pieces: dict[int, bytes]) -> None:
        self.pieces = pieces

    def token_bytes(self, token: int) -> bytes:
        return self.pieces[token]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return b"".join(self.pieces[int(t)] for t in ids).decode("utf-8", "replace")

    def joins_next(self, token: int) -> bool:
        return False


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TextTokenizer]:
    made = {}
    for name in KINDS:
        folder = tmp_path_factory.mktemp(name)
        write_folder(name, folder)
        tokenizer = tokenizer_from_hf(folder)
        made[name] = tokenizer.padded_to(tokenizer.tokens + 16)  # padding ids, decoded to nothing, among them
    return made


def answers(tokenizer: TextTokenizer, rng: random.Random, count: int) -> list[list[int]]:
    """Generated-like id sequences: random ids of the whole vocabulary (byte pieces, specials, padding, partial
    characters), and encoded text of many scripts, cut anywhere."""
    sequences = []
    for _ in range(count):
        if rng.random() < 0.5:
            sequences.append([rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(1, 24))])
        else:
            ids = tokenizer.encode(random_text(rng, SPECIALS["tinyllama"] + SPECIALS["gpt2"])) or [0]
            sequences.append(ids[rng.randrange(len(ids)) :])
    return sequences


def steps_of(ids: Sequence[int]) -> list[GeneratedStep]:
    empty = np.zeros((1, 0))
    chosen = [(np.array([t]), np.zeros(1, np.uint8), np.zeros(1)) for t in ids]
    return [GeneratedStep(s, *arrays, empty, empty) for s, arrays in enumerate(chosen)]


def test_a_sentencepiece_answer_streams_without_the_space_decoding_drops(tokenizers) -> None:
    """By hand: `▁fox▁fox` decodes to "fox fox" (the first `▁` dropped), and `€` in byte pieces
    (<0xE2><0x82><0xAC>) shows whole, once the run has ended."""
    tokenizer = tokenizers["tinyllama"]
    fox = tokenizer.ids["▁fox"]
    stream = TextStream(tokenizer)
    assert [stream.add(fox), stream.add(fox), stream.flush()] == [b"fox", b" fox", b""]
    euro = [tokenizer.ids[f"<0x{b:02X}>"] for b in "€".encode()]
    stream = TextStream(tokenizer)
    assert [stream.add(t) for t in euro] == [b""] * 3, "a byte-fallback run waits for its end"
    assert stream.add(fox) == "€ fox".encode() and stream.flush() == b""
    invalid = [tokenizer.ids["<0x41>"], euro[0], tokenizer.ids["<0x41>"]]  # "A", then a run that is not UTF-8
    stream = TextStream(tokenizer)
    assert b"".join(stream.add(t) for t in invalid) + stream.flush() == "\ufffd".encode() * 3


def test_bytes_that_no_later_byte_can_complete_show_at_once() -> None:
    """A lead byte after a lead byte: the first is U+FFFD for good, shown while the second waits (a greedy
    random model repeats such a token; holding the whole tail back would show nothing until the end)."""
    stream = TextStream(PieceTokens({0: b"\xe2", 1: b"a\xe2", 2: b"\x82\xac"}))
    replacement = "\ufffd".encode()
    assert [stream.add(0), stream.add(0), stream.add(1), stream.add(2)] == [
        b"",
        replacement,
        replacement + b"a",
        "€".encode(),
    ]
    assert stream.flush() == b""


def test_pieces_of_characters_stream_as_their_bytes_decode(seed: int) -> None:
    """Tokens of whole, partial and invalid UTF-8 in any order (§6's decode: their bytes joined)."""
    rng = random.Random(seed)
    pieces = [b"\xe2", b"\x82", b"\xac", b"a", b"\xf0\x9f", b"\x98\x80", b"\xc3", b"\xa9", b" ", b"\xe2\x82", b""]
    tokenizer = PieceTokens(dict(enumerate(pieces)))
    for _ in range(300):
        ids = [rng.randrange(len(pieces)) for _ in range(rng.randint(1, 16))]
        stream = TextStream(tokenizer)
        streamed = b"".join(stream.add(t) for t in ids) + stream.flush()
        assert streamed.decode() == tokenizer.decode(ids), f"seed {seed}: {[pieces[t] for t in ids]}"


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_pieces_join_to_the_decoded_answer_on_every_path(kind: str, tokenizers, seed: int) -> None:
    rng = random.Random(seed)
    tokenizer = tokenizers[kind]
    for ids in answers(tokenizer, rng, 150):
        expected = tokenizer.decode(ids)
        what = f"seed {seed}, {kind}: ids {ids}"
        stream = TextStream(tokenizer)
        assert (b"".join(stream.add(t) for t in ids) + stream.flush()).decode() == expected, what

        shown: list[bytes] = []  # pxgl generate
        (row,) = follow_text(
            (step for step in steps_of(ids)), tokenizer, [], 1, lambda _, data, into=shown: into.append(data)
        )
        assert b"".join(shown).decode() == row.data.decode() == expected, what

        answer = Answer(tokenizer, [])  # /v1/completions and /v1/chat/completions, streamed or not
        served = "".join(answer.add(step, 0) for step in steps_of(ids)) + answer.finish()
        assert served == expected, what


class Scripted:
    """A slot executor that answers with the given ids (chosen by prefill, then one a decode)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def truncate(self, slot: int, n: int) -> None:
        pass

    def _chosen(self) -> SimpleNamespace:
        return SimpleNamespace(ids=np.array([[self.ids.pop(0)]]), logprobs=np.zeros((1, 1)))

    def prefill(self, slot: int, tokens: Sequence[int], choice: object = None, step: int = 0) -> SimpleNamespace:
        return SimpleNamespace(chosen=self._chosen())

    def decode(self, *args: object) -> SimpleNamespace:
        return self._chosen()


@pytest.mark.parametrize("kind", KINDS)
def test_a_chat_answer_streams_its_decoded_text(kind: str, tokenizers, seed: int, tmp_path: Path) -> None:
    """pxgl chat: the session's pieces (what the terminal shows) and the answer kept in the conversation."""
    rng = random.Random(seed)
    tokenizer = tokenizers[kind]
    chat = ChatFormat(ChatTemplate("{{ messages }}", "a test template"), tokenizer)
    for ids in answers(tokenizer, rng, 10):
        ids = [t for t in ids if t not in tokenizer.eos_ids] or [tokenizer.ids["a"]]
        session = ChatSession(Scripted(ids), chat, 4096, None, Sampler(), len(ids))
        shown: list[bytes] = []
        session.answer([0], shown.append, lambda: False)
        expected = tokenizer.decode(ids)
        assert b"".join(shown).decode() == session.messages[-1]["content"] == expected, f"seed {seed}: {ids}"
