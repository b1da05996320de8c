"""Version-1 tokenizers (docs/FORMATS.md §6.1) against Hugging Face `tokenizers`, the reference: tokenizers in
the layouts of GPT-2, SmolLM2, Qwen2 and TinyLlama, trained with tokenizers' BpeTrainer, read with
tokenizer_from_hf; pxgl's ids and decoded texts must be tokenizers' own on thousands of varied texts."""

import random
from pathlib import Path

import pytest
from pxgl.errors import PxglError
from pxgl.resources import resource_dir
from pxgl.text_tokenizer import TextTokenizer
from pxgl.text_tokenizer.hf import tokenizer_from_hf, write_hf_tokenizer
from pxgl.tokenizer import Tokenizer
from tokenizers import Tokenizer as HFTokenizer

from tests.text_tokenizers import SPECIALS, random_text, write_folder

NAMES = ("gpt2", "smollm2", "qwen2", "tinyllama", "llama_metaspace")
TEXTS = 2000


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, HFTokenizer]]:
    root = tmp_path_factory.mktemp("hf")
    return {name: (root / name, write_folder(name, root / name)) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_ids_and_decoding_equal_tokenizers(name: str, folders, seed: int) -> None:
    folder, reference = folders[name]
    ours = tokenizer_from_hf(folder)
    rng = random.Random(seed)
    texts = ["", " ", "\r\n", "  leading", *SPECIALS[name]] + [random_text(rng, SPECIALS[name]) for _ in range(TEXTS)]
    for text in texts:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == expected, (seed, text)
        assert ours.decode(expected) == reference.decode(expected, skip_special_tokens=False), (seed, text)
        assert ours.decode(expected, skip_special=True) == reference.decode(expected, skip_special_tokens=True)
    for text in texts[:200]:
        with_bos = reference.encode(text).ids
        assert ([ours.bos_id] if ours.add_bos else []) + ours.encode(text) == with_bos, (seed, text)
    for _ in range(300):  # any ids, as a model predicts them: byte-fallback runs cut mid-character included
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randint(0, 12))]
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=False), (seed, ids)


def test_special_false_leaves_special_tokens_as_text(folders) -> None:
    folder, reference = folders["qwen2"]
    ours = tokenizer_from_hf(folder)
    text = "a<|im_start|>b<tool_call>c"
    reference.encode_special_tokens = True
    try:
        assert ours.encode(text, special=False) == reference.encode(text, add_special_tokens=False).ids
    finally:
        reference.encode_special_tokens = False
    assert ours.encode(text, special=False) != ours.encode(text)


def test_attributes_from_the_folder(folders) -> None:
    tiny = tokenizer_from_hf(folders["tinyllama"][0])
    assert (tiny.bos_id, tiny.eos_ids, tiny.add_bos, tiny.bos_token, tiny.eos_token) == (1, (2,), True, "<s>", "</s>")
    qwen = tokenizer_from_hf(folders["qwen2"][0])
    assert qwen.chat_template == "{{ messages }}" and not qwen.add_bos and qwen.eos_token == "<|im_end|>"
    gpt2 = tokenizer_from_hf(folders["gpt2"][0])
    assert gpt2.kind == "byte-level" and tiny.kind == "sentencepiece" and gpt2.chat_template is None


@pytest.mark.parametrize("name", NAMES)
def test_pxgl_file_and_hf_export_round_trip(name: str, folders, tmp_path: Path, seed: int) -> None:
    folder, reference = folders[name]
    ours = tokenizer_from_hf(folder)
    ours.save(tmp_path / "t.tokenizer.json")
    again = Tokenizer.load(tmp_path / "t.tokenizer.json")
    assert isinstance(again, TextTokenizer) and again.to_json() == ours.to_json()
    write_hf_tokenizer(again, tmp_path / "hf")
    exported = HFTokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    back = tokenizer_from_hf(tmp_path / "hf")
    assert back.to_json() == ours.to_json()
    rng = random.Random(seed)
    for text in [random_text(rng, SPECIALS[name]) for _ in range(150)]:
        expected = reference.encode(text).ids
        assert exported.encode(text).ids == expected, (seed, text)
        assert exported.decode(expected) == reference.decode(expected)


def test_transformers_loads_the_export(folders, tmp_path: Path, seed: int) -> None:
    from transformers import AutoTokenizer

    rng = random.Random(seed)
    for name in NAMES:
        folder, reference = folders[name]
        write_hf_tokenizer(tokenizer_from_hf(folder), tmp_path / name)
        loaded = AutoTokenizer.from_pretrained(tmp_path / name)
        texts = [random_text(rng, SPECIALS[name]) for _ in range(40)]
        for text in texts:
            expected = reference.encode(text).ids
            assert loaded(text)["input_ids"] == expected, (name, seed, text)
            assert loaded.decode(expected) == reference.decode(expected, skip_special_tokens=False)
        # and a folder transformers saves (its chat template in chat_template.jinja) reads back the same
        loaded.chat_template = "{{ bos_token }}{% for m in messages %}" + name + "{% endfor %}"
        loaded.save_pretrained(tmp_path / f"{name}-saved")
        saved = tokenizer_from_hf(tmp_path / f"{name}-saved")
        assert saved.chat_template == loaded.chat_template, sorted(
            p.name for p in (tmp_path / f"{name}-saved").iterdir()
        )
        original = tokenizer_from_hf(folder)
        assert [saved.encode(t) for t in texts] == [original.encode(t) for t in texts]
        assert (saved.bos_id, saved.eos_ids, saved.add_bos) == (original.bos_id, original.eos_ids, original.add_bos)


def test_version_0_exports_as_the_same_tokenizer(tmp_path: Path, seed: int) -> None:
    """A freshly trained version-0 tokenizer and the bundled models' own, written as tokenizer.json: tokenizers
    encodes and decodes every text as pxgl's version 0 does."""
    rng = random.Random(seed)
    trained = Tokenizer.train([random_text(rng, []) for _ in range(300)], 700)
    bundled = [Tokenizer.load(path) for path in sorted(resource_dir("assets").glob("*.tokenizer.json"))]
    assert bundled
    for i, v0 in enumerate([trained, *bundled]):
        write_hf_tokenizer(v0, tmp_path / str(i))
        exported = HFTokenizer.from_file(str(tmp_path / str(i) / "tokenizer.json"))
        for text in [random_text(rng, ["<|x|>"]) for _ in range(1000 if v0 is trained else 300)]:
            ids = v0.encode(text)
            assert exported.encode(text).ids == ids, (seed, i, text)
            assert exported.decode(ids) == v0.decode(ids) == text
    assert (trained.bos_id, trained.eos_ids, trained.add_bos, trained.chat_template) == (None, (), False, None)
    assert trained.encode("a b", special=False) == trained.encode("a b")


def test_padding_ids_decode_to_nothing_as_tokenizers_skips_them(folders, tmp_path: Path, seed: int) -> None:
    folder, reference = folders["qwen2"]
    plain = tokenizer_from_hf(folder)
    padded = plain.padded_to(plain.vocab_size + 9)
    assert plain.vocab_size == padded.tokens and plain.padded_to(plain.vocab_size).vocab_size == plain.vocab_size
    with pytest.raises(PxglError, match="cannot serve a vocabulary"):
        plain.padded_to(plain.vocab_size - 1)
    assert padded.vocab_size == plain.vocab_size + 9 and padded.token_bytes(plain.vocab_size + 8) == b""
    rng = random.Random(seed)
    for _ in range(200):
        ids = [rng.randrange(padded.vocab_size) for _ in range(rng.randint(0, 10))]
        assert padded.decode(ids) == reference.decode(ids, skip_special_tokens=False), (seed, ids)
    padded.save(tmp_path / "t.tokenizer.json")
    assert Tokenizer.load(tmp_path / "t.tokenizer.json").vocab_size == plain.vocab_size + 9


def test_refusals_name_the_problem(folders, tmp_path: Path) -> None:
    """A version-0 tokenizer with two ids of the same bytes cannot be a tokenizer.json (nothing is written); a
    text with a lone surrogate is not Unicode (tokenizers refuses it too)."""
    twice = Tokenizer(((97, 98), (97, 98)))
    with pytest.raises(PxglError, match="ids 256 and 257 are both the bytes b'ab'"):
        write_hf_tokenizer(twice, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(PxglError, match="not valid Unicode"):
        tokenizer_from_hf(folders["gpt2"][0]).encode("a\ud800b")


@pytest.mark.parametrize("name", ["qwen2", "tinyllama"])
def test_added_tokens_with_every_flag_match_as_tokenizers_matches_them(
    name: str, folders, tmp_path: Path, seed: int
) -> None:
    """Added tokens drawn with lstrip, rstrip, single_word, normalized and special set at random, some
    overlapping each other ("<a>", "<a>b", "ab"), written in texts between spaces and words."""
    from tokenizers import AddedToken as HFAddedToken

    rng = random.Random(seed)
    reference = HFTokenizer.from_file(str(folders[name][0] / "tokenizer.json"))
    contents = ["<a>", "<a>b", "ab", "x y", "é", "[MASK]", "12", "\u2581hi"]
    flags = [
        {f: rng.random() < 0.4 for f in ("lstrip", "rstrip", "single_word", "normalized", "special")} for _ in contents
    ]
    reference.add_tokens([HFAddedToken(c, **f) for c, f in zip(contents, flags, strict=True)])
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = tokenizer_from_hf(tmp_path)
    pieces = [*contents, " ", "  ", "\n", "a", "b", "word", "_", "1", ".", "é"]
    for _ in range(600):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert ours.encode(text) == reference.encode(text, add_special_tokens=False).ids, (seed, flags, text)


def test_a_folder_of_more_embedding_rows_than_tokens_imports_padded(folders) -> None:
    """pxgl import of a Hugging Face folder (engine/hf): Qwen2's layout, 151,936 rows for 151,665 tokens."""
    from pxgl.hf.importer import folder_tokenizer

    folder = folders["qwen2"][0]
    tokens = tokenizer_from_hf(folder).vocab_size
    assert folder_tokenizer(folder, tokens + 271).vocab_size == tokens + 271
    with pytest.raises(PxglError, match=f"{tokens} tokens; config.json's vocab_size is {tokens - 1}"):
        folder_tokenizer(folder, tokens - 1)
