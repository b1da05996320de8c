"""Real GGUF files from llama.cpp's own tools, for issue 28's one-off check (bench/import_llamacpp.py compares
them): shrunk random-weight Hugging Face folders of GPT-2, SmolLM2, Qwen2 and TinyLlama, each with a tokenizer
trained in that model's real layout (normalizer, pre-tokenizer, decoder, added tokens) at its real vocabulary
size — by `tokenizers`, and TinyLlama's by `sentencepiece` (tokenizer.model, as the real checkpoint has it) —
then llama.cpp's `convert_hf_to_gguf.py` at F16 and Q8_0 and `llama-quantize` to Q4_K_M.

    python -m bench.llamacpp_files --llama-cpp /work/wt/llama.cpp-src --out /work/wt/gguf-files

writes OUT/hf/<name>/ (config.json, model.safetensors in float32, tokenizer.json, tokenizer_config.json,
generation_config.json; TinyLlama's tokenizer.model), OUT/<name>-{f16,q8_0,q4_k_m}.gguf and OUT/MANIFEST.md.
Every width and feed-forward width is a multiple of 256 and every head_dim 64, so Q8_0 and the K-quants apply to
every matrix rather than falling back. Needs torch, transformers, tokenizers and sentencepiece, and the
llama.cpp source with `build/bin/llama-quantize` built in it.

convert_hf_to_gguf names a BPE tokenizer's pre-tokenizer by hashing its encoding of a fixed text
(`get_vocab_base_pre`); a freshly trained vocabulary has no known hash, so the script is run unchanged through
`convert_with_pre`, which replaces that one method with one returning the name of the real model's
pre-tokenizer (`PRE`: gpt-2, smollm, qwen2) — the name llama.cpp's table gives the real checkpoint, whose
split rules the trained tokenizer copies. TinyLlama's goes through SentencePiece (tokenizer.model), which asks
no hash. config.json is rewritten in the layout of the real checkpoints on the hub (`hub_layout`)."""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCRIPTS = {
    "latin": ("bcdfghjklmnprstvwz", "aeiou"),
    "cyrillic": ("бвгджзклмнпрстфхцчш", "аеиоуыэюя"),
    "greek": ("βγδζθκλμνξπρστφχψ", "αεηιουω"),
    "devanagari": ("कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह", "ािीुूेैोौ"),
    "hangul": ("".join(chr(0xAC00 + 588 * i) for i in range(19)), "".join(chr(28 * j) for j in range(21))),
    "cjk": ("".join(chr(0x4E00 + 37 * i) for i in range(300)), ""),
    "arabic": ("بتثجحخدذرزسشصضطظعغفقكلمنهوي", "اوي"),
}
"""Syllables (consonant + vowel) of several scripts; Hangul's "vowels" are offsets added to a leading syllable
and CJK's "words" are runs of ideographs."""
CODE = [
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }", "if x != None:\n\tpass",
    "SELECT id, name FROM users WHERE age >= 21;", "<div class=\"row\">{{ value }}</div>", "x = [1, 2, 3]  # ok",
    "fn main() -> Result<(), Box<dyn Error>> {}", "const y = await fetch(`/api/${id}`);",
]  # fmt: skip
EXTRAS = ["🚀", "😶\u200d🌫️", "✅", "🦙", "…", "—", "«", "»", "€", "½", "\u00a0", "\u3000", "ﬁ", "é", "e\u0301", "Å"]


def syllable_word(rng: np.random.Generator, script: str) -> str:
    consonants, vowels = SCRIPTS[script]
    count = int(rng.integers(1, 5))
    if script == "cjk":
        return "".join(consonants[int(rng.integers(len(consonants)))] for _ in range(count + 1))
    if script == "hangul":
        return "".join(
            chr(ord(consonants[int(rng.integers(19))]) + ord(vowels[int(rng.integers(21))])) for _ in range(count)
        )
    word = "".join(consonants[int(rng.integers(len(consonants)))] + vowels[int(rng.integers(len(vowels)))]
                   for _ in range(count))  # fmt: skip
    return word if rng.random() > 0.3 else word + consonants[int(rng.integers(len(consonants)))]


def lexicon(rng: np.random.Generator, size: int) -> list[str]:
    """`size` distinct words, Latin most often, some capitalized."""
    names, weights = list(SCRIPTS), np.array([8, 2, 1, 1, 1, 1, 1], float)
    words: set[str] = set()
    while len(words) < size:
        word = syllable_word(rng, names[int(rng.choice(len(names), p=weights / weights.sum()))])
        words.add(word.capitalize() if rng.random() < 0.15 else word)
    return sorted(words)


def texts(rng: np.random.Generator, words: list[str], count: int) -> list[str]:
    """Varied lines: words drawn half by Zipf's law, half uniformly (so the whole lexicon is seen), numbers,
    punctuation and contractions, whitespace runs, tabs and \\r\\n, code, emoji and combining marks."""
    zipf = np.minimum(rng.zipf(1.1, size=count * 24), len(words)) - 1
    ranks = np.where(rng.random(zipf.size) < 0.5, zipf, rng.integers(0, len(words), zipf.size))
    order = rng.permutation(len(words))
    out, at = [], 0
    for _ in range(count):
        parts = []
        for _ in range(int(rng.integers(4, 24))):
            kind = rng.random()
            if kind < 0.78:
                parts.append(words[order[ranks[at % len(ranks)]]])
                at += 1
            elif kind < 0.86:
                parts.append(str(int(rng.integers(0, 10 ** int(rng.integers(1, 9))))))
            elif kind < 0.92:
                parts.append(str(rng.choice([",", ".", "!", "?", "'s", "'ll", "n't", "...", "--", "(", ")", ":"])))
            elif kind < 0.95:
                parts.append(EXTRAS[int(rng.integers(len(EXTRAS)))])
            elif kind < 0.97:
                parts.append(CODE[int(rng.integers(len(CODE)))])
            else:
                parts.append(str(rng.choice(["\n", "\r\n", "\t", "   ", "\n\n", " \t "])))
        out.append(" ".join(parts))
    return out


SEED = 28
HEAD_GAIN = 4.0
"""The output head (the embeddings where tied) scaled up from the initializer's 0.02 so logits spread (standard
deviation ~1.3) as a trained model's do, rather than sit within a few τ of each other."""
RESIDUAL_GAIN = 10.0
"""The projections into the residual stream (GPT-2's c_proj, Llama's o_proj and down_proj) scaled up from the
initializer's 0.02: otherwise the last hidden state is nearly the input token's embedding and a tied head's
argmax is that token at every position, margins ≥ 4 — a top-1 comparison that cannot fail. At 10, the argmax is
the input token at < 1% of positions and the median top-two margin is ~0.2 (about 10% under 0.03), as with
TinyLlama's untied head."""
RESIDUAL_OUTPUTS = ("c_proj.weight", "o_proj.weight", "down_proj.weight")
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SMOLLM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
]  # fmt: skip
QWEN_ADDED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN_BASE = 151643
"""Qwen2's byte-level vocabulary before its 22 added tokens; config.json's 151,936 rows leave 271 unused."""
SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}"
    "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
"""TinyLlama-1.1B-Chat-v1.0's template (Zephyr's); SmolLM2-Instruct's above; Qwen2's is llama.cpp's
models/templates/Qwen-Qwen2.5-7B-Instruct.jinja."""


@dataclass(frozen=True)
class Shape:
    """One shrunk checkpoint: its transformers config, its tokenizer's builder, its pre-tokenizer name."""

    name: str
    config: dict
    pre: str | None
    real: str


SHAPES = [
    Shape(
        "gpt2",
        {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": 50257,
            "n_positions": 1024,
            "n_ctx": 1024,
        }
        | {"n_embd": 256, "n_layer": 2, "n_head": 4, "n_inner": None, "activation_function": "gelu_new"}
        | {"layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": True},
        "gpt-2",
        "openai-community/gpt2 (12 layers of 768, 12 heads)",
    ),
    Shape(
        "smollm2",
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 256}
        | {"intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
        | {"head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 8192, "rope_theta": 100000.0}
        | {"rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}
        | {"attention_bias": False, "mlp_bias": False},
        "smollm",
        "HuggingFaceTB/SmolLM2-135M-Instruct (30 layers of 576, 9 heads, 3 kv heads)",
    ),
    Shape(
        "qwen2",
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 256}
        | {"intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
        | {"hidden_act": "silu", "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}
        | {"tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 32768}
        | {"max_window_layers": 2, "bos_token_id": 151643, "eos_token_id": 151645},
        "qwen2",
        "Qwen/Qwen2.5-0.5B-Instruct (24 layers of 896, 14 heads, 2 kv heads)",
    ),
    Shape(
        "tinyllama",
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 256}
        | {"intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1}
        | {"head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 2048, "rope_theta": 10000.0}
        | {"rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
        | {"attention_bias": False, "mlp_bias": False},
        None,
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0 (22 layers of 2048, 32 heads, 4 kv heads)",
    ),
]


def trained_bpe(pipeline, corpus: list[str], size: int, specials: list[str]):
    """A BPE tokenizer with `pipeline`'s normalizer and pre-tokenizer trained on `corpus` to exactly `size`
    entries (specials first)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    pipeline(tokenizer)
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    if tokenizer.get_vocab_size() != size:
        raise SystemExit(f"the corpus taught {tokenizer.get_vocab_size()} tokens, not {size}: give it more words")
    return tokenizer


def byte_level_pipeline(name: str):
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    def apply(tokenizer) -> None:
        if name == "qwen2":
            tokenizer.normalizer = normalizers.NFC()
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
                ]
            )
            tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
            tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
            return
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        if name == "smollm2":
            digits = pre_tokenizers.Digits(individual_digits=True)
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
        else:
            tokenizer.pre_tokenizer = byte_level
        tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
        tokenizer.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)

    return apply


def sentencepiece_tokenizer(corpus: list[str], size: int) -> tuple[object, bytes]:
    """TinyLlama's (Llama-2's) pair of files: tokenizer.model, a SentencePiece BPE model trained with Llama-2's
    trainer settings (identity normalization, a dummy prefix, digits split, byte fallback: <unk> <s> </s>,
    then <0x00>…<0xFF>, then pieces), and the tokenizer.json transformers' LlamaConverter (legacy) derives from
    it: vocabulary and merges from SentencePieceExtractor, normalizer Prepend ▁ + Replace ' '→▁, no
    pre-tokenizer, byte fallback, the decoder undoing it, a template adding <s>."""
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    written = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[:30000]), model_writer=written, model_type="bpe", vocab_size=size,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=0.99995, num_threads=1, minloglevel=2,
    )  # fmt: skip
    with tempfile.NamedTemporaryFile(suffix=".model") as model_file:
        model_file.write(written.getvalue())
        model_file.flush()
        extracted = SentencePieceExtractor(model_file.name).extract(models.BPE)
    model = models.BPE(
        vocab=extracted["vocab"], merges=extracted["merges"], unk_token="<unk>", byte_fallback=True, fuse_unk=True
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    if tokenizer.get_vocab_size() != size:
        raise SystemExit(f"TinyLlama's vocabulary came out at {tokenizer.get_vocab_size()}, not {size}")
    return tokenizer, written.getvalue()


def tokenizer_files(shape: Shape, corpus: list[str], templates: Path) -> tuple[object, dict, bytes | None]:
    """The trained tokenizer, its tokenizer_config.json as the real checkpoint's, and (TinyLlama's only) its
    SentencePiece tokenizer.model."""
    from tokenizers import AddedToken

    if shape.name == "tinyllama":
        tokenizer, sentencepiece_model = sentencepiece_tokenizer(corpus, shape.config["vocab_size"])
        config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        config |= {"pad_token": "</s>", "add_bos_token": True, "add_eos_token": False, "legacy": False}
        return tokenizer, config | {"model_max_length": 2048, "chat_template": ZEPHYR_TEMPLATE}, sentencepiece_model
    pipeline = byte_level_pipeline(shape.name)
    if shape.name == "gpt2":
        tokenizer = trained_bpe(pipeline, corpus, 50256, [])
        tokenizer.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
        eot = "<|endoftext|>"
        config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot}
        return tokenizer, config | {"model_max_length": 1024}, None
    if shape.name == "smollm2":
        tokenizer = trained_bpe(pipeline, corpus, shape.config["vocab_size"], SMOLLM_SPECIALS)
        config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
        config |= {"unk_token": "<|endoftext|>", "pad_token": "<|im_end|>", "model_max_length": 8192}
        return tokenizer, config | {"chat_template": SMOLLM_TEMPLATE}, None
    tokenizer = trained_bpe(pipeline, corpus, QWEN_BASE, [])
    for token in QWEN_ADDED:
        tool = token in ("<tool_call>", "</tool_call>")
        tokenizer.add_special_tokens([AddedToken(token, special=not tool, normalized=False)])
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>"}
    config |= {"pad_token": "<|endoftext|>", "model_max_length": 131072, "errors": "replace"}
    template = (templates / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    return tokenizer, config | {"chat_template": template, "split_special_tokens": False}, None


def save_folder(shape: Shape, folder: Path, corpus: list[str], templates: Path) -> dict:
    """The folder transformers would save for this shape, with random weights (norms and biases perturbed
    too, so a reader that drops them is caught), the residual outputs scaled by RESIDUAL_GAIN and the head by
    HEAD_GAIN."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer, tokenizer_config, sentencepiece_model = tokenizer_files(shape, corpus, templates)
    torch.manual_seed(SEED)
    config = AutoConfig.for_model(**{k: v for k, v in shape.config.items() if k != "architectures"})
    config.architectures = shape.config["architectures"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("bias"):
                tensor.normal_(0, 0.02)
            elif "norm" in name or ".ln_" in name:
                tensor.normal_(1, 0.1)
            if name.endswith(RESIDUAL_OUTPUTS):
                tensor.mul_(RESIDUAL_GAIN)
        model.get_output_embeddings().weight.mul_(HEAD_GAIN)
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    hub_layout(folder / "config.json")
    tokenizer.save(str(folder / "tokenizer.json"))
    if sentencepiece_model is not None:
        (folder / "tokenizer.model").write_bytes(sentencepiece_model)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    loaded = AutoTokenizer.from_pretrained(folder)
    sample = "Hello world 12345 \u00e9t\u00e9 \u4f60\u597d <|im_end|>  x"
    theirs, ours = (
        loaded(sample, add_special_tokens=False)["input_ids"],
        tokenizer.encode(sample, add_special_tokens=False).ids,
    )
    if theirs != ours:
        raise SystemExit(f"{shape.name}: AutoTokenizer encodes {theirs}, tokenizers {ours}")
    return {"parameters": sum(p.numel() for p in model.parameters()), "tokens": tokenizer.get_vocab_size()}


def hub_layout(path: Path) -> None:
    """config.json as the real checkpoints on the hub have it (written by transformers 4): `rope_theta` at the
    top and `rope_scaling` null, not transformers 5's `rope_parameters`."""
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters", None)
    if rope is not None:
        if rope.get("rope_type", "default") != "default":
            raise SystemExit(f"{path}: rope {rope} has no transformers 4 spelling here")
        config |= {"rope_theta": rope["rope_theta"], "rope_scaling": None}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


CONVERT_WITH_PRE = """
import os, sys
from pathlib import Path
source = Path(sys.argv.pop(1))
sys.path.insert(0, str(source))
sys.argv[0] = str(source / "convert_hf_to_gguf.py")
import convert_hf_to_gguf
from conversion.base import TextModel
pre = os.environ.get("PXGL_TOKENIZER_PRE")
if pre:
    TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
convert_hf_to_gguf.main()
"""
"""convert_hf_to_gguf.py run unchanged, but for get_vocab_base_pre answering PXGL_TOKENIZER_PRE when set."""


def run(command: list[str], log: list[str], env: dict | None = None) -> None:
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    log.append(f"{' '.join(command)}  # {time.perf_counter() - began:.1f} s")


def convert(shape: Shape, folder: Path, out: Path, source: Path, log: list[str]) -> list[Path]:
    files = []
    env = dict(os.environ, PYTHONPATH=str(source / "gguf-py"))
    if shape.pre:
        env["PXGL_TOKENIZER_PRE"] = shape.pre
    for outtype in ("f16", "q8_0"):
        target = out / f"{shape.name}-{outtype}.gguf"
        command = [sys.executable, "-c", CONVERT_WITH_PRE, str(source), str(folder)]
        prefix = f"PXGL_TOKENIZER_PRE={shape.pre} " if shape.pre else ""
        run([*command, "--outtype", outtype, "--outfile", str(target)], log, env)
        log[-1] = prefix + log[-1].replace(f"-c {CONVERT_WITH_PRE} ", "convert_with_pre ")
        files.append(target)
    target = out / f"{shape.name}-q4_k_m.gguf"
    run([str(source / "build/bin/llama-quantize"), str(files[0]), str(target), "Q4_K_M"], log)
    return [*files, target]


def tensor_types(path: Path) -> str:
    """Each GGUF tensor type and how many tensors have it, from gguf's own reader."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for tensor in GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


def manifest(commit: str, sections: list[str]) -> str:
    return (
        f"# GGUF files made by llama.cpp's own tools (llama.cpp {commit})\n\n"
        "Made by `python -m bench.llamacpp_files` (its docstring says how and why); NOT committed to git. "
        "Random weights: these machines cannot download pretrained ones. `hf/<name>/` are the folders "
        "(float32 safetensors), each converted by llama.cpp's convert_hf_to_gguf.py at F16 and Q8_0, the F16 "
        "quantized by llama-quantize to Q4_K_M.\n\n" + "\n".join(sections)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp's source, llama-quantize built")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--commit", default="unknown", help="the llama.cpp commit the source is")
    parser.add_argument("--words", type=int, default=150000, help="distinct words the tokenizers learn from")
    parser.add_argument("--texts", type=int, default=60000, help="lines of training text")
    parser.add_argument("--only", nargs="*", default=[s.name for s in SHAPES])
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    corpus = texts(rng, lexicon(rng, args.words), args.texts)
    sections = []
    for shape in (s for s in SHAPES if s.name in args.only):
        folder = args.out / "hf" / shape.name
        if folder.exists():
            shutil.rmtree(folder)
        began = time.perf_counter()
        built = save_folder(shape, folder, corpus, args.llama_cpp / "models/templates")
        log = [f"# folder built in {time.perf_counter() - began:.1f} s (python -m bench.llamacpp_files)"]
        files = convert(shape, folder, args.out, args.llama_cpp, log)
        rows = ["| file | bytes | tensor types (gguf.GGUFReader) | sha256 (first 16) |", "| --- | --- | --- | --- |"]
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            rows.append(f"| {path.name} | {path.stat().st_size:,} | {tensor_types(path)} | {digest} |")
        config = json.dumps({k: v for k, v in shape.config.items() if k != "architectures"})
        sections.append(
            f"## {shape.name}: {shape.config['architectures'][0]}, shrunk from {shape.real}\n\n"
            f"{built['parameters']:,} parameters; tokenizer of {built['tokens']:,} tokens"
            f"{f', tokenizer.ggml.pre {shape.pre!r}' if shape.pre else ' (SentencePiece: tokenizer.model)'}.\n"
            f"config: `{config}`\n\n" + "\n".join(rows) + "\n\n```\n" + "\n".join(log) + "\n```\n"
        )
        print(sections[-1], flush=True)
    (args.out / "MANIFEST.md").write_text(manifest(args.commit, sections))


if __name__ == "__main__":
    main()
