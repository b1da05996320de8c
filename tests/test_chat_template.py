"""Chat templates (docs/FORMATS.md §16.1): real models' templates (tests/fixtures/chat_templates/, from llama.cpp)
rendered by pxgl equal `transformers`' apply_chat_template(tokenize=False) on random multi-turn conversations
(Unicode, whitespace, template-like text in the messages), add_generation_prompt both ways; a template's
errors are one ChatTemplateError (hostile templates: tests/test_chat_hostile.py)."""

from pathlib import Path

import numpy as np
import pytest
from pxgl.chat.template import ChatTemplate, ChatTemplateError

TEMPLATES = sorted((Path(__file__).parent / "fixtures" / "chat_templates").glob("*.jinja"))
BOS, EOS = "<|bos|>", "<|eos|>"
WORDS = ["hello", "pixel", "ü", "日本語", "🙂", "  ", "\n", "\t", "{{ x }}", "{% if %}", "<|im_end|>", "[INST]", "'"]
NO_SYSTEM = {"google-gemma-2-2b-it"}
"""Templates that refuse a system message (raise_exception)."""


def hf_tokenizer(template: str):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE()), bos_token=BOS, eos_token=EOS, chat_template=template
    )


def random_text(rng: np.random.Generator) -> str:
    return "".join(rng.choice(WORDS, int(rng.integers(1, 12))).tolist()).strip() or "x"


def random_chat(rng: np.random.Generator, system: bool) -> list[dict[str, str]]:
    """A system message (where allowed) then user and assistant alternating, ending with either."""
    messages = [{"role": "system", "content": random_text(rng)}] if system and rng.random() < 0.6 else []
    for turn in range(int(rng.integers(1, 7))):
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": random_text(rng)})
    return messages


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_real_templates_render_as_transformers_renders_them(path: Path, rng):
    source = path.read_text(encoding="utf-8")
    ours, theirs = ChatTemplate(source, path.name), hf_tokenizer(source)
    for _ in range(12):
        messages = random_chat(rng, path.stem not in NO_SYSTEM)
        for generation in (True, False):
            expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            assert ours.render(messages, generation, BOS, EOS) == expected, messages


def test_a_template_raising_is_one_error_with_its_message(rng):
    (gemma,) = [p for p in TEMPLATES if p.stem == "google-gemma-2-2b-it"]
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        ChatTemplate(gemma.read_text(), gemma.name).render([{"role": "system", "content": random_text(rng)}])


EXTENSIONS = (
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
    "{% if m.role == 'system' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}"
    "{% generation %}{{ m.content }}{% endgeneration %}|{{ m | tojson(indent=2, sort_keys=True) }}{% endfor %}"
    "{{ ns.n }}{{ dict(a=1) | tojson }}{{ dict.fromkeys(['x']) | tojson }}{{ strftime_now('%Y') }}"
    "{{ messages[0].content | tojson(ensure_ascii=True) }}{{ bos_token ~ eos_token }}"
)


def test_transformers_extensions_render_as_transformers_renders_them(rng):
    """The generation tag, loop controls, namespace, dict, tojson's arguments, strftime_now, the BOS/EOS texts."""
    for _ in range(12):
        messages = random_chat(rng, system=True)
        expected = hf_tokenizer(EXTENSIONS).apply_chat_template(messages, tokenize=False)
        assert ChatTemplate(EXTENSIONS, "t").render(messages, False, BOS, EOS) == expected, messages
