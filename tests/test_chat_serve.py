"""/v1/chat/completions (docs/FORMATS.md §16.3) against a real `pxgl serve` subprocess, through the `openai`
package's client: plain and streamed answers equal the oracle's greedy answer to the prompt `transformers`
renders for the conversation, a second turn reuses the first's cached positions, and unsupported fields are
400s naming them. The member's version-0 tokenizer has no template: the server is given one (--chat-template)."""

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from tests.chat_models import TEMPLATE, Member, write_member
from tests.test_serve import start_server, stop_server

NAME = "member"
MAX_TOKENS = 8


@dataclass(frozen=True)
class Chat:
    url: str
    member: Member
    rng: np.random.Generator


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> Iterator[Chat]:
    folder = tmp_path_factory.mktemp("chat-serve")
    seed = int(os.environ.get("PXGL_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"PXGL_TEST_SEED={seed}")
    rng = np.random.default_rng(seed)
    member = write_member(folder, rng, name=NAME)
    (folder / "chat.jinja").write_text(TEMPLATE)
    args = ("--chat-template", "chat.jinja", "-x", "passes", "--slots", "2")
    url, process = start_server(folder, {NAME: member.path}, *args, key=None)
    yield Chat(url, member, rng)
    status, stderr = stop_server(process)
    assert status == 0 and "Traceback" not in stderr, stderr


def client(chat: Chat):
    from openai import OpenAI

    return OpenAI(base_url=chat.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def reference_ids(member: Member, messages: list[dict]) -> list[int]:
    """The prompt as transformers renders it (no BOS or EOS texts: the tokenizer has none), bos first."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    renderer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), chat_template=TEMPLATE)
    text = renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return [member.bos, *member.tokenizer.encode(text)]


def expected_answer(member: Member, messages: list[dict]) -> tuple[str | None, int]:
    """The oracle's greedy text (None where a step is a near-tie) and the prompt's tokens."""
    ids = reference_ids(member, messages)
    tokens = member.greedy(ids, MAX_TOKENS)
    return (member.tokenizer.decode(tokens) if len(tokens) == MAX_TOKENS else None), len(ids)


def health(chat: Chat) -> dict:
    with urllib.request.urlopen(chat.url + "/health", timeout=60) as response:
        return json.loads(response.read())["models"][NAME]


def test_the_openai_client_gets_the_oracles_answer_plain_and_streamed(chat):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there 🙂"}]
    text, prompt_tokens = expected_answer(chat.member, messages)
    answer = client(chat).chat.completions.create(model=NAME, messages=messages, max_tokens=MAX_TOKENS, temperature=0)
    (choice,) = answer.choices
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert text is None or choice.message.content == text
    assert answer.usage.prompt_tokens == prompt_tokens and answer.usage.completion_tokens == MAX_TOKENS
    stream = client(chat).chat.completions.create(
        model=NAME, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content


def test_a_second_turn_reuses_the_first_turns_positions(chat):
    # a first turn longer than what the second adds: the prefix cache takes a slot sharing half the prompt (§12)
    first = [{"role": "user", "content": "hello there, how are you? " * 4}]
    answer = client(chat).chat.completions.create(model=NAME, messages=first, max_tokens=MAX_TOKENS, temperature=0)
    before = health(chat)
    second = [*first, {"role": "assistant", "content": answer.choices[0].message.content}]
    second.append({"role": "user", "content": "fine, thanks!"})
    text, prompt_tokens = expected_answer(chat.member, second)
    again = client(chat).chat.completions.create(model=NAME, messages=second, max_tokens=MAX_TOKENS, temperature=0)
    assert text is None or again.choices[0].message.content == text
    after = health(chat)
    reused = after["positions_reused"] - before["positions_reused"]
    computed = after["positions_computed"] - before["positions_computed"]
    first_tokens = len(reference_ids(chat.member, first))
    assert reused >= first_tokens - 2, (reused, first_tokens)
    assert computed == prompt_tokens - reused + MAX_TOKENS - 1


@pytest.mark.parametrize(
    "extra, param",
    [({"tools": []}, "tools"), ({"logprobs": True}, "logprobs"), ({"n": 2}, "n"), ({"prompt": "x"}, "prompt")],
)
def test_unsupported_fields_are_400s_naming_them(chat, extra, param):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as refused:
        client(chat).chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_body=extra
        )
    assert refused.value.status_code == 400 and refused.value.body["param"] == param, refused.value.body


def test_a_conversation_past_the_context_and_content_not_text_are_400s(chat):
    from openai import BadRequestError

    long = [{"role": "user", "content": "hello there " * 200}]
    with pytest.raises(BadRequestError, match="past the context"):
        client(chat).chat.completions.create(model=NAME, messages=long, max_tokens=2)
    with pytest.raises(BadRequestError, match=r"messages\[0\]\.content must be a string"):
        client(chat).chat.completions.create(model=NAME, messages=[{"role": "user", "content": 3}], max_tokens=2)
