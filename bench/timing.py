"""Timing: warm-up first, every call synchronous (results in host memory when it returns), medians."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    median_us: float
    p99_us: float
    calls: int


WARMUP_S = 0.5
"""Warm-up by time, for every system alike: a GPU lowers its clocks when it idles (the H200 went from 1,980 to
345 MHz within ~2 s of low utilization, nvidia-smi, 2026-12-02), and a run or two does not bring them back."""


def time_calls(one: Callable[[list[int]], np.ndarray], prompts: list[list[int]], warmup: int) -> tuple[Latency, list]:
    """Call `one` on each prompt in turn after `warmup` calls (and WARMUP_S); each call timed on its own."""
    start = time.perf_counter()
    for prompt in prompts[:warmup]:
        one(prompt)
    while time.perf_counter() - start < WARMUP_S:
        one(prompts[0])
    outputs, times = [], np.empty(len(prompts), np.int64)
    clock = time.perf_counter_ns
    for i, prompt in enumerate(prompts):
        start = clock()
        outputs.append(one(prompt))
        times[i] = clock() - start
    us = times / 1e3
    return Latency(float(np.median(us)), float(np.percentile(us, 99)), len(prompts)), outputs


@dataclass(frozen=True)
class Throughput:
    prompts_per_s: float
    median_s: float
    runs: int


def time_batch(
    batch: Callable[[np.ndarray], np.ndarray], ids: np.ndarray, budget_s: float, max_runs: int
) -> tuple[Throughput, list[np.ndarray]]:
    """Warm-up runs for WARMUP_S (one at least), then runs until `budget_s` is spent (at least 3, at most
    max_runs); median time."""
    start = time.perf_counter()
    batch(ids)
    while time.perf_counter() - start < WARMUP_S:
        batch(ids)
    outputs, times = [], []
    while len(times) < 3 or (sum(times) < budget_s and len(times) < max_runs):
        start = time.perf_counter()
        outputs.append(batch(ids))
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return Throughput(len(ids) / median, median, len(times)), outputs
