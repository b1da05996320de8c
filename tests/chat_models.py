"""What the chat tests share: a random version-2 member (width ≤ 64) with a byte-level tokenizer, a small
ChatML-like template, the oracle's greedy answer, and a stand-in for §6.1's tokenizer attributes (chat_template,
bos/eos) over §6's version-0 tokenizer until the TextTokenizer lands: it matches the BOS and EOS texts as
their ids (§6.1's special tokens) and encodes the rest as §6 does."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pxgl.tokenizer import Tokenizer
from pxgl.transformer.members import write_random_model

from tests.reference import transformer as oracle
from tests.test_transformer_engine import oracle_reads, random_architecture

TEXT = "hello there, the pixel model chats with you. how are you? fine, thanks!\n" * 20
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
HEAD_GAIN = 4.0


@dataclass(frozen=True)
class ChatTokenizer:
    """§6's tokenizer with §6.1's chat attributes: `bos_token`/`eos_token` texts are their ids in the text."""

    inner: Tokenizer
    chat_template: str | None
    bos_id: int | None
    eos_ids: tuple[int, ...]
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = True

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    def token_bytes(self, token: int) -> bytes:
        return self.inner.token_bytes(token)

    def encode(self, text: str) -> list[int]:
        named = ((self.bos_token, self.bos_id), (self.eos_token, self.eos_ids[:1]))
        specials = {t: i for t, i in named if t and i not in (None, ())}
        ids: list[int] = []
        while text:
            found = [(text.find(t), t) for t in specials if text.find(t) >= 0]
            if not found:
                return ids + self.inner.encode(text)
            at, special = min(found)
            ids += self.inner.encode(text[:at]) if at else []
            value = specials[special]
            ids += list(value) if isinstance(value, tuple) else [value]
            text = text[at + len(special) :]
        return ids


@dataclass(frozen=True)
class Member:
    path: Path
    meta: dict
    params: dict
    tokenizer: Tokenizer
    bos: int

    def greedy(self, ids: Sequence[int], steps: int) -> list[int]:
        """The oracle's greedy tokens after `ids`, up to `steps`, or fewer where a step is a near-tie (§14.4's
        τ: the GPU may take either)."""
        sequence, tokens = list(ids), []
        for _ in range(steps):
            logits = oracle.forward(self.meta, self.params, sequence)[-1:]
            if oracle.near_tie(logits)[0]:
                break
            tokens.append(int(np.argmax(logits[0])))
            sequence.append(tokens[-1])
        return tokens


def write_member(folder: Path, rng: np.random.Generator, context: int = 128, name: str = "member") -> Member:
    """A random member of ≤ 64 width whose vocabulary is a tokenizer's trained on TEXT; its bos an id of it."""
    tokenizer = Tokenizer.train(TEXT, 300)
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
    bos = int(rng.integers(1, tokenizer.vocab_size))
    write_random_model(path, architecture, "q8", int(rng.integers(1 << 32)), tokenizer=tokenizer, bos=bos,
                       head_gain=HEAD_GAIN)  # fmt: skip
    meta, params = oracle_reads(path)
    return Member(path, meta, params, tokenizer, bos)
