"""The Python API as the README shows it: `from pxgl import Engine, Sampling`, and an engine opened without an
executor generates whatever is asked, as the CLI does (sampled and with alternatives, on passes), against
the oracle's replay (docs/FORMATS.md §11)."""

import json

import pxgl
import pytest
from pxgl import Engine, Sampling
from pxgl.errors import PxglError

from tests.cli_process import pxgl as run_pxgl
from tests.models import params_of, random_model
from tests.reference.generation import assert_replays
from tests.reference.models import random_rows


def test_sampling_is_importable_from_pxgl():
    from pxgl.generation import Sampling as Defined

    assert Sampling is Defined and "Sampling" in pxgl.__all__


def test_an_engine_without_an_executor_samples_and_reports_alternatives(tmp_path, gpu, rng, seed):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    rows = [list(map(int, row)) for row in random_rows(rng, 6, 300, max_len=9)]
    sampling = {"temperature": 0.8, "top_p": 0.9, "seed": int(rng.integers(2**32))}
    with Engine(model, gpu=gpu) as engine:
        assert engine.executor_name == "fused", "auto should pick fused for this model; the test needs it"
        sampled = engine.generate(rows, 8, Sampling(**sampling))
        alternatives = engine.generate(rows, 4, top_logprobs=3)
        greedy = engine.generate(rows, 4)
    params = params_of(model)
    compared = assert_replays(params, rows, sampled.tokens, sampled.logprobs, sampling, f"sampled, seed {seed}")
    compared += assert_replays(params, rows, greedy.tokens, greedy.logprobs, {}, f"greedy, seed {seed}")
    assert compared >= (sampled.tokens.size + greedy.tokens.size) // 2, f"seed {seed}: only {compared} compared"
    assert alternatives.top_ids.shape == (6, 4, 3)
    assert (alternatives.top_ids[:, :, 0] == alternatives.tokens).all(), f"seed {seed}"


def test_an_engine_asked_for_fused_refuses_to_sample_saying_how_in_python(tmp_path, gpu, rng):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    expected = r'in Python: executor="passes", or no executor\)$'
    with Engine(model, gpu=gpu, executor="fused") as engine, pytest.raises(PxglError, match=expected):
        engine.generate([[1, 2]], 4, Sampling(temperature=0.8))


def test_the_cli_asked_for_auto_samples_as_passes_does(tmp_path, seed):
    sample = ["generate", "pixels and", "-m", "pixellm_v0", "-n", "6", "-t", "0.8", "--seed", str(seed), "--json"]
    auto, passes = (run_pxgl(*sample, "-x", executor, cwd=tmp_path) for executor in ("auto", "passes"))
    assert auto.returncode == 0, auto.stderr
    assert passes.returncode == 0, passes.stderr
    assert json.loads(auto.stdout)["tokens"] == json.loads(passes.stdout)["tokens"], f"seed {seed}"
