"""The pxvm executor of version 2 (Model B, docs/FORMATS.md §7.7): the model's compiled program interpreted by
glsl/pxvm_tf.comp on the GPU — llvmpipe here — against the independent oracle (tests/reference/transformer.py)
on random members of every feature; greedy generation against the oracle's greedy replay; the validator
refusing each kind of broken program in one line."""

import math

import numpy as np
import pytest
from pxgl.errors import PxglError
from pxgl.transformer.gpu import prediction_pixels
from pxgl.transformer.pxvm import PxvmTransformer

from tests.reference import transformer as oracle
from tests.test_transformer_engine import assert_logits_agree
from tests.test_transformer_passes import SPLIT_BUDGET, assert_margins_wide, assert_predictions_agree, member, styled


@pytest.mark.parametrize(
    ("style", "quant"),
    [("gpt2", "q8"), ("llama_halves", "q4"), ("llama_pairs", "u8"), ("gpt2_exact", "f16"), ("any", "mixed")],
)
def test_prefill_logits_and_prediction_pixels_equal_the_oracles(tmp_path, rng, gpu, style, quant):
    architecture = styled(rng, style, context_length=288 if quant == "q4" else 64, layers=2)
    quants = quant
    if quant == "mixed":
        quants = {name: str(rng.choice(["q8", "q4", "u8", "f16"])) for name in architecture.shapes()}
    meta, params, (spec, pixels) = member(tmp_path, rng, architecture, quants)
    n = architecture.context_length if quant == "q4" else int(rng.integers(1, architecture.context_length + 1))
    tokens = rng.integers(0, architecture.vocab_size, n)
    model = PxvmTransformer(gpu, spec, pixels)
    try:
        ours = model.run(tokens)
    finally:
        model.close()
    theirs = oracle.forward(meta, params, tokens)
    assert_margins_wide(theirs)
    what = f"{style} {quant} {architecture}"
    assert_logits_agree(ours.logits, theirs, what)
    assert_predictions_agree(prediction_pixels(ours.ids, ours.sums, architecture.vocab_size), theirs, what)


def test_a_vocabulary_past_65536_predicts_in_two_pixels_through_split_argmax(tmp_path, rng, gpu):
    vocab = int(rng.integers(65537, 70000))
    architecture = styled(rng, "any", vocab_size=vocab, width=32, heads=2, head_dim=16, kv_heads=1, layers=1)
    meta, params, (spec, pixels) = member(tmp_path, rng, architecture, "q8")
    tokens = rng.integers(65536, vocab, 12)  # ids that need the third byte; 12 rows: a median margin ≥ 10 τ
    model = PxvmTransformer(gpu, spec, pixels, loop_budget=SPLIT_BUDGET)
    assert math.ceil(vocab / model.plan.argmax_segment) > 1, "the prediction must run in several segments here"
    try:
        ours = model.run(tokens)
    finally:
        model.close()
    theirs = oracle.forward(meta, params, tokens)
    assert_margins_wide(theirs)
    assert_logits_agree(ours.logits, theirs, "wide vocabulary")
    pixels_out = prediction_pixels(ours.ids, ours.sums, vocab)
    assert pixels_out.shape == (12, 2, 3)
    assert_predictions_agree(pixels_out, theirs, "wide vocabulary")


@pytest.mark.parametrize("style", ["gpt2", "llama_halves"])
def test_greedy_generation_equals_the_oracles_greedy_replay(tmp_path, rng, gpu, style):
    """Each step's PREDICT writes its id as the next position's token on the GPU; every step must be the
    oracle's argmax over the generated sequence except at a near-tie (tests/test_transformer_passes.py's rule)."""
    context = 64
    architecture = styled(rng, style, context_length=context, layers=2)
    meta, params, (spec, pixels) = member(tmp_path, rng, architecture, str(rng.choice(["q8", "q4"])))
    prompt = rng.integers(0, architecture.vocab_size, int(rng.integers(1, 17)))
    steps = context - len(prompt)
    model = PxvmTransformer(gpu, spec, pixels)
    try:
        generated = model.generate(prompt, steps)
        with pytest.raises(PxglError, match="the context holds"):
            model.generate(generated[-1:], 1)
    finally:
        model.close()
    sequence = np.concatenate([prompt, generated])
    theirs = oracle.forward(meta, params, sequence[:-1])[len(prompt) - 1 :]
    assert_margins_wide(theirs)
    ties = oracle.near_tie(theirs)
    assert ties.mean() <= 0.25, f"{ties.sum()} of {steps} steps are near-ties: too few steps compared"
    differ = np.flatnonzero((generated != theirs.argmax(axis=1)) & ~ties)
    assert not len(differ), f"{style}: step {differ[0]} chose {generated[differ[0]]}, not {theirs[differ[0]].argmax()}"


def test_pieces_and_decode_steps_through_the_gpu_cache_equal_one_pass(tmp_path, rng, gpu):
    """A prompt longer than the rows one run holds runs in pieces, each reading the cache the pieces before
    stored; then a token at a time; the last position alone; past the context or vocabulary one error."""
    architecture = styled(rng, str(rng.choice(["gpt2", "llama_pairs"])), context_length=40)
    meta, params, (spec, pixels) = member(tmp_path, rng, architecture, "q8")
    n = architecture.context_length
    tokens = rng.integers(0, architecture.vocab_size, n)
    split = int(rng.integers(8, n))
    model = PxvmTransformer(gpu, spec, pixels)
    model.max_rows = 3  # the pieces a prompt past one storage buffer's rows runs in, here at a small size
    try:
        first = model.run(tokens[:split])
        stepped = [first.logits] + [model.run(tokens[i : i + 1]).logits for i in range(split, n)]
        assert model.length == n
        with pytest.raises(PxglError, match="the context holds"):
            model.run(tokens[:1])
        model.reset()
        with pytest.raises(PxglError, match=r"token ids must lie in 0\.\."):
            model.run([architecture.vocab_size])
        last = model.run(tokens, all_logits=False)
    finally:
        model.close()
    theirs = oracle.forward(meta, params, tokens)
    assert_margins_wide(theirs)
    assert_logits_agree(np.concatenate(stepped), theirs, f"pieces of 3 to {split}, then decode")
    assert_logits_agree(last.logits, theirs[-1:], "the last position alone")
