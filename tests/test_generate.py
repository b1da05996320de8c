"""Generation on the GPU (docs/FORMATS.md §11) against the oracle's token-by-token replay: greedy on random
family members on every executor, sampled with the specified generator, the top alternatives, streaming, a
prompt alone or among others, seeds, stop strings and bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors.fused_config import refusal
from pxgl.generation import MAX_NEW_TOKENS, Choice, Sampling, StopScanner, TextRow
from pxgl.loading import load_model
from pxgl.pxi import encode_tokens, read_rgb, write_rgb
from pxgl.tokenizer import Tokenizer

from tests.cli_process import pxgl
from tests.models import random_model
from tests.reference import oracle
from tests.reference.generation import assert_replays
from tests.reference.models import params_at, random_architecture, random_rows, write_random_member
from tests.test_streamed_text import PieceTokens

STEPS = 8


def random_member(tmp_path, rng, name: str, mode: str | None = None, window: int | None = None):
    arch = random_architecture(rng, mode=mode)
    # Widths of 1 often leave every ReLU dead: the logits are then the bias, full of exact ties.
    arch["embed_dim"] = max(arch["embed_dim"], 8)
    arch["hidden"] = [max(width, 16) for width in arch["hidden"]]
    if window is not None:
        arch["context"] = arch["context"] | {"window": window}
    path = write_random_member(tmp_path, rng, arch, name=name)
    return arch, path, load_model(path)


def prompts_for(rng, arch: dict, n: int) -> list[list[int]]:
    """Prompts of many lengths: one token, shorter and longer than the window."""
    rows = [list(map(int, r)) for r in random_rows(rng, n, arch["vocab_size"], max_len=arch["context"]["window"] + 4)]
    rows[0] = rows[0][:1]
    return rows


def test_greedy_generation_replays_the_oracle_on_random_members(tmp_path, gpu, rng, seed):
    compared = generated = 0
    for index, (mode, window) in enumerate([("mean", None), ("concat", None), ("attention", None), ("attention", 40)]):
        arch, path, model = random_member(tmp_path, rng, f"m{index}", mode, window)
        # 12 prompts: fused's one-group-per-prompt kernel; 70: its tiles of prompts.
        rows = prompts_for(rng, arch, 70 if index == 2 else 12)
        fused = [] if refusal(model.spec, gpu) else ["fused"]  # windows past its attention envelope
        for executor in ("passes", "pxvm", *fused):
            with Engine(model, gpu=gpu, executor=executor) as engine:
                generation = engine.generate(rows, STEPS)
            assert generation.tokens.shape == (len(rows), STEPS)
            what = f"{executor}, member {index} ({model.spec.architecture.describe()}), seed {seed}"
            # pxvm keeps no logits: its log-probabilities are absent (NaN).
            logprobs = generation.logprobs if executor != "pxvm" else None
            assert executor != "pxvm" or np.isnan(generation.logprobs).all(), what
            compared += assert_replays(params_at(path), rows, generation.tokens, logprobs, {}, what)
            generated += generation.tokens.size
    assert compared >= generated // 2, f"seed {seed}: only {compared} of {generated} tokens compared"


@pytest.mark.parametrize("executor", ["fused", "pxvm"])
def test_executors_refuse_what_they_cannot_generate_naming_passes(tmp_path, gpu, rng, executor):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    with Engine(model, gpu=gpu, executor=executor) as engine:
        with pytest.raises(
            PxglError, match=f"^the {executor} executor generates greedily only .*; sample with -x passes "
        ):
            engine.generate([[1, 2]], 4, Sampling(temperature=1.0))
        with pytest.raises(PxglError, match=f"^the {executor} executor .*; alternatives run with -x passes "):
            engine.generate([[1, 2]], 4, top_logprobs=3)


def test_top_alternatives_are_the_oracles_likeliest_tokens(tmp_path, gpu, rng, seed):
    arch, path, model = random_member(tmp_path, rng, "m", "concat")
    rows = prompts_for(rng, arch, 5)
    k = int(rng.integers(1, 21))
    with Engine(model, gpu=gpu, executor="passes") as engine:
        generation = engine.generate(rows, 4, Sampling(temperature=1.0, seed=3), top_logprobs=k)
    assert generation.top_ids.shape == (5, 4, k) and generation.top_logprobs.shape == (5, 4, k)
    params = params_at(path)
    for step in range(4):
        lg = oracle.logits(params, [list(r) + list(generation.tokens[i, :step]) for i, r in enumerate(rows)])
        for i in range(len(rows)):
            ranked = sorted(range(len(lg[i])), key=lambda v, row=lg[i]: (-row[v], v))[:k]
            expected = oracle.log_probabilities(np.repeat(lg[i : i + 1], k, 0), np.array(ranked))
            what = f"row {i}, step {step}, K {k}, seed {seed}"
            # ranks may swap only between float32 near-ties
            tied = np.abs(np.diff(np.sort(lg[i])[::-1][: k + 1])) <= 1e-5 * np.abs(lg[i]).max()
            if not tied.any():
                assert generation.top_ids[i, step].tolist() == ranked, what
            assert np.allclose(generation.top_logprobs[i, step], expected, atol=1e-4, rtol=1e-4), what


def test_streaming_yields_the_generation_step_by_step_and_stops_when_closed(tmp_path, gpu, rng, seed):
    arch, _, model = random_member(tmp_path, rng, "m", "attention", 16)  # within fused's attention envelope
    rows = prompts_for(rng, arch, 6)
    for executor in ("passes", "fused"):
        with Engine(model, gpu=gpu, executor=executor) as engine:
            whole = engine.generate(rows, 20)
            steps = list(engine.stream(rows, 20))
            assert [s.step for s in steps] == list(range(20)), f"{executor}, seed {seed}"
            assert np.array_equal(np.stack([s.tokens for s in steps], 1), whole.tokens), f"{executor}, seed {seed}"
            stream = engine.stream(rows, 20)
            first = [next(stream) for _ in range(3)]
            stream.close()  # the GPU work stops; the engine goes on
            assert np.array_equal(np.stack([s.tokens for s in first], 1), whole.tokens[:, :3])
            assert np.array_equal(engine.generate(rows, 20).tokens, whole.tokens), f"{executor}, seed {seed}"


SETTINGS = [
    {"temperature": 1.0},
    {"temperature": 2.5},
    {"temperature": 0.8, "top_k": 1},
    {"temperature": 3.0, "top_k": 7},
    {"temperature": 2.0, "top_p": 0.6},
    {"temperature": 3.0, "top_k": 20, "top_p": 0.9},
]


def test_sampled_generation_replays_the_specified_generator(tmp_path, gpu, rng, seed):
    compared = generated = 0
    for index, mode in enumerate(["attention", "mean"]):
        arch, path, model = random_member(tmp_path, rng, f"s{index}", mode)
        rows = prompts_for(rng, arch, 6)
        params = params_at(path)
        with Engine(model, gpu=gpu, executor="passes") as engine:
            for settings in SETTINGS:
                sampling = settings | {"seed": int(rng.integers(0, 2**32))}
                generation = engine.generate(rows, STEPS, Sampling(**sampling))
                what = f"{mode} member, {sampling}, seed {seed}"
                compared += assert_replays(params, rows, generation.tokens, generation.logprobs, sampling, what)
                generated += generation.tokens.size
    assert compared >= generated // 2, f"seed {seed}: only {compared} of {generated} tokens compared"


def test_a_prompt_generates_the_same_alone_and_among_63_others(tmp_path, gpu, rng, seed):
    arch, _, model = random_member(tmp_path, rng, "m", "attention", 16)
    rows = prompts_for(rng, arch, 64)
    place = int(rng.integers(1, 64))
    sampled = Sampling(temperature=2.0, top_p=0.95, seed=int(rng.integers(0, 2**32)))
    with Engine(model, gpu=gpu, executor="passes") as engine:
        together = engine.generate(rows, STEPS)
        alone = engine.generate([rows[place]], STEPS)
        assert np.array_equal(together.tokens[place], alone.tokens[0]), f"greedy, seed {seed}"
        # The draw's row is the prompt's index in its request: row 0 alone is row 0 among others.
        together = engine.generate(rows, STEPS, sampled)
        alone = engine.generate([rows[0]], STEPS, sampled)
        assert np.array_equal(together.tokens[0], alone.tokens[0]), f"sampled, seed {seed}"
        # A prompt from another request keeps its own row in the draw, wherever it sits in the batch.
        moved = engine.generate([rows[1], rows[place]], STEPS, sampled, draw_rows=[1, place])
        assert np.array_equal(moved.tokens[1], together.tokens[place]), f"draw rows, seed {seed}"
        engine.executor.max_tile = 24  # tiles of 24, 24 and 16 prompts: each row keeps its request index
        tiled = engine.generate(rows, STEPS, sampled)
        assert np.array_equal(tiled.tokens, together.tokens), f"tiled, seed {seed}"
    with Engine(model, gpu=gpu, executor="fused") as engine:
        together = engine.generate(rows, STEPS)
        alone = engine.generate([rows[place]], STEPS)
        assert np.array_equal(together.tokens[place], alone.tokens[0]), f"fused, seed {seed}"
        # prompts of one length as a (B, L) array: the same tokens as the list of lists
        same_length = [row[-1:] for row in rows]
        as_array = engine.generate(np.array(same_length, np.int32), STEPS)
        assert np.array_equal(as_array.tokens, engine.generate(same_length, STEPS).tokens), f"array, seed {seed}"


def test_seeds_repeat_differ_and_temperature_zero_is_greedy(tmp_path, gpu, rng, seed):
    arch, _, model = random_member(tmp_path, rng, "m", "attention")
    rows = prompts_for(rng, arch, 8)
    first = int(rng.integers(0, 2**32 - 1))
    with Engine(model, gpu=gpu, executor="passes") as engine:
        one = engine.generate(rows, 16, Sampling(temperature=100.0, seed=first)).tokens
        again = engine.generate(rows, 16, Sampling(temperature=100.0, seed=first)).tokens
        other = engine.generate(rows, 16, Sampling(temperature=100.0, seed=first + 1)).tokens
        greedy = engine.generate(rows, 16).tokens
        zero = engine.generate(rows, 16, Sampling(temperature=0.0, top_k=3, top_p=0.5, seed=first)).tokens
    assert np.array_equal(one, again), f"seed {seed}"
    assert not np.array_equal(one, other), f"seed {seed}: seeds {first} and {first + 1} drew the same tokens"
    assert np.array_equal(greedy, zero), f"seed {seed}"


def test_stop_strings_cut_generated_bytes_also_mid_token(rng, seed):
    """TextRow fed token by token against the whole text (the tokens' bytes decoded, §6) cut at the earliest
    stop (an independent rule); a token's end is where the text ends at the first token from it on whose bytes
    end no character midway."""
    alphabet = b"abc\xc3\xa9"
    for trial in range(300):

        def piece(longest: int) -> bytes:
            return bytes(rng.choice(list(alphabet), int(rng.integers(1, longest + 1))).tolist())

        tokens = [piece(3) for _ in range(int(rng.integers(1, 9)))]
        stops = [piece(4) for _ in range(int(rng.integers(1, 3)))]
        decoded = [b"".join(tokens[:i]).decode("utf-8", "replace").encode() for i in range(1, len(tokens) + 1)]
        text = decoded[-1]
        found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
        end = min(found) if found else len(text)
        row, shown = TextRow(PieceTokens(dict(enumerate(tokens))), stops), b""
        for i in range(len(tokens)):
            shown += row.add(Choice(i, 0, 0.0, []))
            assert text[:end].startswith(shown), f"trial {trial}, seed {seed}: showed {shown!r} past {text[:end]!r}"
        shown += row.finish()
        what = f"trial {trial}, seed {seed}: {tokens} stops {stops}"
        assert shown == row.data == text[:end], what
        assert row.stopped == bool(found), what
        # of this alphabet only a last \xc3 (é's lead byte) is a character midway; a lone \xa9 is U+FFFD for good
        whole = [j for j in range(len(tokens)) if not tokens[j].endswith(b"\xc3")] + [len(tokens) - 1]
        ends = [len(decoded[next(j for j in whole if j >= i)]) for i in range(len(tokens))]
        assert [c.token for c in row.kept] == [i for i in range(len(tokens)) if ends[i] <= end], what
    # A stop that begins earlier but is still incomplete when a later one completes decides first.
    row = TextRow(PieceTokens({0: b"ab", 1: b"c", 2: b"dz"}), [b"abcd", b"c"])
    assert row.add(Choice(0, 0, 0.0, [])) == b"" and row.add(Choice(1, 0, 0.0, [])) == b""
    assert row.add(Choice(2, 0, 0.0, [])) == b"" and row.data == b"" and row.scanner.stop_at == 0
    row = TextRow(PieceTokens({0: b"abc", 1: b"x"}), [b"abcd", b"c"])
    row.add(Choice(0, 0, 0.0, []))
    assert row.add(Choice(1, 0, 0.0, [])) == b"ab" and row.scanner.stop_at == 2
    scanner = StopScanner([b"\n\n"])
    assert scanner.feed(b"one\n") == b"one" and scanner.feed(b"two") == b"\ntwo"  # held back, then released
    assert scanner.feed(b"\n") == b"" and scanner.feed(b"\nmore") == b"" and scanner.stopped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "-3"], "tokens to generate must lie in 1..4096, got -3"),
        (["-n", str(MAX_NEW_TOKENS + 1)], f"got {MAX_NEW_TOKENS + 1}"),
        (["--temperature", "-0.5"], "temperature must be a finite number ≥ 0"),
        (["--top-p", "0"], "top-p must lie in \\(0, 1\\]"),
        (["--top-p", "1.5"], "top-p must lie in \\(0, 1\\]"),
        (["--top-k", "0"], "top-k must be ≥ 1"),
        (["--stop", ""], "a stop string may not be empty"),
        (["--seed", "-1"], "seed must lie in 0..4294967295"),
        (["--logprobs", "21"], "alternatives per token must lie in 0..20, got 21"),
        (["--stop", "\udcff"], "--stop '.udcff': not valid text"),
        (["-x", "fused", "-t", "1"], "the fused executor generates greedily only"),
    ],
)
def test_bad_generation_input_is_one_line(tmp_path, args, message):
    run = pxgl("generate", "pixels", *args, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert re.search(message, lines[0]), lines[0]


TEXT = "the pixel model reads pixels and writes pixels; every weight is a byte of an image.\n" * 20


def test_cli_generates_json_and_the_token_film_strip(tmp_path, rng, seed):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    tokenizer = Tokenizer.train(TEXT, 300)
    tokenizer.save(model.tokenizer_path)
    prompts = ["pixels and", "every weight is a byte of an image", "the"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    args = ["-b", "prompts.txt", "-n", "10", "-t", "1.5", "--seed", "7", "-m", model.source, "--json"]
    run = pxgl("generate", *args, "--out", "gen.pxi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    strip = read_rgb(tmp_path / "gen.pxi")
    assert strip.shape == (3, 10, 3)
    rows = [tokenizer.encode(p) for p in prompts]
    ids = strip[..., 0].astype(np.int64) + 256 * strip[..., 1].astype(np.int64)
    sampling = {"temperature": 1.5, "seed": 7}
    assert_replays(
        params_at(tmp_path / model.source),
        rows,
        ids,
        np.array([r["logprobs"] for r in records]),
        sampling,
        f"cli, seed {seed}",
    )
    for record, prompt, row in zip(records, prompts, ids, strict=True):
        assert record["prompt"] == prompt and record["tokens"] == row.tolist() and not record["stopped"]
        assert record["text"] == tokenizer.decode(row)
    # Pixels in: the prompts' token texture gives the same tokens, and the same film strip.
    write_rgb(tmp_path / "prompts.pxi", encode_tokens(rows, 300))
    pixels_in = pxgl("generate", "--input", "prompts.pxi", *args[2:], "--out", "gen2.pxi", cwd=tmp_path)
    assert pixels_in.returncode == 0, pixels_in.stderr
    again = [json.loads(line)["tokens"] for line in pixels_in.stdout.splitlines()]
    assert again == [r["tokens"] for r in records], f"seed {seed}"
    assert np.array_equal(read_rgb(tmp_path / "gen2.pxi"), strip)
    # A stop string: the first ASCII byte generated after the first token's start (bytes, not the decoded text).
    data = b"".join(tokenizer.token_bytes(int(t)) for t in ids[0])
    ascii_at = [i for i in range(1, len(data)) if 0 < data[i] < 128]
    stop = chr(data[ascii_at[0]]) if ascii_at else "\x01never"
    stopped = pxgl("generate", *args, "--stop", stop, cwd=tmp_path)
    first = json.loads(stopped.stdout.splitlines()[0])
    end = data.find(stop.encode())
    assert first["text"] == (data[:end] if end >= 0 else data).decode("utf-8", errors="replace")
    assert first["stopped"] == (end >= 0)


def test_ask_streams_a_multi_token_answer_from_the_bundled_model(tmp_path, seed):
    root = Path(__file__).resolve().parents[1]
    run = pxgl("ask", "-m", "pixellm_v1", "The default value is", "-n", "12", "-o", "output_token.pxi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    pixels = read_rgb(tmp_path / "output_token.pxi")
    tokens = pixels[:, 0, 0].astype(np.int64) + 256 * pixels[:, 0, 1].astype(np.int64)
    tokenizer = Tokenizer.load(root / "assets" / "pixellm_v1.tokenizer.json")
    prompt = tokenizer.encode("The default value is")
    params = params_at(root / "assets" / "pixellm_v1.pxi")
    compared = assert_replays(params, [prompt], tokens[None, :], None, {}, f"ask, seed {seed}")
    assert compared >= 2 and len(tokens) == 12
    assert run.stdout.startswith("The default value is" + tokenizer.decode(tokens.tolist())), run.stdout


def test_a_stream_hands_over_steps_while_later_ones_are_still_to_run(tmp_path, gpu, rng, seed, monkeypatch):
    from pxgl.executors import generation

    arch, _, model = random_member(tmp_path, rng, "m", "concat", 8)
    rows = prompts_for(rng, arch, 3)
    submitted: list[int] = []
    real = generation.stream_tile

    def watched(gpu_, job, *args):
        submit = job.submit
        job.submit = lambda first, last: (submitted.append(last), submit(first, last))
        return real(gpu_, job, *args)

    monkeypatch.setattr(generation, "stream_tile", watched)
    monkeypatch.setattr("pxgl.engine.stream_tile", watched)
    with Engine(model, gpu=gpu, executor="fused") as engine:
        stream = engine.stream(rows, 64)
        first = next(stream)
        assert first.step == 0 and max(submitted) < 64, f"seed {seed}: steps {submitted} issued before the first"
        assert max(submitted) > 1, "the next chunk was not issued before the first step was handed over"
        stream.close()


def test_viz_draws_a_band_per_step_boxing_the_oracles_top_token(tmp_path, rng, seed):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    tokenizer = Tokenizer.train(TEXT, 300)
    tokenizer.save(model.tokenizer_path)
    run = pxgl("generate", "pixels and", "-n", "5", "-m", model.source, "--viz", "viz", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    tokens = json.loads(run.stdout)["tokens"]
    strip = np.asarray(Image.open(tmp_path / "viz" / "prompt0_logits.png").convert("RGB"))
    assert strip.shape == (5 * 8, 300, 3)
    prompt = tokenizer.encode("pixels and")
    lg = oracle.logits(params_at(tmp_path / model.source), [prompt + tokens[:s] for s in range(5)])
    for step, row in enumerate(lg):
        top = int(np.argmax(row))
        if np.sort(row)[-1] - np.sort(row)[-2] <= 1e-5 * np.abs(row).max():
            continue  # a near-tie: the box may sit on either
        assert (strip[step * 8, max(top - 2, 0)] == 255).all(), f"step {step}: no box at {top} (seed {seed})"
        assert top == tokens[step], f"step {step}: greedy chose {tokens[step]}, oracle {top} (seed {seed})"


@pytest.mark.parametrize("name", ["pixellm_v0", "pixellm_v1"])
def test_bundled_models_generate_the_oracles_tokens_on_fused(gpu, rng, seed, name):
    """v0's shape takes the one-prompt path that keeps its output weights in registers; v1's does not. Where
    it does and the GPU has subgroup shuffles that fit (NVIDIA; not llvmpipe) the one-prompt group merges
    through them: then the shared-memory path runs too, and both replay the oracle, streamed across chunk
    boundaries as well as generated at once."""
    from pxgl.executors.fused_config import FusedConfig
    from pxgl.executors.fused_generation import small_program_shape, subgroups_fit

    path = Path(__file__).resolve().parents[1] / "assets" / f"{name}.pxi"
    model = load_model(path)
    rows = [list(map(int, rng.integers(0, model.spec.vocab_size, int(rng.integers(1, 20))))) for _ in range(3)]
    for subgroups in (True, False) if gpu.limits.subgroup_size else (True,):
        with Engine(model, gpu=gpu, executor="fused", tuning=FusedConfig(subgroups=subgroups)) as engine:
            _, constants, threads = small_program_shape(engine.executor)
            cached = constants.int("OUT_CACHED")
            assert cached == (name == "pixellm_v0"), f"{name}: OUT_CACHED {cached}"
            size = gpu.limits.subgroup_size if subgroups else 0
            fits = subgroups_fit(size, threads, constants.int("COLUMN_THREADS"))
            expected = size if fits and cached else 0
            assert constants.int("SUBGROUP_SIZE") == expected, f"{gpu.renderer}: subgroups {size}"
            alone = engine.generate(rows[:1], 10)
            streamed = np.array([step.tokens[0] for step in engine.stream(rows[:1], 10)])
            together = engine.generate(rows, 10)
        what = f"{name}, subgroups {subgroups}, seed {seed}"
        assert np.array_equal(streamed, alone.tokens[0]), what
        assert np.array_equal(alone.tokens[0], together.tokens[0]), what
        compared = assert_replays(params_at(path), rows, together.tokens, together.logprobs, {}, what)
        assert compared >= 10, f"{what}: only {compared} tokens compared"
