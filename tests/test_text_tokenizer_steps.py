"""Each normalizer, pre-tokenizer and decoder step of docs/FORMATS.md §6.1 against the tokenizers component it
mirrors, on fresh varied texts (every split behavior, inverted or not, patterns matching empty included)."""

import json
import random
import time

import pytest
from pxgl.text_tokenizer.hf_steps import decoder_from_hf, normalizer_from_hf, pre_tokenizer_from_hf
from pxgl.text_tokenizer.steps import decode_strings, normalize
from pxgl.text_tokenizer.steps import pre_tokenizers as compile_steps
from tokenizers import Regex, decoders, normalizers, pre_tokenizers

from tests.text_tokenizers import random_text

BEHAVIORS = ("isolated", "removed", "merged_with_previous", "merged_with_next", "contiguous")
PATTERNS = (r"\s+", r"\p{N}", r"[aeiou]*", r"(?=\p{Lu})", r"'s|\p{L}+")


def texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["", " ", "a", *(random_text(rng, []) for _ in range(n))]


def ours(hf_component, text: str) -> list[str]:
    """Our pieces for one text, from the component's own JSON (so the reader is tested too)."""
    steps = pre_tokenizer_from_hf(json.loads(hf_component.__getstate__()), "test")
    pieces = [(text, True)] if text else []  # tokenizers pre-tokenizes an empty text to no pieces
    for step in compile_steps(steps):
        pieces = [out for p in pieces for out in step(p, time.monotonic() + 60) if out[0]]
    return [p for p, _ in pieces]


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_split_behaviors_equal_tokenizers(behavior: str, seed: int) -> None:
    for pattern in PATTERNS:
        for invert in (False, True):
            component = pre_tokenizers.Split(Regex(pattern), behavior=behavior, invert=invert)
            for text in texts(seed, 60):
                expected = [p for p, _ in component.pre_tokenize_str(text)]
                assert ours(component, text) == expected, (seed, pattern, invert, text)


@pytest.mark.parametrize(
    "component",
    [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Metaspace(prepend_scheme="always", split=True),
        pre_tokenizers.Metaspace(prepend_scheme="first", split=False),
        pre_tokenizers.Metaspace(prepend_scheme="never", split=True),
        pre_tokenizers.Split("ab", behavior="merged_with_next"),
    ],
    ids=lambda c: c.__getstate__().decode()[:60] if isinstance(c.__getstate__(), bytes) else str(c),
)
def test_pre_tokenizers_equal_tokenizers(component, seed: int) -> None:
    for text in texts(seed, 200):
        assert ours(component, text) == [p for p, _ in component.pre_tokenize_str(text)], (seed, text)


def test_normalizers_equal_tokenizers(seed: int) -> None:
    for component in (
        normalizers.NFC(),
        normalizers.NFKC(),
        normalizers.NFD(),
        normalizers.NFKD(),
        normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        normalizers.Replace("aa", "b"),
    ):
        steps = normalizer_from_hf(json.loads(component.__getstate__()), "test")
        for text in texts(seed, 200):
            assert normalize(text, steps) == component.normalize_str(text), (seed, text)


def test_decoders_equal_tokenizers(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [*pre_tokenizers.ByteLevel.alphabet(), "▁", " ", "a", "é", "<0x41>", "<0xE2>", "<0x96>", "<0x81>"]
    alphabet += ["<0xFF>", "<0x+A>", "<0xzz>", "\u2581\u2581"]
    for component in (
        decoders.ByteLevel(),
        decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        ),
        decoders.Metaspace(prepend_scheme="always"),
        decoders.Metaspace(prepend_scheme="never"),
        decoders.Strip("a", 2, 0),  # (a stop past a string's length makes tokenizers panic)
        decoders.ByteFallback(),
    ):
        steps = decoder_from_hf(json.loads(component.__getstate__()), "test")
        for _ in range(300):
            tokens = ["".join(rng.choices(alphabet, k=rng.randint(1, 3))) for _ in range(rng.randint(0, 8))]
            assert decode_strings(tokens, steps) == component.decode(tokens), (seed, tokens)
