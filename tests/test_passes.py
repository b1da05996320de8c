"""Model A on the GPU, pass by pass and end to end, against the numpy oracle (tests/oracle.py).

Tolerances: float32 sums in another order, so T_embed/T_hidden/T_logits agree to 1e-5 relative to the
magnitude of the summed terms; predicted ids agree exactly except on oracle near-ties; confidence ±1."""

import numpy as np
import pytest
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors import passes
from pxgl.executors.passes import logits_cells
from pxgl.pxi import encode_tokens

from tests.models import params_of, random_model, random_rows
from tests.reference import oracle


@pytest.fixture
def model(tmp_path, rng):
    return random_model(tmp_path, rng)


@pytest.fixture
def engine(model, gpu):
    return Engine(model, gpu=gpu, executor="passes")


def assert_close(gpu_values, reference, scale, what, seed):
    """|gpu - ref| ≤ 1e-5 · scale, where scale bounds the sum of |terms| (float32 reordering error)."""
    err = np.abs(gpu_values - reference) / np.maximum(scale, 1e-6)
    assert np.isfinite(gpu_values).all(), f"{what}: unwritten or non-finite values (seed {seed})"
    assert err.max() <= 1e-5, f"{what}: worst relative error {err.max():.2e} (seed {seed})"


def test_context_pass_alone(engine, model, gpu, rng, seed):
    rows = random_rows(rng, 64, model.spec.vocab_size)
    act = engine.executor.activations(len(rows))
    pixels = encode_tokens(rows, model.spec.vocab_size)
    window = model.spec.context_window
    tails = np.zeros((len(rows), window, 3), np.uint8)
    for r, row in enumerate(rows):
        tails[r, : min(len(row), window)] = pixels[r, max(0, len(row) - window) : len(row)]
    gpu.write(act.tokens, tails)
    passes.context(gpu, model.spec, engine.executor.programs, engine.weights, act, len(rows))
    gpu.barrier()
    got = gpu.read_float(act.context)[: len(rows)]
    embed = params_of(model)["embed"]
    want = np.stack([embed[r[-window:]].mean(axis=0) for r in rows])
    assert_close(got, want, np.abs(embed).max(), "T_context", seed)


def test_dense_pass_alone(engine, model, gpu, rng, seed):
    n = 50
    act = engine.executor.activations(n)
    x = rng.normal(0, 1, (n, model.spec.embed_dim)).astype(np.float32)
    gpu.write(act.context, x)
    passes.dense(gpu, engine.executor.programs, 0, engine.weights, act.context, act.hidden[0], n)
    gpu.barrier()
    p = params_of(model)
    want = np.maximum(x @ p["layer0.weight"] + p["layer0.bias"], 0)
    scale = np.abs(x) @ np.abs(p["layer0.weight"]) + np.abs(p["layer0.bias"])
    assert_close(gpu.read_float(act.hidden[0])[:n], want, scale, "T_hidden[0]", seed)


def test_logits_pass_alone(engine, model, gpu, rng, seed):
    n = 33
    act = engine.executor.activations(n)
    h = np.maximum(rng.normal(0, 1, (n, model.spec.hidden[-1])), 0).astype(np.float32)
    gpu.write(act.hidden[-1], h)
    passes.logits(gpu, engine.executor.programs, engine.weights, act.hidden[-1], act.logits, n)
    gpu.barrier()
    p = params_of(model)
    want = h @ p["out.weight"] + p["out.bias"]
    scale = np.abs(h) @ np.abs(p["out.weight"]) + np.abs(p["out.bias"])
    side, grid = model.spec.logits_side, int(engine.executor.programs.constants["LOGITS_GRID"])
    got = logits_cells(gpu.read_float(act.logits), n, side, grid).reshape(n, -1)[:, : model.spec.vocab_size]
    assert_close(got, want, scale, "T_logits", seed)


def test_argmax_alone_with_planted_ties(engine, model, gpu, rng, seed):
    n = 256
    vocab, side = model.spec.vocab_size, model.spec.logits_side
    grid = int(engine.executor.programs.constants["LOGITS_GRID"])
    lg = rng.normal(0, rng.uniform(0.1, 5, (n, 1)), (n, vocab)).astype(np.float32)
    for r in range(0, n, 2):  # plant exact ties for the maximum: the lowest index must win
        k = rng.choice(vocab, size=int(rng.integers(2, 5)), replace=False)
        lg[r, k] = lg[r].max() + 1
    act = engine.executor.activations(n)
    texture = np.full((act.logits.height, act.logits.width), np.nan, np.float32)
    cells = np.full((n, side * side), np.nan, np.float32)
    cells[:, :vocab] = lg
    for p in range(n):
        y, x = (p // grid) * side, (p % grid) * side
        texture[y : y + side, x : x + side] = cells[p].reshape(side, side)
    gpu.write(act.logits, texture)
    passes.argmax(gpu, engine.executor.programs, act.logits, act.prediction, n)
    gpu.barrier()
    pred = gpu.read_uint8(act.prediction)[:n, :, :3]
    got_ids = pred[:, 0, 0].astype(int) + 256 * pred[:, 0, 1].astype(int)
    ids, conf = oracle.predict(lg)
    assert (got_ids == ids).all(), f"argmax differs at {np.flatnonzero(got_ids != ids)[:10]} (seed {seed})"
    assert np.abs(pred[:, 0, 2].astype(int) - conf.astype(int)).max() <= 1, f"confidence (seed {seed})"


def test_thousand_random_prompts_match_oracle(engine, model, rng, seed):
    rows = random_rows(rng, 1000, model.spec.vocab_size, max_len=200)
    pixels = encode_tokens(rows, model.spec.vocab_size)
    engine.predict(pixels)  # allocate this batch's textures, then poison them before the checked run
    engine.poison()
    pred = engine.predict(pixels)
    lg = oracle.logits(params_of(model), rows, model.spec.context_window)
    oracle.assert_agrees(pred, lg, f"seed {seed}")


def test_trace_reads_back_every_intermediate(engine, model, rng, seed):
    rows = random_rows(rng, 9, model.spec.vocab_size, max_len=40)
    trace = engine.trace(encode_tokens(rows, model.spec.vocab_size))
    p = params_of(model)
    window = model.spec.context_window
    pooled = np.stack([p["embed"][r[-window:]].mean(axis=0) for r in rows])
    assert_close(trace.context, pooled, np.abs(p["embed"]).max(), "trace context", seed)
    lg = oracle.logits(p, rows, window)
    flat = trace.logits.reshape(len(rows), -1)[:, : model.spec.vocab_size]
    assert_close(flat, lg, np.abs(lg).max() + 1, "trace logits", seed)
    oracle.assert_agrees(trace.prediction, lg, f"seed {seed}")


@pytest.mark.parametrize("batch", [1, 7, 4096, "over_texture_limit"])
def test_batches_match_oracle(engine, model, gpu, rng, seed, batch):
    n = gpu.limits.max_texture_size + 7 if batch == "over_texture_limit" else batch
    rows = random_rows(rng, n, model.spec.vocab_size, max_len=24)
    pred = engine.predict(encode_tokens(rows, model.spec.vocab_size))
    if batch == "over_texture_limit":
        assert n > engine.executor.max_tile, "this batch must take more than one tile"
    lg = oracle.logits(params_of(model), rows, model.spec.context_window)
    assert pred.shape == (n, 1, 3)
    oracle.assert_agrees(pred, lg, f"seed {seed}")


@pytest.mark.parametrize("dims", [(512, 64, 96, 8), (300, 17, 33, 5), (2, 1, 1, 1)])
def test_other_model_sizes_run_without_code_change(tmp_path, gpu, seed, dims):
    rng = np.random.default_rng(seed)
    vocab, embed, hidden, window = dims
    model = random_model(tmp_path, rng, vocab, embed, hidden, window)
    rows = random_rows(rng, 200, vocab, max_len=30)
    pred = Engine(model, gpu=gpu, executor="passes").predict(encode_tokens(rows, vocab))
    oracle.assert_agrees(pred, oracle.logits(params_of(model), rows, window), f"seed {seed}")


def test_an_unwritten_prediction_pixel_is_an_error_not_an_answer(engine, model, rng, monkeypatch):
    pixels = encode_tokens(random_rows(rng, 5, model.spec.vocab_size, max_len=20), model.spec.vocab_size)
    engine.predict(pixels)
    engine.poison()
    argmax_all = passes.argmax
    monkeypatch.setattr(passes, "argmax", lambda gpu, s, lg, pred, n: argmax_all(gpu, s, lg, pred, n - 1))
    with pytest.raises(PxglError, match="left 1 prediction pixel"):
        engine.predict(pixels)
