"""The pixellm family (docs/FORMATS.md §2, §3) on every executor, against the numpy oracle: random members of
every context mode, depths 1 to 4, widths from 1, vocabularies that are no power of two, windows longer
than the prompts; the fused executor's envelope; `auto`; scoring (§9) against the oracle's recomputation."""

import math

import numpy as np
import pytest
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.evaluate import score
from pxgl.executors.fused_weights import STAGE_MAX, supports
from pxgl.loading import load_model
from pxgl.pxi import encode_tokens
from pxgl.tokenizer import Tokenizer

from tests.cartridges import random_text
from tests.reference import oracle
from tests.reference.models import params_at, random_architecture, random_rows, write_random_member

MEMBERS = 21
PROMPTS = 56
"""Per member: 21 members x 56 prompts = 1,176 prompts, each run by the three executors."""
REQUIRED = [
    ("mean", 1, {}),
    ("concat", 4, {}),
    ("attention", 1, {}),
    ("attention", 4, {"residual": True}),
    ("concat", 2, {"width": 1}),
    ("mean", 4, {"vocab": 517}),
    ("attention", 2, {"window": 40}),  # past the fused envelope: passes and pxvm run it, fused refuses
]
"""Members every run draws, whatever the seed: both-ends depths, width 1, a vocabulary no power of two, an
attention window past STAGE_MAX."""


def member(rng: np.random.Generator, index: int) -> dict:
    if index >= len(REQUIRED):
        return random_architecture(rng)
    mode, depth, extra = REQUIRED[index]
    arch = random_architecture(rng, mode=mode, depth=depth)
    if "residual" in extra:
        arch["residual"] = extra["residual"]
    if "width" in extra:
        arch["hidden"][-1] = extra["width"]
    if "vocab" in extra:
        arch["vocab_size"] = extra["vocab"]
    if "window" in extra:
        arch["context"] = arch["context"] | {"window": extra["window"]}
    return arch


def test_random_members_agree_with_the_oracle_on_every_executor(tmp_path, gpu, rng, seed):
    fused_runs = 0
    for index in range(MEMBERS):
        arch = member(rng, index)
        path = write_random_member(tmp_path, rng, arch, name=f"m{index}")
        model = load_model(path)
        window = arch["context"]["window"]
        rows = random_rows(rng, PROMPTS, arch["vocab_size"], max_len=max(2, window + 3))
        rows[0] = rows[0][:1]  # a prompt of one token: every window is longer
        lg = oracle.logits(params_at(path), rows)
        what = f"member {index} ({model.spec.architecture.describe()}), seed {seed}"
        for executor in ("passes", "pxvm", "fused"):
            if executor == "fused" and supports(model.spec, gpu) is not None:
                with pytest.raises(PxglError, match="the passes and pxvm executors run every family member"):
                    Engine(model, gpu=gpu, executor="fused")
                continue
            with Engine(model, gpu=gpu, executor=executor) as engine:
                pixels = encode_tokens(rows, arch["vocab_size"])
                engine.predict(pixels)  # allocate, then poison: an unwritten pixel cannot pass
                engine.poison()
                oracle.assert_agrees(engine.predict(pixels), lg, f"{executor}, {what}")
                if executor == "fused":
                    fused_runs += 1
                    one = np.stack([engine.predict_one(list(r)) for r in rows[:3]])[:, None, :]
                    oracle.assert_agrees(one, lg[:3], f"fused predict_one, {what}")
    assert fused_runs >= MEMBERS // 2, f"the fused envelope covers only {fused_runs} of {MEMBERS} (seed {seed})"


def test_auto_takes_fused_where_it_runs_and_passes_elsewhere(tmp_path, gpu, rng):
    inside = random_architecture(rng, mode="concat", depth=2)
    outside = random_architecture(rng, mode="attention") | {
        "context": {"mode": "attention", "window": 40, "concat": 1, "head_dim": 4}
    }
    for arch, expected in ((inside, "fused"), (outside, "passes")):
        model = load_model(write_random_member(tmp_path, rng, arch, name=expected))
        with Engine(model, gpu=gpu) as engine:
            assert engine.executor_name == expected


@pytest.mark.parametrize("executor", ["fused", "passes"])
def test_scoring_on_the_gpu_matches_the_oracle(tmp_path, gpu, rng, seed, executor):
    """Every position of every document, the first from an empty context: the GPU's log-probabilities
    add up to the oracle's bits per byte and top-1 (FORMATS §9)."""
    arch = random_architecture(rng, mode=str(rng.choice(["mean", "concat", "attention"])))
    arch["vocab_size"] = 300
    if executor == "fused":  # inside its envelope (windows past STAGE_MAX: test_random_members_agree_...)
        arch["context"]["window"] = min(arch["context"]["window"], STAGE_MAX)
    path = write_random_member(tmp_path, rng, arch)
    model = load_model(path)
    tokenizer = Tokenizer.train(random_text(rng, 3000), 300)
    documents = [random_text(rng, int(rng.integers(1, 60))) for _ in range(12)]
    with Engine(model, gpu=gpu, executor=executor) as engine:
        scores = score(engine, tokenizer, documents)
    params, window = params_at(path), arch["context"]["window"]
    nats, hits, ties, positions = 0.0, 0, 0, 0
    for document in documents:
        ids = tokenizer.encode(document)
        lg = oracle.logits(params, [ids[max(0, i - window) : i] for i in range(len(ids))])
        nats -= float(oracle.log_probabilities(lg, np.array(ids)).sum())
        near = oracle.near_tie(lg)
        hits += int(((lg.argmax(axis=1) == ids) & ~near).sum())
        ties += int(near.sum())
        positions += len(ids)
    total_bytes = sum(len(d.encode()) for d in documents)
    what = f"{executor} (seed {seed})"
    assert scores.positions == positions and scores.bytes == total_bytes, what
    assert math.isclose(scores.bits_per_byte, nats / math.log(2) / total_bytes, rel_tol=1e-4), what
    assert hits <= round(scores.top1 * positions) <= hits + ties, f"top-1, {what}"


def test_pxvm_does_not_score(tmp_path, gpu, rng):
    model = load_model(write_random_member(tmp_path, rng, random_architecture(rng)))
    with Engine(model, gpu=gpu, executor="pxvm") as engine, pytest.raises(PxglError, match="-x fused or passes"):
        engine.score(np.zeros((1, model.spec.context_window, 3), np.uint8), np.zeros(1, np.int64))
