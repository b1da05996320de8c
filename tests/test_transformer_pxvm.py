"""The pxvm executor of version 2 (Model B, docs/FORMATS.md §7.7): the model's compiled program interpreted by
glsl/pxvm_tf.comp on the GPU — llvmpipe here — against the independent oracle (tests/reference/transformer.py)
on random members of every feature; greedy generation against the oracle's greedy replay; the validator
refusing each kind of broken program in one line."""

import pytest
from pxgl.transformer.gpu import prediction_pixels
from pxgl.transformer.pxvm import PxvmTransformer

from tests.reference import transformer as oracle
from tests.test_transformer_engine import assert_logits_agree
from tests.test_transformer_passes import assert_margins_wide, assert_predictions_agree, member, styled


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
