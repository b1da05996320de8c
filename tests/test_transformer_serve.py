"""`pxgl serve` on version 2 (docs/FORMATS.md §12's continuous batching and prefix cache): one real Uvicorn in
this process for the module, serving a random member (with a tokenizer and a bos) on the passes executor, the
executor wrapped to record every call, so the tests see which positions were computed and in what order;
answers against the oracle (tests/reference/transformer.py: greedy tokens and §11's sampler replayed). One
seed for the module: the member and every test's prompts (PXGL_TEST_SEED replays it)."""

import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from pxgl.loading import open_model
from pxgl.serve.app import Mounted, create_app
from pxgl.serve.batching import Resident, SlotWorker, build_resident
from pxgl.serve.limits import Limits
from pxgl.serve.server import bind, uvicorn_config
from pxgl.tokenizer import Tokenizer
from pxgl.transformer.members import write_random_model

from tests.cli_process import pxgl
from tests.reference import transformer as oracle
from tests.test_transformer_engine import oracle_reads, random_architecture

TEXT = "the pixel model reads pixels and writes pixels; every weight is a byte of an image.\n" * 20
HEAD_GAIN = 4.0
NAME = "member"
GATE_TIMEOUT_S = 60
CONTEXT = 64
SLOTS = 2


@dataclass
class Member:
    meta: dict
    params: dict
    runnable: Any
    tokenizer: Tokenizer
    bos: int

    @property
    def vocab(self) -> int:
        return self.meta["vocab_size"]


def make_member(folder, rng: np.random.Generator, executor: str) -> Member:
    tokenizer = Tokenizer.train(TEXT, 300)
    architecture = random_architecture(rng, vocab_size=tokenizer.vocab_size, context_length=CONTEXT)
    path = folder / f"{NAME}.pxi"
    bos = int(rng.integers(1, tokenizer.vocab_size))
    seed = int(rng.integers(1 << 32))
    write_random_model(path, architecture, "q8", seed, tokenizer=tokenizer, bos=bos, head_gain=HEAD_GAIN)
    meta, params = oracle_reads(path)
    return Member(meta, params, open_model(path, executor), tokenizer, bos)


def random_prompt(rng: np.random.Generator, member: Member, low: int, high: int) -> list[int]:
    """Ids of `low`..`high`-1 tokens not beginning with bos (the server puts bos before such a prompt)."""
    prompt = rng.integers(0, member.vocab, int(rng.integers(low, high))).tolist()
    if prompt[0] == member.bos:
        prompt[0] = (member.bos + 1) % member.vocab
    return prompt


def oracle_replay(member: Member, prompt: Sequence[int], got: list[str], choice: dict, row: int = 0) -> int:
    """How many of `got` (token texts of a completion of `prompt`, bos first) the oracle replays: §11's choice
    (greedy, or the draw u(seed, row, step) through top-k and top-p) over the repetition-penalised logits of
    the sequence so far; a mismatch fails, an excused step (a near-tie, a draw at a boundary) ends the
    comparison; returns the steps compared. A sampled first step is excused now and then by a top-k cut whose
    two logits lie within 1e-5 · (1 + |top|) (seed 816702855: ranks 40 and 41 of a 300-id member 8e-4 apart
    under a top logit of 107), so a test of sampled requests requires steps compared over all of them."""
    sequence = list(prompt) if prompt[:1] == [member.bos] else [member.bos, *prompt]
    penalty = choice.get("repetition_penalty", 1.0)
    for step, text in enumerate(got):
        logits = oracle.forward(member.meta, member.params, sequence)[-1]
        if penalty != 1.0:
            logits = oracle.penalize(logits, sequence, penalty)
        token, excused = oracle.choose(
            logits,
            choice.get("temperature", 1.0),
            choice.get("top_k", 0),
            choice.get("top_p", 1.0),
            choice.get("seed", 0),
            row,
            step,
        )
        if excused:
            return step
        assert text == token_texts(member, [token])[0], f"step {step}: {text!r}, the oracle's {token}"
        sequence.append(token)
    return len(got)


def greedy_replay(member: Member, prompt: Sequence[int], got: list[str]) -> None:
    assert oracle_replay(member, prompt, got, {"temperature": 0}), "the first step is a near-tie: nothing compared"


@dataclass
class Recording:
    """An executor with every call logged in order, the positions computed counted and the ids it chose per
    slot; `before_decode` runs before each decode (a test's hook to hold a step until something happened)."""

    inner: Any
    calls: list[tuple] = field(default_factory=list)
    computed: int = 0
    chosen: dict[int, list[int]] = field(default_factory=dict)
    before_decode: Any = None

    def truncate(self, slot: int, n: int) -> None:
        self.calls.append(("truncate", slot, n))
        self.inner.truncate(slot, n)

    def prefill(self, slot: int, tokens: Sequence[int], choice: Any = None, step: int = 0) -> Any:
        self.calls.append(("prefill", slot, len(tokens)))
        self.computed += len(tokens)
        prefill = self.inner.prefill(slot, tokens, choice, step)
        self.chosen[slot] = [int(prefill.chosen.ids[0, 0])]
        return prefill

    def decode(self, slots: Sequence[int], choices: Sequence[Any], steps: Sequence[int], count: int) -> Any:
        if self.before_decode is not None:
            self.before_decode()
        self.calls.append(("decode", tuple(slots)))
        self.computed += len(slots) * count
        decoded = self.inner.decode(slots, choices, steps, count)
        for column, slot in enumerate(slots):
            self.chosen[slot] += decoded.ids[:, column].tolist()
        return decoded

    def close(self) -> None:
        self.inner.close()


@dataclass
class Serving:
    url: str
    worker: SlotWorker
    executor: Recording
    member: Member
    seed: int


@pytest.fixture(scope="module", params=["passes", "fused"])
def served(tmp_path_factory, request: pytest.FixtureRequest) -> Iterator[Serving]:
    """A server of a random member on a free port, in this process, with 2 slots; its warm-up forgotten."""
    import uvicorn

    seed = int(os.environ.get("PXGL_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    member = make_member(tmp_path_factory.mktemp("serve2"), np.random.default_rng(seed), request.param)
    made: list[Recording] = []

    def build(runnable: Any, device: int | None, slots: int) -> Resident:
        resident = build_resident(runnable, device, slots)
        made.append(Recording(resident.executor))
        return Resident(made[0], resident.name, resident.engines, resident.close)

    limits = Limits(slots=SLOTS)
    worker = SlotWorker(NAME, member.runnable, limits, build=build)
    worker.start()
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(create_app([Mounted(NAME, member.runnable, worker)], limits), limits))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        host, port = listener.getsockname()[:2]
        yield Serving(f"http://{host}:{port}", worker, made[0], member, seed)
    finally:
        server.should_exit = True
        thread.join()
        listener.close()
        worker.stop()


@pytest.fixture
def rng(served: Serving, request: pytest.FixtureRequest) -> np.random.Generator:
    """The module's seed, reported on failure, drawn apart per test."""
    request.node.user_properties.append(("seed", served.seed))
    return np.random.default_rng([served.seed, sum(request.node.name.encode())])


def post(url: str, path: str, body: dict) -> tuple[int, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def get(url: str, path: str) -> dict:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def streamed(url: str, body: dict, events: list[tuple[float, dict]], first: threading.Event | None = None) -> None:
    """A streamed completion's events, each with the monotonic time it arrived; `first` set at the first."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", "/v1/completions", json.dumps(body | {"stream": True}))
        response = connection.getresponse()
        assert response.status == 200, response.read()
        while line := response.readline():
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                events.append((time.monotonic(), json.loads(line[6:])))
                if first is not None:
                    first.set()
    finally:
        connection.close()


def streamed_tops(events: list[tuple[float, dict]]) -> list[dict]:
    return [t for _, e in events for t in (e["choices"][0]["logprobs"] or {}).get("top_logprobs", [])]


def token_texts(member: Member, ids: Sequence[int]) -> list[str]:
    return [member.tokenizer.token_bytes(i).decode("utf-8", "replace") for i in ids]


def streamed_tokens(events: list[tuple[float, dict]]) -> list[str]:
    return [t for _, e in events for t in (e["choices"][0]["logprobs"] or {}).get("tokens", [])]


def joined_mid_generation(served: Serving, monkeypatch, first: dict, second: Callable[[], Any]) -> tuple:
    """`first` streamed; `second()` sent once first's first token is in, while the first's third decode step
    waits until the second request has been submitted (so the first cannot end before it arrives): the first's
    events, what `second()` gave, and the executor's calls meanwhile."""
    arrived = threading.Event()
    submitted = []
    submit = served.worker.submit

    def counted_submit(job: Any) -> None:
        submit(job)
        submitted.append(job)
        if len(submitted) == 2:
            arrived.set()

    def hold_third_step() -> None:
        if sum(call[0] == "decode" for call in served.executor.calls) == 2:
            assert arrived.wait(GATE_TIMEOUT_S), "the second request never arrived"

    monkeypatch.setattr(served.worker, "submit", counted_submit)
    monkeypatch.setattr(served.executor, "before_decode", hold_third_step)
    served.executor.calls.clear()
    first_events: list[tuple[float, dict]] = []
    started = threading.Event()
    running = threading.Thread(target=streamed, args=(served.url, first, first_events, started))
    running.start()
    assert started.wait(GATE_TIMEOUT_S), "the first request's first token never came"
    answer = second()
    running.join()
    monkeypatch.undo()
    return first_events, answer, list(served.executor.calls)


def streaming(served: Serving, body: dict) -> Callable[[], list[tuple[float, dict]]]:
    def send() -> list[tuple[float, dict]]:
        events: list[tuple[float, dict]] = []
        streamed(served.url, body, events)
        return events

    return send


def solo(served: Serving, body: dict) -> list[str]:
    alone: list[tuple[float, dict]] = []
    streamed(served.url, body, alone)
    return streamed_tokens(alone)


def test_a_request_arriving_mid_generation_joins_between_steps_and_both_equal_their_solo_runs(served, rng, monkeypatch):
    member = served.member
    first_prompt = random_prompt(rng, member, 4, 12)
    second_prompt = random_prompt(rng, member, 4, 12)
    common = {"model": NAME, "temperature": 0, "logprobs": 0, "cache_prompt": False}
    first_body = common | {"prompt": first_prompt, "max_tokens": 16}
    second_body = common | {"prompt": second_prompt, "max_tokens": 6, "logprobs": 2}
    first_events, second_events, calls = joined_mid_generation(
        served, monkeypatch, first_body, streaming(served, second_body)
    )
    prefills = [i for i, call in enumerate(calls) if call[0] == "prefill"]
    decodes = [call[1] for call in calls if call[0] == "decode"]
    assert len(prefills) == 2 and len(decodes) == 15, calls
    both = [slots for slots in decodes if len(slots) == 2]
    assert len(both) == 5, f"the second request's steps ran alone, not beside the first's: {calls}"
    assert second_events[0][0] < first_events[-1][0], "the second request's first token came after the first ended"
    together = [streamed_tokens(first_events), streamed_tokens(second_events)]
    assert [len(t) for t in together] == [16, 6]
    assert together == [solo(served, first_body), solo(served, second_body)], "batched answers differ from solo"
    alternatives = [[len(top) for top in streamed_tops(events)] for events in (first_events, second_events)]
    # two alternatives of one text (bytes that are not UTF-8 alone) share a key of OpenAI's top_logprobs object
    asked = alternatives[0] == [0] * 16 and len(alternatives[1]) == 6 and all(1 <= n <= 2 for n in alternatives[1])
    assert asked, f"each request gets the alternatives it asked for: {alternatives}"
    greedy_replay(member, first_prompt, together[0])
    greedy_replay(member, second_prompt, together[1])


def test_sampled_requests_with_their_own_settings_join_mid_generation_and_replay_alone_and_in_the_oracle(
    served, rng, monkeypatch
):
    member = served.member
    prompts = [random_prompt(rng, member, 4, 12) for _ in range(2)]
    choices = [
        {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": int(rng.integers(1 << 32)), "repetition_penalty": 1.3},
        {"temperature": 1.2, "seed": int(rng.integers(1 << 32))},
    ]
    bodies = [
        {"model": NAME, "prompt": prompt, "max_tokens": tokens, "logprobs": 0, "cache_prompt": False} | choice
        for prompt, tokens, choice in zip(prompts, (14, 8), choices, strict=True)
    ]
    second = streaming(served, bodies[1])
    first_events, second_events, calls = joined_mid_generation(served, monkeypatch, bodies[0], second)
    assert sum(len(call[1]) == 2 for call in calls if call[0] == "decode") == 7, calls
    together = [streamed_tokens(first_events), streamed_tokens(second_events)]
    assert together == [solo(served, body) for body in bodies], "batched sampled answers differ from solo"
    compared = [oracle_replay(member, *replayed) for replayed in zip(prompts, together, choices, strict=True)]
    assert sum(compared), "both first steps are excused: nothing compared"


def test_a_trace_between_steps_leaves_the_running_request_alone(served, rng, monkeypatch):
    member = served.member
    prompt = random_prompt(rng, member, 4, 12)
    body = {"model": NAME, "prompt": prompt, "max_tokens": 10, "temperature": 0, "logprobs": 0, "cache_prompt": False}
    text = TEXT[: int(rng.integers(8, 40))]
    first_events, (status, traced), calls = joined_mid_generation(
        served, monkeypatch, body, lambda: post(served.url, "/v1/trace", {"model": NAME, "prompt": text})
    )
    assert status == 200 and traced["html"] and traced["view"], traced
    kinds = [call[0] for call in calls]
    assert kinds == ["truncate", "prefill"] + ["decode"] * 9, f"the trace touched the served executor: {calls}"
    assert streamed_tokens(first_events) == solo(served, body), "a trace between its steps changed an answer"


def test_a_request_of_two_prompts_runs_them_in_two_slots_drawing_rows_0_and_1(served, rng):
    member = served.member
    prompts = [random_prompt(rng, member, 4, 12), [member.bos, *random_prompt(rng, member, 4, 12)]]
    choice = {"temperature": 0.9, "top_p": 0.95, "seed": int(rng.integers(1 << 32))}
    body = {"model": NAME, "prompt": prompts, "max_tokens": 6, "logprobs": 0, "cache_prompt": False} | choice
    served.executor.calls.clear()
    status, answer = post(served.url, "/v1/completions", body)
    assert status == 200, answer
    decodes = [call[1] for call in served.executor.calls if call[0] == "decode"]
    assert len(decodes) == 5 and all(len(slots) == 2 for slots in decodes), served.executor.calls
    prefilled = sorted(call[2] for call in served.executor.calls if call[0] == "prefill")
    expected = sorted([1 + len(prompts[0]), len(prompts[1])])  # bos before the first, not twice in the second
    assert prefilled == expected and answer["usage"]["prompt_tokens"] == sum(expected), (prefilled, answer)
    compared = [
        oracle_replay(member, prompt, one["logprobs"]["tokens"], choice, row=row)
        for row, (prompt, one) in enumerate(zip(prompts, answer["choices"], strict=True))
    ]
    assert sum(compared), "both first steps are excused: nothing compared"


def test_a_second_chat_turn_computes_only_its_new_positions(served, rng):
    member = served.member
    prompt = random_prompt(rng, member, 8, 20)
    greedy = {"model": NAME, "temperature": 0, "logprobs": 0}
    served.executor.calls.clear()
    status, first = post(served.url, "/v1/completions", greedy | {"prompt": prompt, "max_tokens": 8})
    assert status == 200, first
    greedy_replay(member, prompt, first["choices"][0]["logprobs"]["tokens"])
    (slot,) = [call[1] for call in served.executor.calls if call[0] == "prefill"]
    answer = served.executor.chosen[slot]  # the answer's ids, as the executor chose them
    assert len(answer) == 8
    other = random_prompt(rng, member, 6, 7)  # shares only bos: takes the other slot
    assert post(served.url, "/v1/completions", greedy | {"prompt": other, "max_tokens": 3})[0] == 200
    more = rng.integers(0, member.vocab, int(rng.integers(1, 6))).tolist()
    second_prompt = prompt + answer + more
    reused_before = get(served.url, "/health")["models"][NAME]["positions_reused"]
    before = served.executor.computed
    status, second = post(served.url, "/v1/completions", greedy | {"prompt": second_prompt, "max_tokens": 4})
    assert status == 200, second
    computed = served.executor.computed - before
    assert computed == (1 + len(more)) + 3, f"{computed} positions computed for the second turn"
    health = get(served.url, "/health")["models"][NAME]
    reused = 1 + len(prompt) + len(answer) - 1  # bos, and not the answer's last token: chosen, never run
    assert health["positions_reused"] - reused_before == reused and health["slots"] == SLOTS, health
    assert second["usage"]["prompt_tokens"] == 1 + len(second_prompt), second["usage"]
    greedy_replay(member, second_prompt, second["choices"][0]["logprobs"]["tokens"])
    before = served.executor.computed
    body = greedy | {"prompt": second_prompt, "max_tokens": 4, "cache_prompt": False}
    status, fresh = post(served.url, "/v1/completions", body)
    assert served.executor.computed - before == 1 + len(second_prompt) + 3
    greedy_replay(member, second_prompt, fresh["choices"][0]["logprobs"]["tokens"])


def test_context_overflow_and_too_many_prompts_are_400s_naming_the_field(served, rng):
    member = served.member
    n = int(rng.integers(CONTEXT - 12, CONTEXT - 4))
    prompt = random_prompt(rng, member, n, n + 1)
    served.executor.calls.clear()
    too_long = {"model": NAME, "prompt": prompt, "max_tokens": CONTEXT - n}  # bos takes a position too
    status, answer = post(served.url, "/v1/completions", too_long)
    error = answer["error"]
    assert status == 400 and error["param"] == "prompt" and error["code"] == "context_length_exceeded", answer
    message = f"{n + 1} tokens + max_tokens {CONTEXT - n} = {CONTEXT + 1} positions, past the context of {CONTEXT}"
    assert message in error["message"], error
    status, answer = post(served.url, "/v1/completions", {"model": NAME, "prompt": [[1], [2], [3]]})
    assert status == 400 and f"past the {SLOTS} KV-cache slots" in answer["error"]["message"], answer
    fits = {"model": NAME, "prompt": prompt, "max_tokens": CONTEXT - n - 1, "temperature": 0}
    status, answer = post(served.url, "/v1/completions", fits)
    assert status == 200 and answer["usage"]["completion_tokens"] == CONTEXT - n - 1, answer
    prefills = [call for call in served.executor.calls if call[0] == "prefill"]
    assert len(prefills) == 1, f"a refused request reached the executor: {prefills}"


def test_serving_a_version_2_model_on_pxvm_is_one_line_and_status_2(served):
    if served.member.runnable.executor != "passes":
        pytest.skip("one executor's member is enough")
    source = served.member.runnable.model.source
    run = pxgl("serve", "-m", source, "-x", "pxvm", "--port", "0", cwd=Path(source).parent)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "the pxvm executor holds one sequence" in run.stderr and "-x passes or -x fused" in run.stderr
