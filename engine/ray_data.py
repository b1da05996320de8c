"""pxgl in Ray Data (the `ray` extra): a callable class for `Dataset.map_batches`, each actor holding one
engine on the GPU Ray gave it, and `predict`, which runs it with an actor per GPU of the cluster.

    import ray
    from pxgl.ray_data import Predictor, predict

    prompts = ray.data.read_text("prompts.txt")                 # a "text" column, one prompt a row
    answers = predict(prompts, "pixellm_v1")                    # an actor per GPU of the cluster
    answers = prompts.map_batches(Predictor, fn_constructor_kwargs={"model": "pixellm_v1"}, batch_format="numpy",
                                  batch_size=BATCH_SIZE, num_gpus=1, compute=ray.data.ActorPoolStrategy(size=8))

Ray gives an actor with num_gpus=1 its GPU through CUDA_VISIBLE_DEVICES, which EGL ignores; the engine maps
it to the EGL device of that GPU itself (engine/gl/egl_devices.py), so each actor lands on its own GPU."""

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .engine import Engine
from .errors import PxglError
from .loading import open_model
from .pxi import decode_predictions

if TYPE_CHECKING:
    from ray.data import Dataset

TEXT, IDS = "text", "ids"
BATCH_SIZE = 16_384
"""Prompts an actor takes at a time: Ray Data asks for a batch size when actors hold GPUs, and a batch this
large keeps a GPU near its best rate (the fused executor at B = 16 Ki, docs/PERFORMANCE.md)."""


def is_text(prompts: np.ndarray) -> bool:
    return prompts.dtype.kind in "US" or (
        prompts.dtype.kind == "O" and len(prompts) > 0 and isinstance(prompts[0], str)
    )


class Predictor:
    """A batch in, the same batch with the predictions added: `pixel` (n, 3) uint8 prediction pixels, `id` (n,)
    predicted token ids and `confidence` (n,) in 0..1. The prompts are the `ids` column (token ids: a 2-D
    integer array, or one array a row) when the batch has one, else the `text` column (strings, encoded with
    the model's tokenizer); `column` names another."""

    def __init__(
        self,
        model: str | Path | None = None,
        executor: str | None = None,
        device: int | None = None,
        column: str | None = None,
    ) -> None:
        """`model`, `executor`: as open_model takes them. `device`: a GPU number (default: the actor's GPU,
        the first one CUDA_VISIBLE_DEVICES shows, else EGL's first device)."""
        self.runnable = open_model(model, executor)
        self.column = column
        # The engine's GL context is bound to the thread that makes it; Ray may call an actor from other
        # threads, so one thread of our own makes the engine and runs every batch on it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pxgl-engine")
        self.engine = self._thread.submit(Engine, self.runnable, device=device).result()

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        column = self.column or (IDS if IDS in batch else TEXT)
        if column not in batch:
            raise PxglError(f"the batch has no {column!r} column (it has {', '.join(batch) or 'none'})")
        prompts = batch[column]
        if is_text(prompts):
            tokenizer = self.runnable.model.tokenizer
            rows = [tokenizer.encode(str(text)) for text in prompts]
            pixels = self._thread.submit(self.engine.predict_ids, rows).result()
        elif prompts.ndim == 2 and prompts.dtype.kind in "iu":
            pixels = self._thread.submit(self.engine.predict_array, prompts, column).result()
        else:
            rows = [np.asarray(row).tolist() for row in prompts]
            pixels = self._thread.submit(self.engine.predict_ids, rows).result()
        ids, confidence = decode_predictions(pixels)
        return {
            **batch,
            "pixel": pixels[:, 0],
            "id": ids.astype(np.int64),
            "confidence": (confidence / 255).astype(np.float32),
        }


def predict(
    prompts: "Dataset",
    model: str | Path | None = None,
    *,
    executor: str | None = None,
    column: str | None = None,
    actors: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> "Dataset":
    """`prompts` with Predictor's columns added, `actors` actors (default: one per GPU of the Ray cluster, each
    on its GPU; one on a cluster without GPUs, which renders on the CPU) taking `batch_size` prompts at a time.
    Ray is started here (`ray.init()`: a local instance, or the cluster RAY_ADDRESS names) unless it runs."""
    import ray

    if not ray.is_initialized():
        ray.init()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return prompts.map_batches(
        Predictor,
        fn_constructor_kwargs={"model": model, "executor": executor, "column": column},
        batch_format="numpy",
        batch_size=batch_size,
        num_gpus=1 if gpus else 0,
        compute=ray.data.ActorPoolStrategy(size=actors or max(gpus, 1)),
    )
