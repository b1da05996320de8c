"""GGUF's tokenizer.ggml.* as pxgl's version-1 tokenizer (docs/FORMATS.md §10.3): tokenizers built with Hugging
Face `tokenizers` in GPT-2's, SmolLM2's, Qwen2's and TinyLlama's layouts (tests/text_tokenizers.py), written into
a GGUF as convert_hf_to_gguf.py writes them (tokens, token types, merges or scores, pre, bos/eos, template),
imported with a model: pxgl's ids equal `tokenizers`' on varied texts and decode back as it decodes; exported and
imported again, the same tokenizer file."""

import json
import random
import re

import numpy as np
import pytest
from pxgl.tokenizer import Tokenizer
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from tests import text_tokenizers
from tests.cartridges import pxgl
from tests.gguf_files import T, hf_meta, random_weights, write_gguf

PRE = {"gpt2": "gpt-2", "smollm2": "smollm", "qwen2": "qwen2", "llama3": "llama-bpe"}
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def llama3() -> HFTokenizer:
    """Llama 3's layout: its split pattern, byte-level without a regex, a piece in the vocabulary taken whole."""
    tok = HFTokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=text_tokenizers.byte_level_alphabet(),
    )
    tok.train_from_iterator(text_tokenizers.training_texts(specials), trainer)
    return tok


NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 3, 4, 6
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def gguf_keys(name: str, hf_json: dict, space_prefix: bool = True):
    """convert_hf_to_gguf.py's tokenizer keys of a tokenizer.json (its get_vocab_base / llama-hf paths)."""
    vocab = hf_json["model"]["vocab"]
    added = {t["id"]: t for t in hf_json["added_tokens"]}
    size = max([*vocab.values(), *added]) + 1
    tokens = [None] * size
    for token, i in vocab.items():
        tokens[i] = token
    for i, token in added.items():
        tokens[i] = token["content"]
    sentencepiece = name == "tinyllama"
    types = [
        (CONTROL if added[i]["special"] else USER_DEFINED)
        if i in added
        else BYTE
        if sentencepiece and re.fullmatch(r"<0x[0-9A-F]{2}>", token)
        else NORMAL
        for i, token in enumerate(tokens)
    ]
    special = {t["content"]: t["id"] for t in hf_json["added_tokens"]}

    def write(writer) -> None:
        writer.add_tokenizer_model("llama" if sentencepiece else "gpt2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        if sentencepiece:
            writer.add_token_scores([float(-i) if types[i] == NORMAL else 0.0 for i in range(size)])
            writer.add_bos_token_id(special["<s>"])
            writer.add_eos_token_id(special["</s>"])
            writer.add_unk_token_id(special["<unk>"])
            writer.add_add_space_prefix(space_prefix)
        else:
            writer.add_tokenizer_pre(PRE[name])
            merges = hf_json["model"]["merges"]
            writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
            writer.add_eos_token_id(special.get("<|endoftext|>", 0))
            writer.add_add_bos_token(False)
        writer.add_chat_template(TEMPLATE)

    return size, write


@pytest.mark.parametrize("case", ["gpt2", "smollm2", "qwen2", "llama3", "tinyllama", "tinyllama-no-space-prefix"])
def test_a_gguf_tokenizer_encodes_as_tokenizers_does_and_exports_back(case, tmp_path, seed, monkeypatch, capsys):
    name = case.removesuffix("-no-space-prefix")
    build = llama3 if name == "llama3" else getattr(text_tokenizers, name)
    hf = build(tmp_path) if name == "tinyllama" else build()
    if case != name:  # tokenizer.ggml.add_space_prefix false: no ▁ put before the text
        hf.normalizer = normalizers.Replace(" ", "▁")
    size, keys = gguf_keys(name, json.loads(hf.to_str()), space_prefix=case == name)
    arch = "llama" if name in ("tinyllama", "smollm2", "llama3") else name
    meta = hf_meta(arch, vocab=size)
    rng = np.random.default_rng(seed)
    source = tmp_path / "model.gguf"
    write_gguf(source, arch, meta, random_weights(meta, rng), T.Q8_0, rng, keys)
    out = tmp_path / "model.pxi"
    code, _, err = pxgl(monkeypatch, capsys, "import", str(source), "-o", str(out), "--json")
    assert code == 0, err
    tokenizer = Tokenizer.load(tmp_path / "model.tokenizer.json")
    written = json.loads((tmp_path / "model.meta.json").read_text())
    assert tokenizer.chat_template == TEMPLATE
    assert written.get("bos") == (1 if name == "tinyllama" else None)  # llama's SentencePiece adds BOS
    specials = [t.content for t in hf.get_added_tokens_decoder().values()]
    texts = random.Random(seed)
    for _ in range(300):
        text = text_tokenizers.random_text(texts, specials)
        expected = hf.encode(text, add_special_tokens=False).ids
        assert tokenizer.encode(text) == expected, text
        assert tokenizer.decode(expected) == hf.decode(expected, skip_special_tokens=False), text
    exported, back = tmp_path / "again.gguf", tmp_path / "back.pxi"  # export writes the tokenizer back
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(out), "--format", "gguf", "-o", str(exported))
    assert code == 0 and "without" not in err, err
    code, _, err = pxgl(monkeypatch, capsys, "import", str(exported), "-o", str(back), "--json")
    assert code == 0, err
    assert (tmp_path / "back.tokenizer.json").read_bytes() == (tmp_path / "model.tokenizer.json").read_bytes()
    assert back.read_bytes() == out.read_bytes()
