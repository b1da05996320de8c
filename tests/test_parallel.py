"""Batches across several engines in worker processes (`--device 0,0`: two llvmpipe engines here), and which
EGL device a GPU number names."""

import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
from pxgl.cli import app
from pxgl.devices import gpu_count, parse_devices
from pxgl.errors import PxglError
from pxgl.gl import EglDevice
from pxgl.gl.egl_devices import egl_index_for_gpu, visible_cuda_devices
from pxgl.gl.egl_devices import gpu_count as count_gpus
from pxgl.parallel import EnginePool, chunk_bounds
from pxgl.pxi import encode_tokens, read_rgb
from pxgl.tokenizer import Tokenizer
from typer.testing import CliRunner

from tests.cli_process import pxgl
from tests.engines import on_one_engine
from tests.models import params_of, random_model, random_rows
from tests.reference import oracle

TEXT = "the pixel model reads pixels and writes pixels; every weight is a byte of an image.\n" * 20


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"model seed {seed}")  # shown with a failure
    model = random_model(tmp_path_factory.mktemp("model"), np.random.default_rng(seed), 300, 24, 20, 6)
    Tokenizer.train(TEXT, 300).save(model.tokenizer_path)
    return model


@pytest.fixture(scope="module")
def pool(model):
    with EnginePool(model, [0, 0], chunk=16) as pool:
        yield pool


def test_chunks_cover_the_batch_in_order_and_keep_one_engines_kernel(rng, seed):
    for _ in range(500):
        total, step, uniform = (int(v) for v in rng.integers(1, [5000, 700, 130]))
        bounds = chunk_bounds(total, step, uniform)
        what = f"total {total}, step {step}, uniform {uniform}, seed {seed}: {bounds[:4]}"
        assert [b[0] for b in bounds] == [0] + [b[1] for b in bounds[:-1]] and bounds[-1][1] == total, what
        sizes = [end - start for start, end in bounds]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1, what
        assert total < uniform or min(sizes) >= uniform, what
        assert len(bounds) <= -(-total // step), what


def test_parse_devices():
    assert parse_devices(None) is None
    assert parse_devices("0,0") == [0, 0]
    assert parse_devices("2, 0,1") == [2, 0, 1]
    assert parse_devices("all") == list(range(gpu_count())) and gpu_count() >= 1
    for bad in ("", "gpu0", "0,,1", "-1", "0;1"):
        with pytest.raises(PxglError, match="--device"):
            parse_devices(bad)


def test_gpu_numbers_name_egl_devices():
    mesa = [EglDevice(0, None)]
    assert egl_index_for_gpu(0, mesa, None) == 0
    assert egl_index_for_gpu(0, mesa, ["3"]) == 0  # no CUDA mapping: the variable means nothing to EGL
    with pytest.raises(PxglError, match="EGL lists 1 device"):
        egl_index_for_gpu(1, mesa, None)
    # An NVIDIA host as EGL may list it: its own order, the software device last.
    host = [EglDevice(0, 2), EglDevice(1, 0), EglDevice(2, 1), EglDevice(3, 3), EglDevice(4, None)]
    assert [egl_index_for_gpu(g, host, None) for g in range(4)] == [1, 2, 0, 3]
    assert count_gpus(host, None) == 4
    with pytest.raises(PxglError, match="no EGL device is CUDA device 4"):
        egl_index_for_gpu(4, host, None)
    # A driver that maps every GPU gives physical ids: the visible list names them.
    assert egl_index_for_gpu(0, host, ["3"]) == 3
    assert [egl_index_for_gpu(g, host, ["2", "0"]) for g in range(2)] == [0, 1]
    assert count_gpus(host, ["2", "0"]) == 2
    with pytest.raises(PxglError, match="shows 1 GPU"):
        egl_index_for_gpu(1, host, ["3"])
    with pytest.raises(PxglError, match="as indexes"):
        egl_index_for_gpu(0, host, ["GPU-5e1f"])
    # A driver that numbers devices as CUDA does in this process maps only the visible ones.
    hidden = [EglDevice(0, None), EglDevice(1, 0), EglDevice(2, None)]
    assert egl_index_for_gpu(0, hidden, ["3"]) == 1
    assert count_gpus(hidden, ["3"]) == 1
    assert visible_cuda_devices(None) is None
    assert visible_cuda_devices("") == []
    assert visible_cuda_devices("1, 0") == ["1", "0"]


def test_pool_answers_as_one_engine_in_order(model, pool, rng, seed):
    rows = random_rows(rng, 300, model.spec.vocab_size, max_len=40)
    expected = on_one_engine(model, lambda engine: engine.predict_ids(rows))
    ticks: list[int] = []
    got = pool.predict(encode_tokens(rows, model.spec.vocab_size), "prompts", on_tile=ticks.append)
    assert np.array_equal(got, expected), f"seed {seed}"
    assert sum(ticks) == len(rows) and len(ticks) == len(chunk_bounds(len(rows), 16, pool._uniform_rows))
    oracle.assert_agrees(got, oracle.logits(params_of(model), rows, model.spec.context_window), f"seed {seed}")
    assert np.array_equal(pool.predict_ids(rows[:5]), expected[:5])  # the pool serves call after call


def test_pool_workers_tokenize_prompt_texts_as_one_engine_does(model, pool, rng, seed):
    words = TEXT.split()
    prompts = [" ".join(rng.choice(words, int(rng.integers(1, 15)))) for _ in range(150)]
    tokenizer = Tokenizer.load(model.tokenizer_path)
    expected = on_one_engine(model, lambda engine: engine.predict_ids([tokenizer.encode(p) for p in prompts]))
    assert np.array_equal(pool.predict_prompts(prompts), expected), f"seed {seed}"


def test_pool_scores_as_one_engine(model, pool, rng, seed):
    window, vocab = model.spec.context_window, model.spec.vocab_size
    tails = encode_tokens(random_rows(rng, 100, vocab, max_len=window), vocab)
    tails = np.concatenate([tails, np.zeros((100, window - tails.shape[1], 3), np.uint8)], axis=1)
    targets = rng.integers(0, vocab, 100)
    expected = on_one_engine(model, lambda engine: engine.score(tails, targets))
    got = pool.score(tails, targets)
    assert np.array_equal(got[0], expected[0]), f"seed {seed}"
    # llvmpipe sums a softmax in an order that depends on the tile: the last bits of a log-sum-exp may differ
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-5, err_msg=f"seed {seed}")


def test_a_batch_too_big_for_shared_memory_is_refused_and_the_pool_goes_on(pool, monkeypatch):
    rows = [[1, 2, 3]] * 1000  # 9,000 bytes of token pixels
    real = os.statvfs

    def one_page_free(path):
        stats = real(path)
        return os.statvfs_result((stats.f_bsize, 4096, stats.f_blocks, 1, 1, *stats[5:]))

    monkeypatch.setattr("pxgl.parallel.os.statvfs", one_page_free)
    with pytest.raises(PxglError, match=r"needs 0\.0 MiB of shared memory .* has 0\.0 MiB free"):
        pool.predict_ids(rows)
    monkeypatch.undo()
    assert pool.predict_ids(rows[:5]).shape == (5, 1, 3)


def test_a_bad_row_is_named_in_the_whole_batch(model):
    rows = [[1, 2, 3]] * 100
    pixels = encode_tokens(rows, model.spec.vocab_size)
    pixels[77, 1] = (0, 9, 255)  # token id 2304: outside the vocabulary
    with pytest.raises(PxglError) as one:
        on_one_engine(model, lambda engine: engine.predict(pixels, "batch.pxi"))
    with EnginePool(model, [0, 0], chunk=10) as pool, pytest.raises(PxglError) as several:
        pool.predict(pixels, "batch.pxi")
    assert str(several.value) == str(one.value) and "row 77" in str(one.value)


def test_cli_infer_and_eval_on_two_workers_match_one_engine(model, tmp_path, rng):
    words = TEXT.split()
    lines = [" ".join(rng.choice(words, int(rng.integers(1, 12)))) for _ in range(200)]
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
    outputs = {}
    for devices in ("0", "0,0"):
        out, tokens = f"out{devices}.pxi", f"tokens{devices}.pxi"
        args = ["--batch", "prompts.txt", "-o", out, "--tokens-out", tokens, "--json", "-d", devices]
        run = pxgl("infer", "-m", model.source, *args, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        records = [json.loads(line) for line in run.stdout.splitlines()]
        assert [r["prompt"] for r in records] == lines
        answers = [{k: r[k] for k in ("id", "pixel")} for r in records]
        outputs[devices] = (read_rgb(tmp_path / out), answers, read_rgb(tmp_path / tokens))
        run = pxgl("eval", "-m", model.source, "--text", "prompts.txt", "--json", "-d", devices, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        outputs[devices + "eval"] = json.loads(run.stdout)
    assert np.array_equal(outputs["0"][0], outputs["0,0"][0]) and outputs["0"][1] == outputs["0,0"][1]
    assert np.array_equal(outputs["0"][2], outputs["0,0"][2])
    one, two = outputs["0eval"], outputs["0,0eval"]
    assert {k: one[k] for k in ("positions", "bytes", "top1")} == {k: two[k] for k in ("positions", "bytes", "top1")}
    assert one["bits_per_byte"] == pytest.approx(two["bits_per_byte"], rel=1e-6)


def engine_workers() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("pxgl-engine")]


class KillingProgress:
    """A progress bar that kills an engine worker when the first chunk comes back: a worker dying mid-batch,
    as the kernel's OOM killer or a driver crash would end it."""

    def __init__(self, spared: set[int]) -> None:
        self.spared = spared
        self.killed: list[int] = []

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return None

    def add_task(self, *_, **__) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        if self.killed:
            return
        (worker, *_) = [p for p in engine_workers() if p.pid not in self.spared]
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        self.killed.append(worker.pid)


def test_a_worker_dying_mid_batch_is_one_error_and_nothing_is_written(model, tmp_path, monkeypatch):
    (tmp_path / "prompts.txt").write_text("pixels and weights\n" * 400)
    before = {p.pid for p in engine_workers()}  # another test's pool may still be running
    bar = KillingProgress(before)
    monkeypatch.setattr("pxgl.cli.predict.progress_bar", lambda total: bar)
    out, tokens = tmp_path / "out.pxi", tmp_path / "tokens.pxi"
    args = ["infer", "-m", model.source, "--batch", str(tmp_path / "prompts.txt"), "-d", "0,0"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "--tokens-out", str(tokens)])
    assert isinstance(result.exception, PxglError), result.output
    message = str(result.exception)
    assert f"process {bar.killed[0]}) died (killed by SIGKILL)" in message and "\n" not in message
    assert not out.exists() and not tokens.exists()
    assert {p.pid for p in engine_workers()} <= before, "the other worker outlived the batch"


def test_a_gpu_that_does_not_exist_is_one_line_and_nothing_is_written(model, tmp_path):
    (tmp_path / "prompts.txt").write_text("pixels and weights\nweights\n")
    missing = str(gpu_count() + 3)
    run = pxgl(
        "infer", "-m", model.source, "--batch", "prompts.txt", "-o", "out.pxi", "-d", f"0,{missing}", cwd=tmp_path
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert f"GPU {missing}" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out.pxi").exists()


def test_an_interrupted_call_ends_the_pool_and_its_workers(model):
    pool = EnginePool(model, [0, 0], chunk=8)
    pixels = encode_tokens([[1, 2, 3]] * 100, model.spec.vocab_size)

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pool.predict(pixels, on_tile=interrupt)
    assert not {p.pid for p in engine_workers()} & set(pool.pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.predict(pixels)
