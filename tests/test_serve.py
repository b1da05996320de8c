"""`pxgl serve` as users meet it: a real server process on a free localhost port, two random models mounted,
an API key set. Completions (plain and streamed) against `pxgl generate`, /v1/predict against `pxgl infer
--input`, the openai package itself, 64 clients x 10 requests against the numpy oracle, every hostile
request class answered with its 4xx while the server keeps serving, and SIGTERM draining what is in
flight."""

import contextlib
import io
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image
from pxgl.generation import MAX_NEW_TOKENS
from pxgl.pxi import encode_tokens, write_rgb
from pxgl.serve.completions import CharacterCount
from pxgl.tokenizer import Tokenizer

from tests.cli_process import pxgl
from tests.reference import oracle
from tests.reference.generation import choose, draw
from tests.reference.models import params_at, write_random_model

TEXT = "the pixel model reads pixels and writes pixels; every weight is a byte of an image.\n" * 20
VOCAB = 300
KEY = "test-key-" + os.urandom(6).hex()
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 120


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen
    models: dict[str, Path]
    """Model name → weights path."""
    tokenizer: Tokenizer
    folder: Path
    seed: int
    """The models' seed (PXGL_TEST_SEED replays them too)."""


def write_models(folder: Path, rng: np.random.Generator, names: tuple[str, ...]) -> tuple[dict[str, Path], Tokenizer]:
    tokenizer = Tokenizer.train(TEXT, VOCAB)
    models = {}
    for name in names:
        window = int(rng.integers(4, 9))
        models[name] = write_random_model(folder, rng, vocab=VOCAB, embed=24, hidden=20, window=window, name=name)
        tokenizer.save(folder / f"{name}.tokenizer.json")
    return models, tokenizer


def start_server(
    folder: Path, models: dict[str, Path], *args: str, key: str | None = KEY, log: Path | None = None
) -> tuple[str, subprocess.Popen]:
    """The server's URL and process; its stderr a pipe, or the file `log` (read while it runs)."""
    env = {name: value for name, value in os.environ.items() if name != "PXGL_API_KEY"}
    if key is not None:
        env["PXGL_API_KEY"] = key
    model_args = [a for path in models.values() for a in ("-m", str(path))]
    command = [sys.executable, "-m", "pxgl.cli", "serve", *model_args, "--port", "0", *args]
    with contextlib.ExitStack() as files:
        stderr = subprocess.PIPE if log is None else files.enter_context(log.open("w"))
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    line = process.stdout.readline()
    found = re.search(r"listening on (http://\S+)", line)
    if found is None or time.monotonic() > deadline:
        process.kill()
        said = process.stderr.read() if log is None else log.read_text()
        raise AssertionError(f"pxgl serve did not start: {line!r} {said}")
    return found[1], process


def stop_server(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    folder = tmp_path_factory.mktemp("serve")
    seed = int(os.environ.get("PXGL_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    models, tokenizer = write_models(folder, np.random.default_rng(seed), ("alpha", "beta"))
    url, process = start_server(folder, models)
    yield Served(url, process, models, tokenizer, folder, seed)
    status, stderr = stop_server(process)
    assert status == 0 and "Traceback" not in stderr, stderr


def call(
    url: str, path: str, body: bytes | dict | None = None, key: str | None = KEY, method: str | None = None
) -> tuple[int, bytes, str]:
    """(status, body, content type) of one request; errors are answers too."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url + path, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def complete(url: str, body: dict) -> dict:
    status, data, _ = call(url, "/v1/completions", body)
    assert status == 200, data
    return json.loads(data)


def stream(url: str, body: dict) -> list[dict]:
    """The events of a streamed completion, in order; the last line must be [DONE]."""
    status, data, kind = call(url, "/v1/completions", body | {"stream": True})
    assert status == 200 and kind.startswith("text/event-stream"), data
    events = data.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""], events[-3:]
    return [json.loads(e.removeprefix("data: ")) for e in events[:-2]]


def streamed_choices(events: list[dict], n: int) -> list[tuple[str, str]]:
    """(text joined, finish reason) of each prompt of a stream; each prompt finishes exactly once."""
    texts, reasons = [""] * n, [[] for _ in range(n)]
    for event in events:
        (choice,) = event["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"] is not None:
            reasons[choice["index"]].append(choice["finish_reason"])
    assert all(len(r) == 1 for r in reasons), reasons
    return [(text, r[0]) for text, r in zip(texts, reasons, strict=True)]


def generate_cli(served: Served, model: str, prompts: list[str], *args: str) -> list[dict]:
    (served.folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    run = pxgl("generate", "-b", "prompts.txt", "-m", str(served.models[model]), "--json", *args, cwd=served.folder)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_completions_plain_and_streamed_equal_pxgl_generate(served, rng, seed):
    prompts = ["pixels and", "every weight is a byte of an image", "the"]
    steps, draw_seed = 12, int(rng.integers(0, 2**32))
    for model, temperature in (("alpha", 1.5), ("beta", 0.0)):
        args = ["-n", str(steps), "-t", str(temperature), "--seed", str(draw_seed), "--logprobs", "3", "-x", "passes"]
        plain = generate_cli(served, model, prompts, *args)
        # A stop string: a byte the first row generates after its first token's start (bytes, mid-token too).
        data = b"".join(served.tokenizer.token_bytes(t) for t in plain[0]["tokens"])
        stop = next((chr(b) for b in data[1:] if 32 < b < 127), "\x01never")
        stopped = generate_cli(served, model, prompts, *args, "--stop", stop)
        body = {"model": model, "prompt": prompts, "max_tokens": steps, "temperature": temperature, "seed": draw_seed}
        for want, extra in ((plain, {}), (stopped, {"stop": stop})):
            what = f"{model}, t {temperature}, {extra}, seed {seed} (models {served.seed})"
            answer = complete(served.url, body | extra | {"logprobs": 3})
            assert answer["object"] == "text_completion" and answer["model"] == model, what
            got = sorted(answer["choices"], key=lambda c: c["index"])
            for choice, record in zip(got, want, strict=True):
                assert choice["text"] == record["text"], what
                assert choice["finish_reason"] == ("stop" if record["stopped"] else "length"), what
                assert choice["logprobs"]["token_logprobs"] == record["logprobs"], what
                texts = [served.tokenizer.token_bytes(t).decode("utf-8", "replace") for t in record["tokens"]]
                assert choice["logprobs"]["tokens"] == texts, what
                tops = [{a["text"]: a["logprob"] for a in top} for top in record["top_logprobs"]]
                assert choice["logprobs"]["top_logprobs"] == tops, what
            usage = answer["usage"]
            assert usage["completion_tokens"] == sum(len(r["tokens"]) for r in want), what
            events = stream(served.url, body | extra | {"logprobs": 3})
            assert {e["id"] for e in events} == {events[0]["id"]}, what
            expected = [(r["text"], "stop" if r["stopped"] else "length") for r in want]
            assert streamed_choices(events, len(prompts)) == expected, what
            for choice in got:  # the stream's logprobs, joined, are the answer's
                parts = [e["choices"][0]["logprobs"] for e in events if e["choices"][0]["index"] == choice["index"]]
                for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                    assert [v for part in parts for v in part[field]] == choice["logprobs"][field], (what, field)


def test_predict_equals_pxgl_infer_input(served, rng, seed):
    rows = [list(map(int, rng.integers(0, VOCAB, int(rng.integers(1, 20))))) for _ in range(7)]
    texture = served.folder / "tokens.pxi"
    write_rgb(texture, encode_tokens(rows, VOCAB))
    run = pxgl("infer", "--input", "tokens.pxi", "-m", str(served.models["beta"]), "-o", "want.pxi", cwd=served.folder)
    assert run.returncode == 0, run.stderr
    status, data, kind = call(served.url, "/v1/predict?model=beta", texture.read_bytes())
    assert status == 200 and kind == "image/png", data
    assert data == (served.folder / "want.pxi").read_bytes(), (
        f"seed {seed} (models {served.seed}): the prediction pixels differ"
    )


def oracle_continuation(weights: Path, tokenizer: Tokenizer, rows: list[list[int]], steps: int, sampling: dict) -> list:
    """Each prompt's continuation replayed by the numpy oracle (docs/FORMATS.md §11; each prompt alone in
    its request: draw row 0), its text decoded; None where float32 rounding could decide a step."""
    params = params_at(weights)
    temperature, top_k, top_p = sampling.get("temperature", 0.0), sampling.get("top_k"), sampling.get("top_p", 1.0)
    tokens = [[] for _ in rows]
    live = list(range(len(rows)))
    for step in range(steps):
        lg = oracle.logits(params, [rows[r] + tokens[r] for r in live])
        still = []
        for i, r in enumerate(live):
            chosen, uncertain = choose(lg[i], draw(sampling.get("seed", 0), 0, step), temperature, top_k, top_p)
            if not uncertain:
                tokens[r].append(chosen)
                still.append(r)
        live = still
    return [tokenizer.decode(tokens[r]) if r in live else None for r in range(len(rows))]


def test_the_openai_package_works_against_the_server(served, rng, seed):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["alpha", "beta"]
    prompt = "pixels and every weight"
    settings = {"temperature": 0.9, "top_p": 0.8, "seed": int(rng.integers(0, 2**32))}
    rows = [served.tokenizer.encode(prompt)]
    want = oracle_continuation(served.models["alpha"], served.tokenizer, rows, 10, settings)[0]
    answer = client.completions.create(model="alpha", prompt=prompt, max_tokens=10, **settings)
    streamed = client.completions.create(model="alpha", prompt=prompt, max_tokens=10, stream=True, **settings)
    pieces = [chunk.choices[0].text for chunk in streamed]
    if want is not None:
        assert answer.choices[0].text == want, f"seed {seed} (models {served.seed})"
    assert "".join(pieces) == answer.choices[0].text and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 10
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="gamma", prompt=prompt, max_tokens=2)


CLIENTS, REQUESTS_EACH, STEPS = 64, 10, 4


def test_64_clients_of_10_requests_at_once_all_answer_the_oracle(served, rng, seed):
    """Concurrent requests for two models, greedy and sampled, batched on the GPU: no error, every answer the
    oracle's, and fewer GPU batches than requests (the batching happened)."""
    jobs = []
    for client in range(CLIENTS):
        for _ in range(REQUESTS_EACH):
            row = list(map(int, rng.integers(0, VOCAB, int(rng.integers(1, 12)))))
            sampled = client % 4 == 0  # a few sampling settings: batches form per setting
            sampling = {"temperature": 2.0, "seed": client % 8} if sampled else {"temperature": 0}
            jobs.append((client, "alpha" if client % 2 else "beta", row, sampling))
    before = json.loads(call(served.url, "/health")[1])["models"]

    def run_client(client: int) -> list[tuple[int, bytes]]:
        answers = []
        for _, model, row, sampling in (job for job in jobs if job[0] == client):
            status, data, _ = call(
                served.url, "/v1/completions", {"model": model, "prompt": row, "max_tokens": STEPS} | sampling
            )
            answers.append((status, data))
        return answers

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [a for client_answers in pool.map(run_client, range(CLIENTS)) for a in client_answers]
    ordered = [job for client in range(CLIENTS) for job in jobs if job[0] == client]
    errors = [(status, data[:200]) for status, data in answers if status != 200]
    assert errors == [], f"seed {seed} (models {served.seed}): {len(errors)} errors, first {errors[0]}"
    compared = 0
    for model in ("alpha", "beta"):
        for settings in ({"temperature": 0}, *({"temperature": 2.0, "seed": s} for s in range(8))):
            picked = [(i, job) for i, job in enumerate(ordered) if job[1] == model and job[3] == settings]
            if not picked:
                continue
            rows = [job[2] for _, job in picked]
            want = oracle_continuation(served.models[model], served.tokenizer, rows, STEPS, settings)
            for (i, job), text in zip(picked, want, strict=True):
                if text is not None:
                    got = json.loads(answers[i][1])["choices"][0]["text"]
                    assert got == text, (
                        f"seed {seed} (models {served.seed}): client {job[0]}, {model}, {settings}, prompt {job[2]}"
                    )
                    compared += 1
    assert compared >= len(jobs) // 2, (
        f"seed {seed} (models {served.seed}): only {compared} of {len(jobs)} answers compared"
    )
    after = json.loads(call(served.url, "/health")[1])["models"]
    batches = sum(after[m]["batches"] - before[m]["batches"] for m in after)
    requests = sum(after[m]["requests"] - before[m]["requests"] for m in after)
    assert requests == len(jobs) and batches < requests, (batches, requests)


def png_chunk(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))


def png_of(mode: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG")
    return out.getvalue()


def png_bomb() -> bytes:
    """An RGB PNG whose header claims 60,000 x 60,000 pixels over a few KiB of deflated zeros."""
    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * (1 << 20), 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def hostile_requests() -> list[tuple[str, str, bytes | dict | None, str | None, int, str]]:
    """(method, path, body, key, status, message pattern) of each hostile request class."""
    ok = {"model": "alpha", "prompt": "pixels", "max_tokens": 2}
    prediction_pixels = io.BytesIO()
    Image.fromarray(np.array([[[1, 0, 7]], [[2, 0, 9]]], np.uint8), "RGB").save(prediction_pixels, "PNG")
    return [
        ("POST", "/v1/completions", ok, None, 401, "no API key"),
        ("POST", "/v1/completions", ok, "wrong", 401, "a wrong API key"),
        ("GET", "/v1/models", None, None, 401, "no API key"),
        ("POST", "/v1/completions", b'{"model": "alpha", "prompt": ', KEY, 400, "not valid JSON"),
        ("POST", "/v1/completions", b"\xff\xfe{}", KEY, 400, "not UTF-8"),
        ("POST", "/v1/completions", b"[1, 2]", KEY, 400, "must be a JSON object, got an array"),
        ("POST", "/v1/completions", b'{"model": "alpha", "prompt": "a", "temperature": NaN}', KEY, 400, "NaN"),
        ("POST", "/v1/completions", b'{"a":' * 40 + b"1" + b"}" * 40, KEY, 400, "nested deeper"),
        ("POST", "/v1/completions", ok | {"model": "gamma"}, KEY, 404, "'gamma' is not served here"),
        ("POST", "/v1/completions", ok | {"model": 3}, KEY, 400, "model must be a string"),
        ("POST", "/v1/completions", {"model": "alpha"}, KEY, 400, "prompt is missing"),
        ("POST", "/v1/completions", ok | {"prompt": 5}, KEY, 400, "prompt must be a string"),
        ("POST", "/v1/completions", ok | {"prompt": [[1], "a", {}]}, KEY, 400, "prompt 2 must be a string"),
        ("POST", "/v1/completions", ok | {"prompt": ""}, KEY, 400, "prompt 0 is empty"),
        ("POST", "/v1/completions", ok | {"prompt": [5, VOCAB]}, KEY, 400, f"token id {VOCAB} is outside"),
        ("POST", "/v1/completions", ok | {"prompt": ["a"] * 65}, KEY, 400, "65 prompts, past the limit of 64"),
        ("POST", "/v1/completions", ok | {"prompt": "x" * 70_000}, KEY, 400, "past the limit of 65536"),
        ("POST", "/v1/completions", ok | {"max_tokens": 1025}, KEY, 400, "max_tokens must lie in 1..1024"),
        ("POST", "/v1/completions", ok | {"max_tokens": "5"}, KEY, 400, "max_tokens must be an integer"),
        ("POST", "/v1/completions", ok | {"temperature": -1}, KEY, 400, "temperature must lie in"),
        ("POST", "/v1/completions", ok | {"top_p": 0}, KEY, 400, "top_p must lie in"),
        ("POST", "/v1/completions", ok | {"seed": 2**32}, KEY, 400, "seed must lie in"),
        ("POST", "/v1/completions", ok | {"stop": 3}, KEY, 400, "stop must be a string"),
        ("POST", "/v1/completions", ok | {"stop": ""}, KEY, 400, "may not be empty"),
        ("POST", "/v1/completions", ok | {"stop": list("abcde")}, KEY, 400, "5 strings, past the limit of 4"),
        ("POST", "/v1/completions", ok | {"stream": "yes"}, KEY, 400, "stream must be true or false"),
        ("POST", "/v1/completions", ok | {"logprobs": 9}, KEY, 400, "logprobs must lie in 0..5"),
        ("POST", "/v1/completions", ok | {"n": 2}, KEY, 400, "n: pxgl serves only 1"),
        ("POST", "/v1/completions", ok | {"frobnicate": 1}, KEY, 400, "unknown field 'frobnicate'"),
        *(
            ("POST", "/v1/completions", json_with(ok, name, HUGE_INT), KEY, 400, "an integer of 5000 digits")
            for name in ("max_tokens", "seed", "top_k", "logprobs", "n", "best_of")
        ),
        ("POST", "/v1/completions", json_with(ok, "prompt", f"[1, -{HUGE_INT}]"), KEY, 400, "5000 digits"),
        ("POST", "/v1/completions", json_with(ok, "prompt", f"[[{HUGE_INT}]]"), KEY, 400, "5000 digits"),
        ("POST", "/v1/trace", json_with({"model": "alpha"}, "prompt", HUGE_INT), KEY, 400, "5000 digits"),
        (
            "POST",
            "/v1/completions",
            json_with(ok, "top_k", "1e300"),
            KEY,
            400,
            r"top_k must lie in 1..65536, got 1e\+300$",
        ),
        ("POST", "/v1/completions", json_with(ok, "seed", "-1e309"), KEY, 400, "seed must be an integer, got -inf"),
        ("POST", "/v1/completions", ok | {"prompt": [[1, 2.5]]}, KEY, 400, "prompt 0: 2.5 is not a token id"),
        ("POST", "/v1/predict?model=alpha", png_bomb(), KEY, 400, "60000"),
        ("POST", "/v1/predict?model=alpha", png_of("RGBA", (4, 2)), KEY, 400, "RGBA"),
        ("POST", "/v1/predict?model=alpha", png_of("L", (4, 2)), KEY, 400, "grey"),
        ("POST", "/v1/predict?model=alpha", png_of("RGB", (4, 2))[:-20], KEY, 400, "truncated|IEND"),
        ("POST", "/v1/predict?model=alpha", b"GIF89a", KEY, 400, "not a PNG"),
        ("POST", "/v1/predict?model=alpha", prediction_pixels.getvalue(), KEY, 400, "prediction pixels"),
        ("POST", "/v1/predict?model=gamma", png_of("RGB", (4, 2)), KEY, 404, "'gamma' is not served here"),
        ("POST", "/v1/predict", png_of("RGB", (4, 2)), KEY, 400, "model must be a string"),
        ("POST", "/v1/completions", ok | {"prompt": "a\ud800"}, KEY, 400, "prompt 0 holds a lone surrogate"),
        ("POST", "/v1/trace", {"model": "alpha", "prompt": 7}, KEY, 400, "prompt must be a non-empty string"),
        ("POST", "/v1/trace", {"model": "alpha", "prompt": "a\ud800"}, KEY, 400, "lone surrogate"),
        ("POST", "/v1/trace", {"model": "alpha", "prompt": "x" * 70_000}, KEY, 400, "past the limit of 65536"),
        ("POST", "/v1/trace", {"model": "alpha", "prompt": "a", "k": 3}, KEY, 400, "unknown field 'k'"),
        ("GET", "/v1/nothing", None, KEY, 404, "no such path /v1/nothing"),
        ("GET", "/v1/completions", None, KEY, 405, "GET is not served at /v1/completions"),
    ]


HUGE_INT = "1" * 5000
"""Past Python's 4,300 digits for int(str): a JSON parser that converts it raises ValueError."""


def json_with(body: dict, name: str, value_text: str) -> bytes:
    """`body` as JSON with `name` set to the raw JSON text `value_text` (which json.dumps cannot write)."""
    return (
        json.dumps(body | {name: None}).encode().replace(f'"{name}": null'.encode(), f'"{name}": {value_text}'.encode())
    )


def test_every_hostile_request_class_gets_its_4xx_and_the_server_keeps_serving(served):
    for method, path, body, key, status, pattern in hostile_requests():
        got, data, kind = call(served.url, path, body, key=key, method=method)
        what = f"{method} {path} {str(body)[:80]}"
        assert got == status and kind == "application/json", f"{what}: {got} {data[:300]}"
        error = json.loads(data)["error"]
        assert re.search(pattern, error["message"]), f"{what}: {error['message']}"
        assert call(served.url, "/health", key=None)[0] == 200, f"{what}: the server stopped answering"
    too_large = 4 * 2**20 + 1
    declared = f"Content-Length: {too_large}\r\n".encode()
    chunked = b"Transfer-Encoding: chunked\r\n"
    for head, body in ((declared, b"x" * 65536), (chunked, b"10000\r\n" + b"x" * 65536 + b"\r\n")):
        status, error = raw_post(served.url, "/v1/completions", head, body, 2 * too_large)
        assert status == 413 and "past the limit of 4194304" in error["message"], (head, status, error)
        assert call(served.url, "/health", key=None)[0] == 200
    answer = complete(served.url, {"model": "alpha", "prompt": "pixels", "max_tokens": 3, "temperature": 0})
    assert answer["usage"]["completion_tokens"] == 3
    assert served.process.poll() is None


HOSTILE_VALUES = (
    HUGE_INT,
    "-" + HUGE_INT,
    "1" + "0" * 30,
    "1e309",
    "-1e309",
    "1e-400",
    "-0.0",
    "1.5",
    "-1",
    "0",
    "true",
    "null",
    '""',
    '"a\\u0000b"',
    '"\\ud800"',
    '"' + "x" * 100_000 + '"',
    "[]",
    "[[]]",
    "[" + ",".join(["1"] * 100_000) + "]",
    "[" * 8 + "]" * 8,
    "{}",
    '{"a": [1, {"b": null}]}',
)
"""Raw JSON values each field of each endpoint is tried with: past int()'s digit limit, past float's range,
under it, NUL, a lone surrogate, long, empty, huge and nested arrays, wrong types."""


def test_every_field_of_every_endpoint_answers_hostile_values_with_a_4xx_or_an_answer(served):
    base = {"model": "alpha", "prompt": "pixels", "max_tokens": 1}
    fields = ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "logprobs"]
    fields += ["stream", "user", "n", "best_of", "echo", "presence_penalty", "frequency_penalty", "suffix"]
    fields += ["logit_bias", "stream_options", "repetition_penalty", "repeat_penalty", "cache_prompt"]
    cases = [("/v1/completions", base, name) for name in fields]
    cases += [("/v1/trace", {"model": "alpha", "prompt": "pixels"}, name) for name in ("model", "prompt")]
    for path, body, name in cases:
        for value in HOSTILE_VALUES:
            status, data, kind = call(served.url, path, json_with(body, name, value))
            what = f"{path} {name}={value[:40]}: {status} {data[:300]}"
            assert status == 200 or 400 <= status < 500, what
            if status != 200:
                error = json.loads(data)["error"]
                assert kind == "application/json" and error["type"] == "invalid_request_error", what
                assert "\n" not in error["message"] and len(error["message"]) < 400, what
    for value in ("%00", "%ED%A0%80", "x" * 8000, "gamma%20"):
        status, data, _ = call(served.url, f"/v1/predict?model={value}", png_of("RGB", (4, 2)))
        assert 400 <= status < 500 and json.loads(data)["error"]["message"], (value, status, data[:300])
    assert call(served.url, "/health", key=None)[0] == 200


def raw_post(url: str, path: str, head: bytes, body: bytes, total: int) -> tuple[int, dict]:
    """A POST over a bare socket that goes on sending `body` until `total` bytes are sent or the server
    answers (it should answer early); the status and the JSON error."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n".encode() + head + b"\r\n"
        )
        sent = 0
        with contextlib.suppress(OSError):  # the server may close the connection once it has answered
            while sent < total:
                connection.sendall(body)
                sent += len(body)
                if select.select([connection], [], [], 0)[0]:
                    break
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < content_length(reply):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    head_part, _, payload = reply.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(payload)["error"]


def content_length(reply: bytes) -> int:
    found = re.search(rb"(?i)content-length: (\d+)", reply.split(b"\r\n\r\n", 1)[0])
    return int(found[1]) if found else 0


def test_sigterm_drains_in_flight_requests_and_exits(tmp_path, rng):
    models, _ = write_models(tmp_path, rng, ("gamma",))
    # The longest completions there are (~4x the server's default cap): both must be seen in flight before they end,
    # on a busy machine too (1,024 tokens each left too short a window: seen once in CI).
    url, process = start_server(tmp_path, models, "--max-tokens", str(MAX_NEW_TOKENS), key=None)
    body = {"model": "gamma", "prompt": "pixels", "max_tokens": MAX_NEW_TOKENS, "temperature": 0}
    answers: dict[str, tuple[int, bytes, str]] = {}
    threads = [
        threading.Thread(target=lambda: answers.update(plain=call(url, "/v1/completions", body, key=None))),
        threading.Thread(
            target=lambda: answers.update(streamed=call(url, "/v1/completions", body | {"stream": True}, key=None))
        ),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while json.loads(call(url, "/health", key=None)[1])["models"]["gamma"]["in_flight"] < 2:
        assert time.monotonic() < deadline, "the requests never reached the engine"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=120)
    status, stderr = process.wait(timeout=60), process.stderr.read()
    assert status == 0 and "Traceback" not in stderr, stderr
    plain_status, plain, _ = answers["plain"]
    assert plain_status == 200 and json.loads(plain)["usage"]["completion_tokens"] == MAX_NEW_TOKENS
    streamed_status, streamed, _ = answers["streamed"]
    assert streamed_status == 200 and streamed.endswith(b"data: [DONE]\n\n")
    assert b'"finish_reason": "length"' in streamed
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=5)


UNSERVED_FIELDS = (
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "auto"),
    ("messages", [{"role": "user", "content": "hi"}]),
    ("response_format", {"type": "json_object"}),
    ("max_completion_tokens", 4),
    ("frequency_penalty", 0.5),
    ("presence_penalty", -1),
    ("logit_bias", {"5": 10}),
    ("n", 2),
    ("best_of", 3),
    ("echo", True),
    ("suffix", "x"),
    ("stream_options", {"include_usage": True}),
    ("repetition_penalty", 1.3),
    ("repeat_penalty", 0.5),
    ("cache_prompt", "yes"),
    ("min_p", 0.1),
)
"""Fields a version-1 model does not serve at these values (docs/FORMATS.md §12): each a 400 naming it."""


def test_every_unserved_field_is_a_400_naming_it_and_defaults_change_nothing(served):
    base = {"model": "alpha", "prompt": "pixels", "max_tokens": 3, "temperature": 0}
    for name, value in UNSERVED_FIELDS:
        status, data, _ = call(served.url, "/v1/completions", base | {name: value})
        error = json.loads(data)["error"]
        assert status == 400 and error["param"] == name and name in error["message"], (name, status, error)
    status, data, _ = call(served.url, "/v1/completions", base | {"repetition_penalty": 1.2, "repeat_penalty": 1.2})
    assert status == 400 and "one field by two names" in json.loads(data)["error"]["message"], data
    defaults = {"n": 1, "logit_bias": {}, "frequency_penalty": 0, "repetition_penalty": 1, "cache_prompt": False}
    plain, same = complete(served.url, base), complete(served.url, base | defaults)
    assert plain["choices"] == same["choices"], (plain, same)


def test_a_busy_port_is_one_line_and_status_2(served):
    port = served.url.rsplit(":", 1)[1]
    run = pxgl("serve", "-m", str(served.models["alpha"]), "--port", port, cwd=served.folder)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert f"--port {port}: cannot listen there" in run.stderr


def test_bad_connection_bounds_are_one_line_and_status_2(tmp_path):
    for option, value in (("--header-timeout", "0"), ("--body-timeout", "nan"), ("--max-connections", "2")):
        run = pxgl("serve", option, value, "--port", "0", cwd=tmp_path)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, (option, run.stderr)
        assert option in run.stderr, run.stderr


def test_text_offsets_count_characters_as_the_decoded_prefix_does(rng, seed):
    """Answer's text offsets, counted a token at a time, against their definition: the characters of the
    text's bytes up to the token, decoded with invalid bytes replaced (split and broken UTF-8 included)."""
    pieces = [b"a", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"\xff", b"\xf0\x9f\x98", b"\x80", b"ok", b""]
    for _ in range(20):
        data, ends, counter = b"", [], CharacterCount()
        for _ in range(int(rng.integers(1, 40))):
            data += pieces[int(rng.integers(len(pieces)))]
            ends.append(len(data))
        got = [counter.at(data, end) for end in ends]
        assert got == [len(data[:end].decode("utf-8", "replace")) for end in ends], f"seed {seed}: {data!r}"
