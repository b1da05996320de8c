"""What the chat tests share: a random version-2 member (width ≤ 64) whose tokenizer is a byte-level BPE trained
with `tokenizers` (SmolLM2's ChatML special tokens) and read as pxgl reads a model folder's (tokenizer_from_hf),
with a ChatML template writing bos_token and eos_token; and the oracle's greedy answer."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pxgl.text_tokenizer import TextTokenizer
from pxgl.text_tokenizer.hf import tokenizer_from_hf
from pxgl.transformer.members import write_random_model

from tests.reference import transformer as oracle
from tests.test_transformer_engine import oracle_reads, random_architecture

TEXT = "hello there, the pixel model chats with you. how are you? fine, thanks!\n" * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS, EOS = "<|endoftext|>", "<|im_end|>"
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB = 400
HEAD_GAIN = 4.0


def hf_folder(folder: Path, template: str | None = TEMPLATE, eos: str | None = EOS, add_bos: bool = True) -> Path:
    """A model folder's tokenizer files: tokenizer.json trained here, tokenizer_config.json naming BOS, EOS
    (None: none, so nothing ends an answer early), add_bos_token and the template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator([TEXT], trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"bos_token": BOS, "add_bos_token": add_bos} | ({} if eos is None else {"eos_token": eos})
    config |= {} if template is None else {"chat_template": template}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@dataclass(frozen=True)
class Member:
    path: Path
    meta: dict
    params: dict
    tokenizer: TextTokenizer
    folder: Path
    """The tokenizer's Hugging Face files (transformers' AutoTokenizer reads them)."""

    @property
    def bos(self) -> int:
        return self.meta["bos"]

    def greedy(self, ids: Sequence[int], steps: int) -> list[int]:
        """The oracle's greedy tokens after `ids`, up to `steps` or an EOS id (its last), or fewer where a step
        is a near-tie (§14.4's τ: the GPU may take either)."""
        sequence, tokens = list(ids), []
        for _ in range(steps):
            logits = oracle.forward(self.meta, self.params, sequence)[-1:]
            if oracle.near_tie(logits)[0]:
                break
            tokens.append(int(np.argmax(logits[0])))
            sequence.append(tokens[-1])
            if tokens[-1] in self.tokenizer.eos_ids:
                break
        return tokens

    def ended(self, tokens: Sequence[int], steps: int) -> bool:
        """Whether greedy's `tokens` are a whole answer of at most `steps`: at an EOS id or of all `steps`."""
        return len(tokens) == steps or (bool(tokens) and tokens[-1] in self.tokenizer.eos_ids)


def write_member(
    folder: Path,
    seed: int,
    context: int = 128,
    name: str = "member",
    template: str | None = TEMPLATE,
    eos: str | None = EOS,
) -> Member:
    """A random member of ≤ 64 width over the trained tokenizer's vocabulary, bos the tokenizer's: the same
    `seed` gives the same weights whatever the template or EOS."""
    rng = np.random.default_rng(seed)
    hf = hf_folder(folder / f"{name}-hf", template, eos)
    tokenizer = tokenizer_from_hf(hf)
    heads = int(rng.choice([1, 2]))
    width = 32 * int(rng.integers(1, 3))
    architecture = random_architecture(
        rng,
        vocab_size=tokenizer.vocab_size,
        context_length=context,
        width=width,
        heads=heads,
        kv_heads=heads,
        head_dim=width // heads,
        attention_scale=(width // heads) ** -0.5,
        layers=1,
    )
    path = folder / f"{name}.pxi"
    write_random_model(path, architecture, "q8", int(rng.integers(1 << 32)), tokenizer=tokenizer,
                       bos=tokenizer.bos_id, head_gain=HEAD_GAIN)  # fmt: skip
    meta, params = oracle_reads(path)
    return Member(path, meta, params, tokenizer, hf)
