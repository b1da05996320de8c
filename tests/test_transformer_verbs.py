"""The verbs on version-2 models (docs/FORMATS.md §14), run as a user runs them (a new `pxgl` process each) on small
random members, against the independent oracle (tests/reference/transformer.py) reading the same files through
json and Pillow: infer's prediction pixels (text, token textures, a vocabulary past 65,536), generate's greedy
tokens, eval's strided windows (§14.6) against a numpy sum over the oracle's logits, inspect's numbers, and
every refusal one line with exit status 2."""

import json

import numpy as np
import pytest
from pxgl import Engine, open_model
from pxgl.pxi import read_rgb, write_rgb
from pxgl.tokenizer import Tokenizer
from pxgl.transformer import engine as transformer_engine
from pxgl.transformer.executors import EXECUTORS
from pxgl.transformer.members import write_random_model

from tests.cli_process import pxgl
from tests.reference import transformer as oracle
from tests.test_transformer_engine import oracle_reads, random_architecture
from tests.test_transformer_passes import HEAD_GAIN, assert_predictions_agree

CONTEXT = 48


def text_of(rng: np.random.Generator, words: int) -> str:
    """Text of random lowercase words: enough distinct pairs for a tokenizer of several hundred tokens."""
    letters = np.array(list("etaoinshrdlucmfw"))
    return " ".join("".join(rng.choice(letters, int(rng.integers(2, 7)))) for _ in range(words))


@pytest.fixture
def member(tmp_path, rng):
    """A member with a tokenizer of its vocabulary (trained here), bos declared half the time; its meta and
    the oracle's float32 tensors."""
    tokenizer = Tokenizer.train(text_of(rng, 3000), int(rng.integers(300, 600)))
    architecture = random_architecture(rng, vocab_size=tokenizer.vocab_size, context_length=CONTEXT)
    bos = int(rng.integers(tokenizer.vocab_size)) if rng.random() < 0.5 else None
    path = tmp_path / "member.pxi"
    seed = int(rng.integers(1 << 32))
    write_random_model(path, architecture, "q8", seed, tokenizer=tokenizer, bos=bos, head_gain=HEAD_GAIN)
    meta, params = oracle_reads(path)
    return path, tokenizer, meta, params


def sequence(meta: dict, ids) -> list[int]:
    """§14.4: bos first when the meta declares it."""
    return ([meta["bos"]] if "bos" in meta else []) + [int(i) for i in ids]


def last_logits(meta: dict, params: dict, rows) -> np.ndarray:
    return np.stack([oracle.forward(meta, params, sequence(meta, row))[-1] for row in rows])


def one_line_refusal(run, *words: str) -> None:
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_infer_text_batch_and_token_pixels_equal_the_oracles(member, tmp_path, rng):
    path, tokenizer, meta, params = member
    words = text_of(rng, 40).split()
    prompts = [" ".join(words[i : i + int(rng.integers(1, 8))]) for i in range(0, 30, 6)]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    run = pxgl(
        "infer",
        "--batch",
        "prompts.txt",
        "-m",
        str(path),
        "-o",
        "p.pxi",
        "--tokens-out",
        "t.pxi",
        "--json",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    rows = [tokenizer.encode(prompt) for prompt in prompts]
    expected = last_logits(meta, params, rows)
    assert_predictions_agree(read_rgb(tmp_path / "p.pxi"), expected, "--batch")
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["prompt"] for r in records] == prompts
    assert [r["text"] for r in records] == [tokenizer.decode([r["id"]]) for r in records]
    assert [
        oracle.token_ids(read_rgb(tmp_path / "t.pxi")[r, : len(row)]).tolist() for r, row in enumerate(rows)
    ] == rows

    run = pxgl("infer", "-i", "t.pxi", "-m", str(path), "-o", "again.pxi", cwd=tmp_path)  # pixels in, pixels out
    assert run.returncode == 0, run.stderr
    assert np.array_equal(read_rgb(tmp_path / "again.pxi"), read_rgb(tmp_path / "p.pxi"))


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_generate_is_the_oracles_greedy_replay(member, tmp_path, rng, executor):
    """Greedy tokens, log p and alternatives (pxvm: tokens only, §11: it keeps no logits while generating)."""
    path, tokenizer, meta, params = member
    prompt = text_of(rng, 4)
    steps = int(rng.integers(4, 12))
    alternatives = [] if executor == "pxvm" else ["--logprobs", "2"]
    run = pxgl(
        "generate", prompt, "-m", str(path), "-x", executor, "-n", str(steps), "--json", *alternatives, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    tokens = sequence(meta, tokenizer.encode(prompt))
    for step, token in enumerate(record["tokens"]):
        logits = oracle.forward(meta, params, tokens)[-1:]
        if oracle.near_tie(logits)[0]:
            break  # either id is right; the rest follows another sequence
        assert token == int(logits.argmax()), f"step {step}"
        tokens.append(token)
        if executor == "pxvm":
            continue
        shifted = logits[0].astype(np.float64) - logits.max()
        logp = shifted - np.log(np.exp(shifted).sum())
        assert abs(record["logprobs"][step] - logp[token]) <= 1e-2 * (1 + abs(logp[token]))
        assert record["top_logprobs"][step][0]["id"] == token
    assert len(record["tokens"]) == steps
    assert record["text"] == tokenizer.decode(record["tokens"])


def test_sampled_generation_with_a_penalty_is_replayed_by_the_oracle(member, tmp_path, rng):
    """§11 on version 2 from the command line: two --batch rows (draw rows 0 and 1), a temperature, top-p, a seed
    and a repetition penalty, each step replayed by the oracle's sampler over its own logits; a row stops being
    compared after a step whose draw or cut lies within τ of a boundary (either token is then right). Top-k is
    left out: at τ's slack a 40th and 41st logit are that close in a fifth of these steps (the choice kernel's
    own tests replay it over the very logits it read)."""
    path, tokenizer, meta, params = member
    prompts = [text_of(rng, 3), text_of(rng, 5)]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    seed, penalty, steps = int(rng.integers(1 << 32)), float(rng.uniform(1.1, 2.0)), 10
    options = ["-t", "0.9", "--top-p", "0.9", "--seed", str(seed), "--repeat-penalty", str(penalty)]
    run = pxgl(
        "generate", "--batch", "prompts.txt", "-m", str(path), "-n", str(steps), *options, "--json", cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    compared = 0
    for row, (prompt, line) in enumerate(zip(prompts, run.stdout.splitlines(), strict=True)):
        generated = json.loads(line)["tokens"]
        assert len(generated) == steps
        tokens = sequence(meta, tokenizer.encode(prompt))
        for step, token in enumerate(generated):
            logits = oracle.penalize(oracle.forward(meta, params, tokens)[-1], tokens, penalty)
            expected, excused = oracle.choose(logits, 0.9, 0, 0.9, seed, row, step, slack=oracle.AGREEMENT)
            if excused:
                break
            assert token == expected, f"row {row}, step {step}"
            compared += 1
            tokens.append(token)
    assert compared >= steps, "a sampled run must be compared for at least a row's worth of steps"


def test_eval_scores_strided_windows_once_each(member, tmp_path, rng):
    """§14.6 on a document past the context (windows of C, stride C/2) and a short one: positions, top-1 and
    perplexity against the oracle's logits summed here in numpy over its own windows."""
    path, tokenizer, meta, params = member
    long_text = text_of(rng, 40)
    documents = [long_text, text_of(rng, 5)]
    (tmp_path / "text.txt").write_text("\n\n".join(documents))  # §9: blank lines separate documents
    run = pxgl("eval", "-m", str(path), "--text", "text.txt", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    nats, hits, positions, ties = 0.0, 0, 0, 0
    for document in documents:
        u = sequence(meta, tokenizer.encode(document))
        windows = oracle.scoring_windows(len(u), CONTEXT)
        assert len(u) <= CONTEXT or len(windows) > 1
        for begin, end, first in windows:
            logits = oracle.forward(meta, params, u[begin:end]).astype(np.float64)[first - 1 - begin : end - 1 - begin]
            shifted = logits - logits.max(axis=1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            targets = np.array(u[first:end])
            nats -= logp[np.arange(targets.size), targets].sum()
            hits += int((logits.argmax(axis=1) == targets).sum())
            ties += int(oracle.near_tie(logits).sum())
            positions += targets.size
    assert record["positions"] == positions
    assert abs(record["top1"] * positions - hits) <= ties
    assert abs(np.log(record["perplexity"]) - nats / positions) <= 1e-3 * (1 + nats / positions)


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_context_overflow_is_one_line_unless_the_prompt_is_truncated(member, tmp_path, rng, executor):
    path, tokenizer, meta, params = member
    ids = tokenizer.encode(text_of(rng, 60))
    assert len(ids) > CONTEXT
    write_rgb(tmp_path / "long.pxi", oracle.token_pixels(ids)[None])
    one_line_refusal(pxgl("infer", "-i", "long.pxi", "-m", str(path), "-x", executor, cwd=tmp_path), "context")
    prompt = tokenizer.decode(ids[:10])
    run = pxgl("generate", prompt, "-m", str(path), "-x", executor, "-n", str(CONTEXT - 5), cwd=tmp_path)
    one_line_refusal(run, "context", "--truncate-prompt")

    new = 3
    run = pxgl(
        "generate",
        "-i",
        "long.pxi",
        "-m",
        str(path),
        "-x",
        executor,
        "-n",
        str(new),
        "--truncate-prompt",
        "--json",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    kept = ids[-(CONTEXT - new - ("bos" in meta)) :]
    logits = last_logits(meta, params, [kept])
    if not oracle.near_tie(logits)[0]:
        assert json.loads(run.stdout)["tokens"][0] == int(logits.argmax())


def test_prompts_past_the_slots_run_in_groups_each_as_alone(member, gpu, rng):
    """An engine of 2 KV-cache slots given 3 prompts decodes them in two groups; each prompt's tokens are those
    it gets alone, its first the oracle's (away from a near-tie)."""
    path, _, meta, params = member
    rows = [rng.integers(0, meta["vocab_size"], int(rng.integers(1, 12))).tolist() for _ in range(3)]
    steps = 6
    with Engine(open_model(path), gpu=gpu, slots=2) as engine:
        assert engine.slots == 2
        together = engine.generate(rows, steps, top_logprobs=1)
        alone = [engine.generate([row], steps).tokens[0] for row in rows]
    assert together.tokens.shape == (3, steps) and together.top_ids.shape == (3, steps, 1)
    for r, row in enumerate(rows):
        assert together.tokens[r].tolist() == alone[r].tolist(), f"prompt {r}"
        logits = last_logits(meta, params, [row])
        if not oracle.near_tie(logits)[0]:
            assert together.tokens[r, 0] == logits.argmax() == together.top_ids[r, 0, 0]


def test_a_window_scored_in_pieces_equals_the_oracles_log_softmax(member, gpu, rng, monkeypatch):
    """A window whose logits would pass SCORE_LOGIT_BYTES (GPT-2's 1,024 positions of 50,257 ids) is prefilled
    in pieces: each target's log p and predicted id still those of the oracle's whole-window logits."""
    path, _, meta, params = member
    monkeypatch.setattr(transformer_engine, "SCORE_LOGIT_BYTES", 4 * 4 * meta["vocab_size"])  # pieces of 4 rows
    tokens = rng.integers(0, meta["vocab_size"], CONTEXT)
    first = int(rng.integers(1, CONTEXT))
    with Engine(open_model(path), gpu=gpu) as engine:
        ids, logprobs = engine.score_window(tokens, first)
    logits = oracle.forward(meta, params, tokens).astype(np.float64)[first - 1 : -1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(len(ids)), tokens[first:]]
    assert np.abs(logprobs - expected).max() <= oracle.AGREEMENT * (1 + np.abs(logits).max())
    assert ((ids == logits.argmax(axis=1)) | oracle.near_tie(logits)).all()


def test_a_vocabulary_past_65536_gives_two_pixel_predictions(tmp_path, rng):
    architecture = random_architecture(
        rng,
        vocab_size=int(rng.integers(65537, 70000)),
        width=32,
        heads=2,
        kv_heads=2,
        head_dim=16,
        layers=1,
        context_length=16,
    )
    path = tmp_path / "wide.pxi"
    write_random_model(path, architecture, "q8", int(rng.integers(1 << 32)), head_gain=HEAD_GAIN)
    meta, params = oracle_reads(path)
    # one row: llvmpipe runs the logits' 65,537+ rows as as many work groups, ~6 s a prompt on 2 busy cores
    rows = [rng.integers(0, architecture.vocab_size, int(rng.integers(2, 16)))]
    rows[0][int(rng.integers(len(rows[0])))] = int(rng.integers(65536, architecture.vocab_size))  # a third byte
    write_rgb(tmp_path / "in.pxi", oracle.token_pixels(rows[0])[None])
    run = pxgl("infer", "-i", "in.pxi", "-m", str(path), "-o", "out.pxi", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    pixels = read_rgb(tmp_path / "out.pxi")
    assert pixels.shape == (1, 2, 3)
    assert_predictions_agree(pixels, last_logits(meta, params, rows), "vocabulary past 65,536")
    assert [json.loads(line)["id"] for line in run.stdout.splitlines()] == oracle.read_predictions(pixels)[0].tolist()


def test_a_model_without_a_tokenizer_runs_token_pixels_only(tmp_path, rng):
    """Token pixels in, pixels out: generate --input writes the greedy film strip the oracle replays; text is
    refused in one line."""
    architecture = random_architecture(rng, context_length=CONTEXT)
    path = tmp_path / "pixels_only.pxi"
    write_random_model(path, architecture, "q4", int(rng.integers(1 << 32)), head_gain=HEAD_GAIN)
    meta, params = oracle_reads(path)
    rows = [rng.integers(0, architecture.vocab_size, n).tolist() for n in (3, 9)]
    texture = np.zeros((2, 9, 3), np.uint8)
    for r, row in enumerate(rows):
        texture[r, : len(row)] = oracle.token_pixels(row)
    write_rgb(tmp_path / "in.pxi", texture)
    steps = 4
    run = pxgl("generate", "-i", "in.pxi", "-m", str(path), "-n", str(steps), "-o", "strip.pxi", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    strip = oracle.token_ids(read_rgb(tmp_path / "strip.pxi"))
    assert strip.shape == (2, steps)
    assert strip.tolist() == [json.loads(line)["tokens"] for line in run.stdout.splitlines()]
    for r, row in enumerate(rows):
        tokens = sequence(meta, row)
        for step in range(steps):
            logits = oracle.forward(meta, params, tokens)[-1:]
            if oracle.near_tie(logits)[0]:
                break
            assert strip[r, step] == logits.argmax(), f"row {r}, step {step}"
            tokens.append(int(strip[r, step]))
    one_line_refusal(pxgl("infer", "some text", "-m", str(path), cwd=tmp_path), "no tokenizer", "--input")

    program = tmp_path / "pixels_only.program.pxi"  # pxvm's program, compiled to a file and run from it
    assert pxgl("compile", "-m", str(path), "-o", str(program), cwd=tmp_path).returncode == 0
    run = pxgl("infer", "-i", "in.pxi", "-m", str(path), "--program", str(program), "-o", "p.pxi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert_predictions_agree(read_rgb(tmp_path / "p.pxi"), last_logits(meta, params, rows), "--program")


def test_inspect_describes_a_version_2_model_and_bad_input_is_one_line(member, tmp_path):
    path, tokenizer, meta, _ = member
    run = pxgl("inspect", str(path), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    layers, context, kv, d = meta["layers"], meta["context_length"], meta["kv_heads"], meta["head_dim"]
    assert record["kv_cache_bytes"] == 2 * layers * context * kv * d * 2
    assert {t["name"]: (t["quant"], t["offset"]) for t in record["tensors"]} == {
        name: (entry["quant"], entry["offset"]) for name, entry in meta["tensors"].items()
    }
    assert record["model"]["vocab_size"] == meta["vocab_size"] == tokenizer.vocab_size
    run = pxgl("info", "-m", str(path), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["kv_cache_bytes_per_slot"] == 2 * layers * context * kv * d * 2
    sizes = [oracle.tensor_bytes(tuple(t["shape"]), t["quant"]) for t in meta["tensors"].values()]
    assert record["weight_bytes"] == sum(sizes)

    write_rgb(tmp_path / "bad.pxi", oracle.token_pixels([meta["vocab_size"]])[None])
    one_line_refusal(pxgl("infer", "-i", "bad.pxi", "-m", str(path), cwd=tmp_path), "vocab size")
    (tmp_path / "text.txt").write_text("some text to score")
    one_line_refusal(pxgl("eval", "-m", str(path), "-x", "pxvm", "-t", "text.txt", cwd=tmp_path), "pxvm", "score")
    one_line_refusal(pxgl("eval", "-m", str(path), cwd=tmp_path), "--text")
