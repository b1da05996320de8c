"""Tokenizers built with Hugging Face `tokenizers` in the layouts of real models (GPT-2, SmolLM2, Qwen2,
TinyLlama), trained on generated text, and the varied texts the version-1 tokenizer tests encode."""

import json
import random
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SCRIPTS = [
    "the quick brown fox jumps over lazy dogs It's I'LL we've THEY'D don't",
    "café naïve résumé Straße œuvre façade ÅNGSTRÖM ﬁnance \u017ftraße",
    "Ελληνικά γλώσσα λόγος Σοφία",
    "Русский язык пример текста Ёжик",
    "العربية لغة جميلة مرحبا",
    "עברית שפה שלום",
    "हिन्दी भाषा नमस्ते दुनिया",
    "ภาษาไทย สวัสดี",
    "中文字符测试 你好世界 漢字",
    "日本語のテキスト ひらがな カタカナ",
    "한국어 텍스트 안녕하세요",
    "e\u0301 a\u0308 n\u0303 \u212b \u1e9b\u0323",
]
EMOJI = ["🎉", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🤖", "😀😃"]
SPACES = [
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\n\n",
    " \n ",
    "\u3000",
    "\u00a0",
    "\u2009",
    "\x0b",
    "\x0c",
    "\x85",
    "\x1c",
]
CODE = [
    "def f(x):\n    return x**2  # sq",
    "for (int i = 0; i < n; ++i) { a[i] += 1; }",
    '{"key": [1, 2.5e-3, null]}',
    "if x != y && z >= 10:",
    "<div class='a'>&amp;</div>",
    "$ ls -la | grep '^d'",
]
DIGITS = ["0", "7", "42", "2024", "3.14159", "1,000,000", "٣٤", "१२३", "²", "Ⅻ", "½"]


def random_text(rng: random.Random, specials: list[str], long: bool = False) -> str:
    """A text of words from many scripts, emoji, whitespace runs, digits, code and special tokens inline."""
    parts: list[str] = []
    for _ in range(rng.randint(0, 40 if long else 14)):
        kind = rng.random()
        if kind < 0.35:
            words = rng.choice(SCRIPTS).split(" ")
            parts.append(" ".join(rng.sample(words, rng.randint(1, min(3, len(words))))))
        elif kind < 0.5:
            parts.append(rng.choice(SPACES) * rng.randint(1, 3))
        elif kind < 0.6:
            parts.append(rng.choice(DIGITS) * rng.randint(1, 2))
        elif kind < 0.68:
            parts.append(rng.choice(CODE))
        elif kind < 0.74:
            parts.append(rng.choice(EMOJI))
        elif kind < 0.8 and specials:
            parts.append(rng.choice(specials))
        elif kind < 0.9:
            parts.append("".join(rng.choice("!?.,;:'\"-_()[]{}<>|/\\@#$%^&*~`+=") for _ in range(rng.randint(1, 4))))
        else:
            parts.append("".join(chr(rng.randint(0x20, 0x2FF)) for _ in range(rng.randint(1, 4))))
        if rng.random() < 0.5:
            parts.append(" ")
    return "".join(parts)


def training_texts(specials: list[str]) -> list[str]:
    rng = random.Random(0)  # training is not what is tested: the tests' texts are fresh draws
    return [random_text(rng, [], long=True) for _ in range(600)] + [" ".join(SCRIPTS + CODE + EMOJI + DIGITS)] * 5


def _train(tok: Tokenizer, specials: list[str], vocab_size: int, **options) -> None:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False, **options)
    tok.train_from_iterator(training_texts(specials), trainer)


def byte_level_alphabet() -> list[str]:
    return pre_tokenizers.ByteLevel.alphabet()


def gpt2() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    _train(tok, ["<|endoftext|>"], 1500, initial_alphabet=byte_level_alphabet())
    return tok


SMOLLM2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>", "<filename>"]


def smollm2() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    _train(tok, SMOLLM2_SPECIALS, 1500, initial_alphabet=byte_level_alphabet())
    return tok


def qwen2() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    _train(tok, [], 1500, initial_alphabet=byte_level_alphabet())
    from tokenizers import AddedToken

    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<tool_call>", "</tool_call>")])
    return tok


def tinyllama(folder: Path) -> Tokenizer:
    """Llama-2's layout: Prepend + Replace normalizer, no pre-tokenizer, byte fallback pieces <0x00>..<0xFF>
    at ids 3..258 in the model's vocabulary (the trainer knows none: they are put in afterwards), <s> added."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    _train(tok, ["<unk>", "<s>", "</s>"], 1200, limit_alphabet=150)
    doc = json.loads(tok.to_str())
    vocab = doc["model"]["vocab"]
    ordered = sorted(vocab, key=vocab.get)
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    ordered = ordered[:3] + byte_pieces + [p for p in ordered[3:] if p not in byte_pieces]
    doc["model"]["vocab"] = {piece: i for i, piece in enumerate(ordered)}
    doc["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return Tokenizer.from_file(str(path))


def llama_metaspace(folder: Path) -> Tokenizer:
    """Llama-2 as transformers' converter writes it today: TinyLlama's model with no normalizer and a
    Metaspace pre-tokenizer (prepend_scheme "first", no split) instead."""
    doc = json.loads(tinyllama(folder).to_str())
    doc["normalizer"] = None
    doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return Tokenizer.from_file(str(path))


SPECIALS = {
    "gpt2": ["<|endoftext|>"],
    "smollm2": SMOLLM2_SPECIALS,
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"],
    "tinyllama": ["<s>", "</s>", "<unk>"],
    "llama_metaspace": ["<s>", "</s>", "<unk>"],
}
CONFIGS = {
    "gpt2": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
    "smollm2": {
        "eos_token": "<|im_end|>",
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}",
    },
    "qwen2": {"eos_token": "<|im_end|>", "chat_template": [{"name": "default", "template": "{{ messages }}"}]},
    "tinyllama": {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True},
    "llama_metaspace": {"bos_token": "<s>", "eos_token": "</s>"},
}


def write_folder(name: str, folder: Path) -> Tokenizer:
    """A model folder's tokenizer files (tokenizer.json, tokenizer_config.json) in the layout of `name`."""
    folder.mkdir(parents=True, exist_ok=True)
    if name in ("tinyllama", "llama_metaspace"):
        tok = tinyllama(folder) if name == "tinyllama" else llama_metaspace(folder)
    else:
        tok = {"gpt2": gpt2, "smollm2": smollm2, "qwen2": qwen2}[name]()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(CONFIGS[name]), encoding="utf-8")
    return tok
