"""Issue 27's bar on llvmpipe: a GPT-2-124M-shaped q8 model (12 layers of width 768, vocabulary 50,257, context
1,024; random weights, the output head scaled for margins) generates, after a 16-token prompt, the 8 greedy
tokens of the independent oracle (tests/reference/transformer.py) on every GPU executor, and pxvm (whose
matrix-vector opcode is too slow on llvmpipe for 24 positions in CI) gives its one prediction pixel after the
prompt. Its embeddings alone are a 41 MB matrix: the projections must be fast enough for CI, and nothing is
refused. The member and the oracle's logits are built once for all executors (an executor joins with one line
in EXECUTORS)."""

import json
import os
import secrets
from collections.abc import Callable

import numpy as np
import pytest
from pxgl.gl import GLBackend
from pxgl.transformer import TransformerArchitecture, TransformerSpec, lay_out, random_values
from pxgl.transformer.fused import FusedTransformer
from pxgl.transformer.gpu import PassesTransformer, prediction_pixels
from pxgl.transformer.pxvm import PxvmTransformer

from tests.reference import transformer as oracle
from tests.test_transformer_passes import HEAD_GAIN, assert_margins_wide, assert_predictions_agree

GPT2_124M = TransformerArchitecture(
    vocab_size=50257,
    context_length=1024,
    width=768,
    layers=12,
    heads=12,
    kv_heads=12,
    head_dim=64,
    attention_scale=0.125,
    mlp_kind="gelu_tanh",
    mlp_width=3072,
    norm_kind="layernorm",
    norm_eps=1e-5,
    rope=None,
    biases=frozenset({"qkv", "attn_out", "mlp"}),
    tied_head=True,
)
PROMPT, STEPS = 16, 8
EXECUTORS: dict[str, Callable[[GLBackend, TransformerSpec, bytes], object]] = {
    "passes": PassesTransformer,
    "fused": FusedTransformer,
}
"""Each GPU executor of version 2: built from (gpu, spec, weight bytes), with generate(prompt, steps) and close()."""


class Member:
    """The model, its prompt, and the oracle's logits of each sequence an executor generated (most often one)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.spec, self.weight_bytes = lay_out(GPT2_124M, random_values(GPT2_124M, rng, HEAD_GAIN), "q8")
        self.meta = json.loads(json.dumps(self.spec.to_meta()))  # what a reader of the meta file sees
        self.params = oracle.dequantize(self.meta, np.frombuffer(self.weight_bytes, np.uint8))
        self.prompt = rng.integers(0, GPT2_124M.vocab_size, PROMPT)
        self._logits: dict[tuple[int, ...], np.ndarray] = {}

    def oracle_logits(self, generated: np.ndarray) -> np.ndarray:
        """The oracle's logits at each generated token's position: its greedy replay of the sequence."""
        sequence = tuple(np.concatenate([self.prompt, generated[:-1]]).tolist())
        if sequence not in self._logits:
            self._logits[sequence] = oracle.forward(self.meta, self.params, sequence)[PROMPT - 1 :]
        return self._logits[sequence]


@pytest.fixture(scope="module")
def member() -> Member:
    return Member(int(os.environ.get("PXGL_TEST_SEED") or secrets.randbits(32)))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_gpt2_124m_shaped_q8_generates_the_oracles_greedy_tokens(gpu, member, executor, request):
    request.node.user_properties.append(("seed", member.seed))
    model = EXECUTORS[executor](gpu, member.spec, member.weight_bytes)
    try:
        generated = np.asarray(model.generate(member.prompt, STEPS))
    finally:
        model.close()
    theirs = member.oracle_logits(generated)
    assert_margins_wide(theirs)
    ties = oracle.near_tie(theirs)
    assert ties.sum() <= STEPS // 2, f"{ties.sum()} of {STEPS} steps are near-ties: too few compared"
    differ = np.flatnonzero((generated != theirs.argmax(axis=1)) & ~ties)
    assert not len(differ), (
        f"{executor}: step {differ[0]} chose {generated[differ[0]]}, not {theirs[differ[0]].argmax()}"
    )


def test_gpt2_124m_shaped_q8_pxvm_gives_the_oracles_prediction_pixel(gpu, member, request):
    request.node.user_properties.append(("seed", member.seed))
    model = PxvmTransformer(gpu, member.spec, member.weight_bytes)
    try:
        ours = model.run(member.prompt, all_logits=False)
    finally:
        model.close()
    theirs = member.oracle_logits(ours.ids[:1])  # the sequence is the prompt: the oracle's last position
    assert_predictions_agree(prediction_pixels(ours.ids, ours.sums, GPT2_124M.vocab_size), theirs, "pxvm")
