"""`pxgl serve` on version 2 (docs/FORMATS.md §12's continuous batching and prefix cache): a real Uvicorn in
this process, its model's executor wrapped to record every call, so the tests see which positions were
computed and in what order; answers against the oracle's greedy tokens (tests/reference/transformer.py).
Random members, seed printed."""

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from pxgl.serve.app import Mounted, create_app
from pxgl.serve.batching import Resident, SlotWorker
from pxgl.serve.limits import Limits
from pxgl.serve.server import bind, uvicorn_config
from pxgl.tokenizer import Tokenizer
from pxgl.transformer import read_transformer, write_random_transformer

from tests.reference import transformer as oracle
from tests.test_transformer_engine import oracle_reads, random_architecture

TEXT = "the pixel model reads pixels and writes pixels; every weight is a byte of an image.\n" * 20
HEAD_GAIN = 4.0
NAME = "member"
GATE_TIMEOUT_S = 60


@dataclass
class Member:
    meta: dict
    params: dict
    runnable: Any
    tokenizer: Tokenizer

    @property
    def vocab(self) -> int:
        return self.meta["vocab_size"]

    @property
    def context(self) -> int:
        return self.meta["context_length"]


def make_member(tmp_path, rng: np.random.Generator, context: int = 64, bos: int | None = None) -> Member:
    tokenizer = Tokenizer.train(TEXT, 300)
    architecture = random_architecture(rng, vocab_size=tokenizer.vocab_size, context_length=context)
    path = tmp_path / f"{NAME}.pxi"
    write_random_transformer(path, architecture, "q8", seed=int(rng.integers(1 << 32)), bos=bos, head_gain=HEAD_GAIN)
    meta, params = oracle_reads(path)
    spec, pixels = read_transformer(path)
    model = SimpleNamespace(spec=spec, pixels=pixels, tokenizer=tokenizer, source=str(path))
    return Member(meta, params, SimpleNamespace(model=model, executor="passes", program=None), tokenizer)


def oracle_greedy(member: Member, prompt: Sequence[int], steps: int) -> tuple[list[int], int]:
    """The oracle's greedy tokens, and how many steps of them count: up to and including a near-tie step,
    where either token is right."""
    sequence = list(prompt)
    for step in range(steps):
        logits = oracle.forward(member.meta, member.params, sequence)[-1:]
        sequence.append(int(logits[0].argmax()))
        if oracle.near_tie(logits)[0]:
            return sequence[len(prompt) :], step + 1
    return sequence[len(prompt) :], steps


class OracleSlots:
    """The executor API (COMMON.md) over the oracle: each slot's run tokens, every step recomputed by the
    oracle over its whole sequence; greedy only (it refuses what it cannot honour)."""

    def __init__(self, member: Member, slots: int) -> None:
        self.member = member
        self.tokens: list[list[int]] = [[] for _ in range(slots)]
        self.pending: list[int | None] = [None] * slots
        self.unhonoured: list[Any] = []
        """Choices it cannot make (sampled, penalised), answered greedily."""

    def truncate(self, slot: int, n: int) -> None:
        assert 0 <= n <= len(self.tokens[slot])
        self.tokens[slot] = self.tokens[slot][:n]
        self.pending[slot] = None

    def _choose(self, slot: int, choice: Any) -> SimpleNamespace:
        if choice.temperature != 0 or choice.repetition_penalty != 1:
            self.unhonoured.append(choice)  # the warm-up's; a request's fails the test (serving)
        logits = oracle.forward(self.member.meta, self.member.params, self.tokens[slot])[-1].astype(np.float64)
        logprobs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        top = np.lexsort((np.arange(len(logits)), -logits))[: choice.top_logprobs]
        self.pending[slot] = int(logits.argmax())
        return SimpleNamespace(id=self.pending[slot], logprob=logprobs[self.pending[slot]], top=top, tops=logprobs[top])

    @staticmethod
    def _decoded(rows: list[SimpleNamespace]) -> SimpleNamespace:
        """As the executor's Chosen: (1, rows), alternatives (1, rows, K) for the largest K asked."""
        top = max(len(r.top) for r in rows)
        return SimpleNamespace(
            ids=np.array([[r.id for r in rows]]),
            logprobs=np.array([[r.logprob for r in rows]], np.float32),
            alternatives=np.array([[np.pad(r.top, (0, top - len(r.top))) for r in rows]]),
            alternative_logprobs=np.array([[np.pad(r.tops, (0, top - len(r.top))) for r in rows]], np.float32),
        )

    def prefill(self, slot: int, tokens: Sequence[int], choice: Any = None, step: int = 0) -> SimpleNamespace:
        assert self.pending[slot] is None and len(self.tokens[slot]) + len(tokens) <= self.member.context
        self.tokens[slot] += list(tokens)
        return SimpleNamespace(chosen=self._decoded([self._choose(slot, choice)]))

    def decode(self, slots: Sequence[int], choices: Sequence[Any], steps: Sequence[int], count: int) -> Any:
        assert count == 1 and len(set(slots)) == len(slots)
        rows = []
        for slot, choice in zip(slots, choices, strict=True):
            assert self.pending[slot] is not None and len(self.tokens[slot]) < self.member.context
            self.tokens[slot].append(self.pending[slot])
            rows.append(self._choose(slot, choice))
        return self._decoded(rows)

    def close(self) -> None:
        pass


@dataclass
class Recording:
    """An executor with every call logged in order and the positions computed counted; `before_decode`
    runs before each decode (a test's hook to hold a step until something has happened)."""

    inner: Any
    calls: list[tuple] = field(default_factory=list)
    computed: int = 0
    before_decode: Any = None

    def truncate(self, slot: int, n: int) -> None:
        self.calls.append(("truncate", slot, n))
        self.inner.truncate(slot, n)

    def prefill(self, slot: int, tokens: Sequence[int], choice: Any = None, step: int = 0) -> Any:
        self.calls.append(("prefill", slot, len(tokens)))
        self.computed += len(tokens)
        return self.inner.prefill(slot, tokens, choice, step)

    def decode(self, slots: Sequence[int], choices: Sequence[Any], steps: Sequence[int], count: int) -> Any:
        if self.before_decode is not None:
            self.before_decode()
        self.calls.append(("decode", tuple(slots)))
        self.computed += len(slots) * count
        return self.inner.decode(slots, choices, steps, count)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Serving:
    url: str
    worker: SlotWorker
    executor: Recording


@contextlib.contextmanager
def serving(member: Member, slots: int) -> Iterator[Serving]:
    """A server of `member` on a free port, in this process; its executor's warm-up calls forgotten."""
    import uvicorn

    made: list[Recording] = []

    def build(runnable: Any, device: int | None, slots: int) -> Resident:
        made.append(Recording(OracleSlots(member, slots)))
        return Resident(made[0], None, made[0].close)

    limits = Limits(slots=slots)
    worker = SlotWorker(NAME, member.runnable, limits, build=build)
    worker.start()
    made[0].calls.clear()
    made[0].computed = 0
    made[0].inner.unhonoured.clear()
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(create_app([Mounted(NAME, member.runnable, worker)], limits), limits))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        host, port = listener.getsockname()[:2]
        yield Serving(f"http://{host}:{port}", worker, made[0])
    finally:
        server.should_exit = True
        thread.join()
        listener.close()
        worker.stop()
    assert not made[0].inner.unhonoured, "a request asked the greedy-only oracle executor to sample"


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


def assert_tokens_equal(member: Member, prompt: Sequence[int], got: list[str], what: str) -> None:
    expected, compared = oracle_greedy(member, prompt, len(got))
    assert got[:compared] == token_texts(member, expected)[:compared], f"{what}: {got} ≠ oracle {expected}"


def test_a_request_arriving_mid_generation_joins_between_steps_and_both_equal_their_solo_runs(tmp_path, rng):
    member = make_member(tmp_path, rng)
    first_prompt = rng.integers(0, member.vocab, int(rng.integers(4, 12))).tolist()
    second_prompt = rng.integers(0, member.vocab, int(rng.integers(4, 12))).tolist()
    common = {"model": NAME, "temperature": 0, "logprobs": 0, "cache_prompt": False}
    first_body = common | {"prompt": first_prompt, "max_tokens": 16}
    second_body = common | {"prompt": second_prompt, "max_tokens": 6, "logprobs": 2}
    with serving(member, slots=2) as served:
        arrived = threading.Event()
        submitted = []
        submit = served.worker.submit

        def counted_submit(job: Any) -> None:
            submit(job)
            submitted.append(job)
            if len(submitted) == 2:
                arrived.set()

        def hold_third_step() -> None:  # the first request cannot end before the second has arrived
            if sum(call[0] == "decode" for call in served.executor.calls) == 2:
                assert arrived.wait(GATE_TIMEOUT_S), "the second request never arrived"

        served.worker.submit = counted_submit  # type: ignore[method-assign]
        served.executor.before_decode = hold_third_step
        first_events: list[tuple[float, dict]] = []
        second_events: list[tuple[float, dict]] = []
        started = threading.Event()
        running = threading.Thread(target=streamed, args=(served.url, first_body, first_events, started))
        running.start()
        assert started.wait(GATE_TIMEOUT_S), "the first request's first token never came"
        streamed(served.url, second_body, second_events)
        running.join()
        calls = list(served.executor.calls)
        served.executor.before_decode = None
        solo = []
        for body in (first_body, second_body):
            alone: list[tuple[float, dict]] = []
            streamed(served.url, body, alone)
            solo.append(streamed_tokens(alone))
    prefills = [i for i, call in enumerate(calls) if call[0] == "prefill"]
    decodes = [call[1] for call in calls if call[0] == "decode"]
    assert len(prefills) == 2 and len(decodes) == 15, calls
    both = [slots for slots in decodes if len(slots) == 2]
    assert len(both) == 5, f"the second request's steps ran alone, not beside the first's: {calls}"
    assert second_events[0][0] < first_events[-1][0], "the second request's first token came after the first ended"
    together = [streamed_tokens(first_events), streamed_tokens(second_events)]
    assert [len(t) for t in together] == [16, 6]
    assert together == solo, "a request batched with another answered otherwise than alone"
    alternatives = [[len(top) for top in streamed_tops(events)] for events in (first_events, second_events)]
    # two alternatives of one text (bytes that are not UTF-8 alone) share a key of OpenAI's top_logprobs object
    asked = alternatives[0] == [0] * 16 and len(alternatives[1]) == 6 and all(1 <= n <= 2 for n in alternatives[1])
    assert asked, f"each request gets the alternatives it asked for: {alternatives}"
    assert_tokens_equal(member, first_prompt, together[0], "the first request")
    assert_tokens_equal(member, second_prompt, together[1], "the second request")


def test_a_second_chat_turn_computes_only_its_new_positions(tmp_path, rng):
    bos = int(rng.integers(1, 256))
    member = make_member(tmp_path, rng, bos=bos)  # every sequence begins with bos (§14.4): each turn's too
    prompt = rng.integers(1, member.vocab, int(rng.integers(8, 20))).tolist()
    greedy = {"model": NAME, "temperature": 0, "logprobs": 0}
    with serving(member, slots=2) as served:
        status, first = post(served.url, "/v1/completions", greedy | {"prompt": prompt, "max_tokens": 8})
        assert status == 200, first
        answer, compared = oracle_greedy(member, [bos, *prompt], 8)
        tokens = first["choices"][0]["logprobs"]["tokens"]
        assert tokens[:compared] == token_texts(member, answer)[:compared]
        if compared < 8:
            pytest.skip(f"a near-tie at step {compared}: the answer the next turn extends is not the oracle's")
        other = [0, *rng.integers(1, member.vocab, 6).tolist()]  # shares no prefix: takes the other slot
        assert post(served.url, "/v1/completions", greedy | {"prompt": other, "max_tokens": 3})[0] == 200
        more = rng.integers(0, member.vocab, int(rng.integers(1, 6))).tolist()
        second_prompt = prompt + answer + more
        before = served.executor.computed
        status, second = post(served.url, "/v1/completions", greedy | {"prompt": second_prompt, "max_tokens": 4})
        assert status == 200, second
        computed = served.executor.computed - before
        reused = 1 + len(prompt) + len(answer) - 1  # bos, and not the answer's last token: chosen, never run
        assert computed == (1 + len(more)) + 3, f"{computed} positions computed for the second turn"
        health = get(served.url, "/health")["models"][NAME]
        assert health["positions_reused"] == reused and health["slots"] == 2, health
        assert second["usage"]["prompt_tokens"] == 1 + len(second_prompt), second["usage"]
        tokens = second["choices"][0]["logprobs"]["tokens"]
        assert_tokens_equal(member, [bos, *second_prompt], tokens, "the second turn")
        before = served.executor.computed
        body = greedy | {"prompt": second_prompt, "max_tokens": 4, "cache_prompt": False}
        status, fresh = post(served.url, "/v1/completions", body)
        assert served.executor.computed - before == 1 + len(second_prompt) + 3
        assert fresh["choices"][0]["text"] == second["choices"][0]["text"]


def test_context_overflow_and_too_many_prompts_are_400s_naming_the_field(tmp_path, rng):
    member = make_member(tmp_path, rng, context=32)
    n = int(rng.integers(20, 30))
    prompt = rng.integers(0, member.vocab, n).tolist()
    with serving(member, slots=2) as served:
        too_long = {"model": NAME, "prompt": prompt, "max_tokens": 32 - n + 1}
        status, answer = post(served.url, "/v1/completions", too_long)
        error = answer["error"]
        assert status == 400 and error["param"] == "prompt" and error["code"] == "context_length_exceeded", answer
        assert f"{n} tokens + max_tokens {33 - n} = 33 positions, past the context of 32" in error["message"]
        status, answer = post(served.url, "/v1/completions", {"model": NAME, "prompt": [[1], [2], [3]]})
        assert status == 400 and "past the 2 KV-cache slots" in answer["error"]["message"], answer
        fits = {"model": NAME, "prompt": prompt, "max_tokens": 32 - n, "temperature": 0}
        status, answer = post(served.url, "/v1/completions", fits)
        assert status == 200 and answer["usage"]["completion_tokens"] == 32 - n, answer
        prefills = [call for call in served.executor.calls if call[0] == "prefill"]
        assert [call[2] for call in prefills] == [n], f"a refused request reached the executor: {prefills}"
