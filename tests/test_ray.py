"""pxgl.ray_data.Predictor in Ray Data's map_batches, and predict, on a local Ray instance this module starts:
the pixels of one engine, row for row, whether the prompts come as text or as token ids. The instance
declares one GPU (the renderer's), so predict asks for GPUs as it does on a cluster."""

import numpy as np
import pytest
import ray
from pxgl.loading import open_model
from pxgl.ray_data import Predictor, predict

from tests.engines import on_one_engine
from tests.models import random_rows

MODEL = "pixellm_v0"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def predictions(dataset: ray.data.Dataset, actors: int) -> list[dict]:
    answered = dataset.map_batches(
        Predictor,
        fn_constructor_kwargs={"model": MODEL},
        batch_format="numpy",
        batch_size=32,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.5,  # two actors and the reading tasks share the two CPUs of the local instance
    )
    return sorted(answered.take_all(), key=lambda record: record["row"])


def test_text_in_pixels_out_on_two_actors(local_ray, rng, seed):
    runnable = open_model(MODEL)
    words = runnable.model.tokenizer.decode(list(range(256, 1024))).split()
    prompts = [" ".join(rng.choice(words, int(rng.integers(1, 10)))) for _ in range(300)]
    dataset = ray.data.from_items([{"row": i, "text": prompt} for i, prompt in enumerate(prompts)])
    records = predictions(dataset, actors=2)
    rows = [runnable.model.tokenizer.encode(p) for p in prompts]
    expected = on_one_engine(runnable, lambda engine: engine.predict_ids(rows))[:, 0]
    assert [r["text"] for r in records] == prompts
    assert np.array_equal(np.stack([r["pixel"] for r in records]), expected), f"seed {seed}"
    ids = expected[:, 0].astype(np.int64) + 256 * expected[:, 1].astype(np.int64)
    assert [r["id"] for r in records] == ids.tolist()
    assert np.allclose([r["confidence"] for r in records], expected[:, 2] / 255)


def test_token_ids_in_pixels_out(local_ray, rng, seed):
    runnable = open_model(MODEL)
    rows = random_rows(rng, 200, runnable.model.spec.vocab_size, max_len=12)
    dataset = ray.data.from_items([{"row": i, "ids": row} for i, row in enumerate(rows)])
    records = predictions(dataset, actors=1)
    expected = on_one_engine(runnable, lambda engine: engine.predict_ids(rows))[:, 0]
    assert np.array_equal(np.stack([r["pixel"] for r in records]), expected), f"seed {seed}"


def test_a_fixed_width_ids_array_takes_the_engines_array_path(rng, seed):
    runnable = open_model(MODEL)
    ids = rng.integers(0, runnable.model.spec.vocab_size, (50, 7))
    predictor = Predictor(MODEL)
    answered = predictor({"ids": ids})
    expected = on_one_engine(runnable, lambda engine: engine.predict_ids(ids.tolist()))[:, 0]
    assert np.array_equal(answered["pixel"], expected), f"seed {seed}"
    assert np.array_equal(answered["ids"], ids)


def test_predict_runs_an_actor_per_gpu_without_being_told_a_batch_size(local_ray, rng, seed):
    """Ray Data refuses map_batches on GPUs without a batch size: predict gives its own."""
    runnable = open_model(MODEL)
    rows = random_rows(rng, 100, runnable.model.spec.vocab_size, max_len=12)
    dataset = ray.data.from_items([{"row": i, "ids": row} for i, row in enumerate(rows)])
    records = sorted(predict(dataset, MODEL).take_all(), key=lambda record: record["row"])
    expected = on_one_engine(runnable, lambda engine: engine.predict_ids(rows))[:, 0]
    assert np.array_equal(np.stack([r["pixel"] for r in records]), expected), f"seed {seed}"
