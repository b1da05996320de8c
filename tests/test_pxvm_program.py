"""The compiled pixellm program on the GPU interpreter: same prediction pixels as Model A and the numpy
oracle (tests/oracle.py) on 1,000 random prompts, for the default model size and others; its meaning
checked on the reference interpreter too; trace, tiling and the Engine's executor choice.

Rule for a match (as for Model A): ids equal except where the oracle calls a near tie; confidence ±1."""

import json
from pathlib import Path

import numpy as np
import pytest
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors.protocol import ExecutorInputs
from pxgl.executors.pxvm import PxvmExecutor
from pxgl.pxi import decode_predictions, encode_tokens
from pxgl.pxvm.asm import assemble
from pxgl.pxvm.compiler import compile_program, scratch_layout
from pxgl.pxvm.validator import validate_program
from pxgl.spec import meta_path_for

from tests.models import params_of, random_model, random_rows
from tests.reference import oracle
from tests.reference import pxvm as pxvm_reference


def meta_of(model) -> dict:
    return json.loads(meta_path_for(Path(model.source)).read_text())


@pytest.mark.parametrize("dims", [(1024, 128, 128, 16), (512, 64, 96, 8)])
def test_thousand_prompts_match_model_a_and_oracle(tmp_path, gpu, seed, dims):
    rng = np.random.default_rng(seed)
    vocab, embed, hidden, window = dims
    model = random_model(tmp_path, rng, vocab, embed, hidden, window)
    rows = random_rows(rng, 1000, vocab, max_len=200)
    pixels = encode_tokens(rows, vocab)
    pxvm, passes = Engine(model, gpu=gpu, executor="pxvm"), Engine(model, gpu=gpu)
    for engine in (pxvm, passes):
        engine.predict(pixels)  # allocate this batch's textures, then poison them before the checked run
        engine.poison()
    got, model_a = pxvm.predict(pixels), passes.predict(pixels)
    lg = oracle.logits(params_of(model), rows, window)
    oracle.assert_agrees(got, lg, f"pxvm vs oracle, dims {dims} (seed {seed})")
    oracle.assert_agrees(model_a, lg, f"Model A vs oracle, dims {dims} (seed {seed})")
    ids, _ = decode_predictions(got)
    ids_a, _ = decode_predictions(model_a)
    differ = (ids != ids_a) & ~oracle.near_tie(lg)
    assert not differ.any(), f"pxvm and Model A differ at {np.flatnonzero(differ)[:10]} (seed {seed})"


@pytest.mark.parametrize("dims", [(300, 17, 33, 5), (2, 1, 1, 1)])
def test_odd_model_sizes_compile_and_run(tmp_path, gpu, seed, dims):
    rng = np.random.default_rng(seed)
    vocab, embed, hidden, window = dims
    model = random_model(tmp_path, rng, vocab, embed, hidden, window)
    rows = random_rows(rng, 200, vocab, max_len=30)
    got = Engine(model, gpu=gpu, executor="pxvm").predict(encode_tokens(rows, vocab))
    lg = oracle.logits(params_of(model), rows, window)
    oracle.assert_agrees(got, lg, f"dims {dims} (seed {seed})")


def test_compiled_program_means_the_forward_pass_on_the_reference_interpreter(tmp_path, rng, seed):
    """The reference interpreter, which defines the opcodes, running the compiled program gives the
    oracle's logits and prediction: the compiler emits the forward pass of docs/FORMATS.md §3."""
    model = random_model(tmp_path, rng, vocab=200, embed=24, hidden=40, window=6)
    meta, layout = meta_of(model), scratch_layout(model.spec)
    program = compile_program(model.spec)
    rows = random_rows(rng, 30, 200, max_len=12)
    lg = oracle.logits(oracle.dequantize(meta, model.weights), rows, 6)
    ids, conf = oracle.predict(lg)
    for r, row in enumerate(rows):
        result = pxvm_reference.run(program, meta, model.weights, row[-6:].tolist())
        logits = result.scratch[layout.logits : layout.logits + 200]
        np.testing.assert_allclose(logits, lg[r], rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
        if not oracle.near_tie(lg[r : r + 1])[0]:
            assert result.pixel == (ids[r] % 256, ids[r] // 256, int(conf[r])), f"prompt {r} (seed {seed})"


def test_trace_reads_embed_hidden_logits_from_scratch(tmp_path, gpu, rng, seed):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=40, window=6)
    rows = random_rows(rng, 9, 300, max_len=20)
    trace = Engine(model, gpu=gpu, executor="pxvm").trace(encode_tokens(rows, 300))
    p = params_of(model)
    pooled = np.stack([p["embed"][r[-6:]].mean(axis=0) for r in rows])
    hidden = np.maximum(pooled @ p["layer0.weight"] + p["layer0.bias"], 0)
    lg = oracle.logits(p, rows, 6)
    np.testing.assert_allclose(trace.context, pooled, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
    np.testing.assert_allclose(trace.hidden[0], hidden, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
    side = model.spec.logits_side
    assert trace.logits.shape == (9, side, side)
    flat = trace.logits.reshape(9, -1)
    np.testing.assert_allclose(flat[:, :300], lg, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")
    assert np.isnan(flat[:, 300:]).all(), "cells past the vocabulary are not logits"
    oracle.assert_agrees(trace.prediction, lg, f"trace (seed {seed})")
    assert trace.tokens.shape == (9, 6, 3)


def test_trace_of_a_foreign_program_has_no_named_vectors(tmp_path, gpu, rng):
    """Only the compiled program's scratch layout is known; another program's trace leaves them None."""
    model = random_model(tmp_path, rng, vocab=50, embed=8, hidden=8, window=4)
    text = ".scratch 60\nLOAD_WEIGHT_SLICE b_out, 0, 50, s0\nARGMAX s0, 50, s50\nSTORE_PIXEL s50, o0\nHALT\n"
    program = validate_program(assemble(text, "bias only"), model.spec, "bias only")
    trace = Engine(model, gpu=gpu, executor="pxvm", program=program).trace(encode_tokens([[1, 2]], 50))
    assert trace.context is None and trace.hidden is None and trace.logits is None
    b_out = params_of(model)["out.bias"]
    assert decode_predictions(trace.prediction)[0][0] == int(np.argmax(b_out))


def test_batches_over_one_tile_are_split(tmp_path, gpu, rng, seed):
    model = random_model(tmp_path, rng, vocab=64, embed=8, hidden=12, window=4)
    engine = Engine(model, gpu=gpu, executor="pxvm")
    engine.executor.max_tile = 37  # as a GPU with small limits would set it
    rows = random_rows(rng, 100, 64, max_len=10)
    got = engine.predict(encode_tokens(rows, 64))
    assert got.shape == (100, 1, 3)
    lg = oracle.logits(params_of(model), rows, 4)
    oracle.assert_agrees(got, lg, f"tiled (seed {seed})")


def test_a_program_validated_for_another_model_is_refused(tmp_path, gpu, rng):
    small = random_model(tmp_path, rng, vocab=64, embed=8, hidden=12, window=4, name="small")
    other = random_model(tmp_path, rng, vocab=64, embed=8, hidden=12, window=5, name="other")
    program = validate_program(compile_program(other.spec), other.spec, "other.program.pxi")
    with pytest.raises(PxglError, match="not validated for this model"):
        PxvmExecutor(gpu, ExecutorInputs(small.spec, gpu.uint_texture(small.weights, "w"), program))
    with pytest.raises(PxglError, match="runs on the pxvm executor"):
        Engine(small, gpu=gpu, executor="passes", program=program)
