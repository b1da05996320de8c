"""The BPE tokenizer against docs/FORMATS.md §6: exact round trips, the lowest-index-merge rule (checked
against a literal re-reading of the spec), training that compresses, and a loader that names each problem."""

import json
import re
import sys
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pxgl.errors import PxglError
from pxgl.tokenizer import Tokenizer

from tests.reference.heldout import bpe_encode

SAMPLE = (
    "Return the pixel at (x, y) of the weight image. Weights are bytes; bytes are pixels.\n"
    "Ünïcödé text — naïve café, 東京の画素, emoji 🎨🖼️ — is bytes too.\n\n"
    "    indented_code = read_rgb(path)  # with comments!\n"
) * 30
SPLIT = re.compile(r"\s?\w+|\s?[^\w\s]+|\s+")


@cache
def trained() -> Tokenizer:
    return Tokenizer.train(SAMPLE, 380)


def spec_encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """FORMATS §6 read literally: per chunk, apply the lowest-index merge present (leftmost), one at a time."""
    rank = {pair: i for i, pair in reversed(list(enumerate(tokenizer.merges)))}
    ids: list[int] = []
    for chunk in SPLIT.findall(text):
        tokens = list(chunk.encode("utf-8"))
        while True:
            present = [(rank[p], i) for i, p in enumerate(pairwise(tokens)) if p in rank]
            if not present:
                break
            r, i = min(present)
            tokens[i : i + 2] = [256 + r]
        ids.extend(tokens)
    return ids


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips_and_matches_the_spec(text):
    tokenizer = trained()
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert ids == spec_encode(tokenizer, text)


def sample_slices() -> st.SearchStrategy[str]:
    return st.tuples(st.integers(0, len(SAMPLE)), st.integers(0, 300)).map(lambda t: SAMPLE[t[0] : t[0] + t[1]])


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(alphabet=st.sampled_from("ab \n.é🎨"), max_size=200), sample_slices()))
def test_encoding_follows_the_spec_on_merge_dense_text(text):
    tokenizer = trained()
    assert tokenizer.encode(text) == spec_encode(tokenizer, text)
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_the_spec_example_merges():
    tokenizer = Tokenizer(((116, 104), (256, 101)))
    assert tokenizer.vocab_size == 258
    assert tokenizer.encode("the") == [257]
    assert tokenizer.encode(" the then") == [32, 257, 32, 257, 110]
    assert tokenizer.token_bytes(257) == b"the"


@st.composite
def merge_tables(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """Merges over the bytes of "ab" and the tokens made so far, repeated pairs and chains included."""
    merges: list[tuple[int, int]] = []
    for i in range(draw(st.integers(0, 24))):
        ids = st.sampled_from([97, 98, *range(256, 256 + i)])
        merges.append((draw(ids), draw(ids)))
    return tuple(merges)


@settings(max_examples=300, deadline=None)
@given(merge_tables(), st.text(alphabet="ab", max_size=400))
def test_encoding_follows_the_spec_on_adversarial_merge_tables(merges, text):
    """One long word of two letters: overlapping occurrences (aaa), a pair merged twice, chains of merges.
    Both readings of §6 agree: one merge at a time (spec_encode), and every occurrence of the lowest-index
    pair left to right at once (the held-out oracle's)."""
    tokenizer = Tokenizer(merges)
    ids = tokenizer.encode(text)
    assert ids == spec_encode(tokenizer, text) == bpe_encode(text, [list(m) for m in merges])


@pytest.mark.parametrize(
    ("merges", "text", "ids"),
    [
        (((97, 97),), "aaa", [256, 97]),  # leftmost first: (aa)a, not a(aa)
        (((97, 97), (256, 256)), "aaaaa", [257, 97]),
        (((97, 97), (97, 97), (256, 97)), "aaa", [258]),  # merge 1 repeats merge 0 and never fires; 2 does
        (((97, 98), (98, 97), (256, 97)), "aba", [258]),
        (((98, 97), (97, 98), (97, 256)), "aba", [258]),  # the lower index wins over the leftmost
    ],
)
def test_overlapping_and_repeated_merges(merges, text, ids):
    assert Tokenizer(merges).encode(text) == ids == spec_encode(Tokenizer(merges), text)


class CountingRanks(dict):
    """A rank table that counts its lookups."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)


def test_one_long_word_costs_a_bounded_number_of_pair_lookups(rng):
    """A word of 4,096 random letters under 544 merges: at most 6 lookups a byte (each byte's pair once,
    each merge's two new pairs, each heap entry checked once when popped). Applying each merge across the
    whole word in turn looked every pair up once per merge applied: hundreds of times a byte (3.3 s for
    64 KiB, over 60 s for 1 MB, under larger vocabularies)."""
    letters = list("abcdefghijklmnopqrstuvwxyz")
    training = " ".join("".join(rng.choice(letters, int(rng.integers(2, 12)))) for _ in range(3000))
    tokenizer = Tokenizer.train(training, 800)
    word = "".join(rng.choice(letters, 4096))
    counting = CountingRanks(tokenizer._ranks)
    object.__setattr__(tokenizer, "_ranks", counting)
    ids = tokenizer.encode(word)
    assert tokenizer.decode(ids) == word and len(ids) < 0.8 * len(word)  # merged (the other tests check how)
    assert counting.lookups <= 6 * len(word), counting.lookups


def test_training_learns_vocab_size_tokens_that_compress_the_text():
    tokenizer = trained()
    assert tokenizer.vocab_size == 380
    assert len(tokenizer.encode(SAMPLE)) < len(SAMPLE.encode("utf-8")) / 3
    for i, (a, b) in enumerate(tokenizer.merges):
        assert a < 256 + i and b < 256 + i
        assert tokenizer.token_bytes(256 + i) == tokenizer.token_bytes(a) + tokenizer.token_bytes(b)
    assert Tokenizer.train(SAMPLE, 380) == tokenizer  # deterministic


def test_training_on_documents_never_merges_across_them():
    tokenizer = Tokenizer.train(["ab", "ab", "ab"], 257)
    assert tokenizer.merges == ((97, 98),)
    assert Tokenizer.train(["a", "b"], 300).vocab_size == 256  # no pair at all: no merge to learn


def test_training_rejects_a_vocab_below_the_bytes():
    with pytest.raises(PxglError, match="outside 256"):
        Tokenizer.train(SAMPLE, 255)


def test_a_lone_token_of_broken_utf8_decodes_to_the_replacement_character():
    tokenizer = trained()
    assert tokenizer.decode([0xE6]) == "\ufffd"
    assert tokenizer.decode([0xE6, ord("x")]) == "\ufffdx"
    with pytest.raises(PxglError, match=r"outside 0\.\.379"):
        tokenizer.token_bytes(380)


def test_lone_surrogates_are_refused_not_mangled():
    with pytest.raises(PxglError, match="not valid Unicode"):
        trained().encode("ok \ud800")


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "t.tokenizer.json"
    trained().save(path)
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"], doc["vocab_size"]) == ("pxgl-bpe", 0, 380)
    assert len(doc["merges"]) == 124
    loaded = Tokenizer.load(path)
    assert loaded == trained()
    assert loaded.encode(SAMPLE) == trained().encode(SAMPLE)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def good_doc() -> dict:
    return {"format": "pxgl-bpe", "version": 0, "vocab_size": 258, "merges": [[116, 104], [256, 101]]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: [d], "must be a JSON object"),
        (lambda d: {k: v for k, v in d.items() if k != "merges"}, "lacks key(s) merges"),
        (lambda d: d | {"format": "gpt2"}, "format 'gpt2' version 0"),
        (lambda d: d | {"version": 2}, "version 2; pxgl reads 'pxgl-bpe' version 0 or 1"),
        (lambda d: d | {"version": 1}, "a version-1 tokenizer has exactly the keys"),
        (lambda d: d | {"vocab_size": "258"}, "vocab_size must be an integer"),
        (lambda d: d | {"vocab_size": True}, "vocab_size must be an integer"),
        (lambda d: d | {"vocab_size": 100}, "vocab_size must be an integer in 256..65536"),
        (lambda d: d | {"merges": {"0": [1, 2]}}, "'merges' must be a list"),
        (lambda d: d | {"vocab_size": 259}, "2 merges, but vocab_size 259 needs 3"),
        (lambda d: d | {"merges": [[116, 104], [256]]}, "merge 1 must be a pair of integer ids"),
        (lambda d: d | {"merges": [[116, 104], [256, 1.5]]}, "merge 1 must be a pair of integer ids"),
        (lambda d: d | {"merges": [[116, 104], [257, 101]]}, "merge 1 [257, 101] names an id not below 257"),
        (lambda d: d | {"merges": [[-1, 104], [256, 101]]}, "merge 0 [-1, 104] names an id not below 256"),
    ],
)
def test_load_names_each_problem(tmp_path, change, message):
    path = tmp_path / "bad.tokenizer.json"
    path.write_text(json.dumps(change(good_doc())))
    with pytest.raises(PxglError) as caught:
        Tokenizer.load(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_load_rejects_any_merge_naming_a_later_token(tmp_path_factory, data):
    n = data.draw(st.integers(1, 20))
    merges = [[data.draw(st.integers(0, 255 + i)), data.draw(st.integers(0, 255 + i))] for i in range(n)]
    i = data.draw(st.integers(0, n - 1))
    merges[i][data.draw(st.integers(0, 1))] = data.draw(st.integers(256 + i, 70000))
    path = tmp_path_factory.mktemp("later") / "t.json"
    path.write_text(json.dumps({"format": "pxgl-bpe", "version": 0, "vocab_size": 256 + n, "merges": merges}))
    with pytest.raises(PxglError, match=f"merge {i} .* names an id not below {256 + i}"):
        Tokenizer.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "cannot read the tokenizer file"),
        (b"", "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_load_rejects_unreadable_files(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(PxglError, match=message):
        Tokenizer.load(path)


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(PxglError, match="no such tokenizer file"):
        Tokenizer.load(Path(tmp_path / "missing.json"))


@pytest.mark.parametrize("version", [0.0, False, "0", None])
def test_a_version_that_is_not_the_integer_0_is_refused(tmp_path, version):
    document = {"format": "pxgl-bpe", "version": version, "vocab_size": 256, "merges": []}
    path = tmp_path / "t.tokenizer.json"
    path.write_text(json.dumps(document))
    with pytest.raises(PxglError, match="version"):
        Tokenizer.load(path)


def test_the_split_classes_are_the_ones_formats_names_for_every_code_point():
    """FORMATS §6: the split's \\w is a character with str.isalnum() or "_", its \\s one with str.isspace(), over
    every code point (so an implementation in another language can build the classes from those rules)."""
    word, space = re.compile(r"\w"), re.compile(r"\s")
    for code in range(sys.maxunicode + 1):
        c = chr(code)
        assert bool(word.match(c)) == (c.isalnum() or c == "_"), hex(code)
        assert bool(space.match(c)) == c.isspace(), hex(code)
