"""The oracle's answers for the bench's prompts (tests/oracle.py, the numpy reference), and the check every
measured result must pass before its time counts."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from bench.peers import Tolerance
from tests.reference import oracle

CHUNK = 8192
PROCESSES_FROM = 1 << 17
"""From this many prompts the oracle runs in worker processes (its per-prompt Python loop holds the GIL)."""
_worker: dict = {}


def _start_worker(params: dict[str, np.ndarray], window: int) -> None:
    _worker.update(params=params, window=window)


def _oracle_answers(prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return oracle.predict(oracle.logits(_worker["params"], list(prompts), _worker["window"]))


class CheckFailed(Exception):
    """A system's predictions disagree with the oracle beyond its tolerance: its time is not counted."""


class Reference:
    """Oracle ids and confidence bytes of every prompt in `prompts` ((N, L) token ids)."""

    def __init__(self, params: dict[str, np.ndarray], window: int, prompts: np.ndarray) -> None:
        self.params, self.window, self.prompts = params, window, prompts
        chunks = [prompts[s : s + CHUNK] for s in range(0, len(prompts), CHUNK)]
        if len(prompts) >= PROCESSES_FROM:
            spawn = multiprocessing.get_context("spawn")  # no fork of a process holding a GL context
            pool = ProcessPoolExecutor(os.cpu_count(), spawn, _start_worker, (params, window))
        else:
            _start_worker(params, window)
            pool = ThreadPoolExecutor(os.cpu_count())
        with pool:
            parts = list(pool.map(_oracle_answers, chunks))
        self.ids = np.concatenate([ids for ids, _ in parts])
        self.confidence = np.concatenate([conf for _, conf in parts])

    def _logits(self, rows: slice | np.ndarray) -> np.ndarray:
        return oracle.logits(self.params, list(self.prompts[rows]), self.window)

    def check(self, pixels: np.ndarray, rows: slice | np.ndarray, tolerance: Tolerance) -> None:
        """Prediction pixels of prompts[rows] vs the oracle: an id may differ only where the oracle's logit
        for it is within the tolerance of the top one (a near-tie); confidence within its bytes."""
        pixels = np.asarray(pixels).reshape(-1, 3)
        want_ids, want_confidence = self.ids[rows], self.confidence[rows]
        if len(pixels) != len(want_ids):
            raise CheckFailed(f"{len(pixels)} predictions for {len(want_ids)} prompts")
        got = pixels[:, 0].astype(np.int64) + 256 * pixels[:, 1].astype(np.int64)
        differ = np.flatnonzero(got != want_ids)
        if differ.size:
            vocab = self.params["out.bias"].shape[0]
            if (got[differ] >= vocab).any():
                raise CheckFailed(f"ids past the vocabulary (unwritten output?) at prompt {differ[0]}")
            lg = self._logits(np.arange(len(self.ids))[rows][differ])
            top = lg.max(axis=1)
            chosen = lg[np.arange(len(differ)), got[differ]]
            far = chosen < top - (tolerance.atol + tolerance.rtol * np.abs(top))
            if far.any():
                first = differ[np.flatnonzero(far)[0]]
                raise CheckFailed(
                    f"{int(far.sum())} of {len(got)} ids differ from the oracle beyond a near-tie "
                    f"(first: prompt {first}, got {got[first]}, oracle {want_ids[first]})"
                )
        same = got == want_ids
        error = np.abs(pixels[same, 2].astype(int) - want_confidence[same].astype(int)).max(initial=0)
        if error > tolerance.confidence:
            raise CheckFailed(f"confidence off by {error} (allowed {tolerance.confidence})")
