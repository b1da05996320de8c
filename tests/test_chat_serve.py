"""/v1/chat/completions (docs/FORMATS.md §16.3) against a real `pxgl serve` subprocess, through the `openai`
package's client: plain and streamed answers equal the oracle's greedy answer to the prompt `transformers`
renders for the conversation with the model's own template (its tokenizer's, §6.1), a second turn reuses the
first's cached positions, and unsupported fields are 400s naming them."""

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from tests.chat_models import Member, write_member
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
    member = write_member(folder, seed, name=NAME)
    args = ("-x", "passes", "--slots", "2")
    url, process = start_server(folder, {NAME: member.path}, *args, key=None)
    yield Chat(url, member, rng)
    status, stderr = stop_server(process)
    assert status == 0 and "Traceback" not in stderr, stderr


def client(chat: Chat):
    from openai import OpenAI

    return OpenAI(base_url=chat.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def reference(member: Member):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(member.folder))


def reference_ids(member: Member, messages: list[dict]) -> list[int]:
    """The prompt's ids as transformers makes them from the model folder's tokenizer files (the template
    writes the BOS), bos first as §14.4 puts it."""
    ids = reference(member).apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return ids if ids[:1] == [member.bos] else [member.bos, *ids]


def expected_answer(member: Member, messages: list[dict]) -> tuple[str, str, int, int] | None:
    """The oracle's greedy answer: its text as transformers decodes it (the EOS id not in it), finish reason,
    completion tokens and the prompt's tokens; None where a step is a near-tie."""
    ids = reference_ids(member, messages)
    tokens = member.greedy(ids, MAX_TOKENS)
    if not member.ended(tokens, MAX_TOKENS):
        return None
    at_eos = tokens[-1] in member.tokenizer.eos_ids
    kept = tokens[:-1] if at_eos else tokens
    return reference(member).decode(kept), "stop" if at_eos else "length", len(kept), len(ids)


def health(chat: Chat) -> dict:
    """The model's counters once no request is in flight (an answer ended by EOS may still run a step or more
    before the engine sees it called off)."""
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(chat.url + "/health", timeout=60) as response:
            state = json.loads(response.read())["models"][NAME]
        if state["in_flight"] == 0 or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def test_the_openai_client_gets_the_oracles_answer_plain_and_streamed(chat):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there 🙂"}]
    expected = expected_answer(chat.member, messages)
    answer = client(chat).chat.completions.create(model=NAME, messages=messages, max_tokens=MAX_TOKENS, temperature=0)
    (choice,) = answer.choices
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant"
    if expected is not None:
        text, finish, completion_tokens, prompt_tokens = expected
        assert (choice.message.content, choice.finish_reason) == (text, finish)
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt_tokens, completion_tokens)
    stream = client(chat).chat.completions.create(
        model=NAME, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + [choice.finish_reason]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content


def test_a_second_turn_reuses_the_first_turns_positions(chat):
    # a first turn longer than what the second adds: the prefix cache takes a slot sharing half the prompt (§12)
    first = [{"role": "user", "content": "hello there, how are you? " * 4}]
    answer = client(chat).chat.completions.create(model=NAME, messages=first, max_tokens=MAX_TOKENS, temperature=0)
    before = health(chat)
    second = [*first, {"role": "assistant", "content": answer.choices[0].message.content}]
    second.append({"role": "user", "content": "fine, thanks!"})
    expected = expected_answer(chat.member, second)
    again = client(chat).chat.completions.create(model=NAME, messages=second, max_tokens=MAX_TOKENS, temperature=0)
    assert expected is None or again.choices[0].message.content == expected[0]
    after = health(chat)
    reused = after["positions_reused"] - before["positions_reused"]
    computed = after["positions_computed"] - before["positions_computed"]
    prompt_tokens, first_tokens = again.usage.prompt_tokens, len(reference_ids(chat.member, first))
    assert reused >= first_tokens - 2, (reused, first_tokens)
    decoded = computed - (prompt_tokens - reused)
    if again.choices[0].finish_reason == "length":
        assert decoded == MAX_TOKENS - 1
    else:  # the EOS id was chosen at step completion_tokens; the engine may run steps until it sees the end
        assert again.usage.completion_tokens <= decoded <= MAX_TOKENS - 1


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


def test_include_usage_ends_a_stream_with_the_usage_chunk_for_chat_and_completions(chat):
    def counts(usage) -> tuple[int, int, int]:
        return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens

    messages = [{"role": "user", "content": "hello there"}]
    asked = {"model": NAME, "max_tokens": MAX_TOKENS, "temperature": 0}
    plain = client(chat).chat.completions.create(messages=messages, **asked)
    usage = {"include_usage": True}
    *answer, last = client(chat).chat.completions.create(messages=messages, stream=True, stream_options=usage, **asked)
    assert last.choices == [] and counts(last.usage) == counts(plain.usage)
    assert all(c.usage is None and len(c.choices) == 1 for c in answer)
    assert "".join(c.choices[0].delta.content or "" for c in answer) == plain.choices[0].message.content
    without = client(chat).chat.completions.create(
        messages=messages, stream=True, stream_options={"include_usage": False}, **asked
    )
    assert all(len(c.choices) == 1 and c.usage is None for c in without)
    plain_text = client(chat).completions.create(prompt="hello", **asked)
    *texts, last = client(chat).completions.create(prompt="hello", stream=True, stream_options=usage, **asked)
    assert last.choices == [] and counts(last.usage) == counts(plain_text.usage)
    assert "".join(c.choices[0].text for c in texts) == plain_text.choices[0].text


@pytest.mark.parametrize(
    "options, stream, match",
    [
        ({"include_usage": True}, False, "only allowed with"),
        ({}, False, "only allowed with"),
        ({"include_usage": "yes"}, True, "must be true or false"),
        ({"include_obfuscation": True}, True, "serves only include_usage"),
    ],
)
def test_stream_options_off_a_stream_or_not_include_usage_are_400s(chat, options, stream, match):
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match=match) as refused:
        client(chat).chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            stream=stream,
            stream_options=options,
        )
    assert refused.value.body["param"] == "stream_options", refused.value.body


def test_content_as_text_parts_is_their_text_joined_and_other_parts_are_400s(chat):
    from openai import BadRequestError

    text = "hello there 🙂"
    cut = int(chat.rng.integers(1, len(text)))
    print(f"cut={cut}")
    parts = [{"type": "text", "text": text[:cut]}, {"type": "text", "text": text[cut:]}]
    expected = expected_answer(chat.member, [{"role": "user", "content": text}])
    answer = client(chat).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": parts}], max_tokens=MAX_TOKENS, temperature=0
    )
    if expected is not None:
        assert (answer.choices[0].message.content, answer.usage.prompt_tokens) == (expected[0], expected[3])
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(BadRequestError, match=r"messages\[0\]\.content\[1\]\.type 'image_url'"):
        client(chat).chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": [parts[0], image]}], max_tokens=2
        )
