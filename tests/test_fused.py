"""The fused executor (engine/fused.py) end to end against the numpy oracle (tests/oracle.py).

Same rules as tests/test_passes.py: predicted ids agree exactly except on oracle near-ties, confidence ±1;
outputs are poisoned before every checked run so a prompt the GPU fails to write cannot pass."""

import ctypes
import ctypes.util
import os

import numpy as np
import pytest
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors.fused import FusedExecutor
from pxgl.executors.fused_config import FusedConfig
from pxgl.executors.fused_gemm import GemmConfig
from pxgl.executors.protocol import ExecutorInputs
from pxgl.loading import load_model
from pxgl.model import save_model
from pxgl.pxi import encode_tokens

from tests.models import params_of, random_model, random_rows
from tests.reference import oracle
from tests.reference.models import params_at, random_architecture, write_random_member


@pytest.fixture
def model(tmp_path, rng):
    return random_model(tmp_path, rng)


@pytest.fixture
def engine(model, gpu):
    return Engine(model, gpu=gpu, executor="fused")


def checked_predict(engine, pixels):
    """Run once (allocating this batch size's buffers), poison the outputs, run again and return that."""
    engine.predict(pixels)
    engine.poison()
    return engine.predict(pixels)


def test_thousand_random_prompts_match_oracle(engine, model, rng, seed):
    rows = random_rows(rng, 1000, model.spec.vocab_size, max_len=200)
    pred = checked_predict(engine, encode_tokens(rows, model.spec.vocab_size))
    oracle.assert_agrees(pred, oracle.logits(params_of(model), rows, model.spec.context_window), f"seed {seed}")


@pytest.mark.parametrize("batch", ["one", "seven", "small_max", "past_small", "past_work_group_tile", "past_run"])
def test_batches_match_oracle(engine, model, rng, seed, batch):
    config = engine.executor.config
    if batch == "past_run":
        engine.executor.max_tile = 2 * config.tile_m + 3  # the engine must cut this batch into several runs
    n = {
        "one": 1,
        "seven": 7,
        "small_max": config.small_max,
        "past_small": config.small_max + 1,
        "past_work_group_tile": 3 * config.tile_m + 1,
        "past_run": 5 * config.tile_m + 11,
    }[batch]
    rows = random_rows(rng, n, model.spec.vocab_size, max_len=24)
    pred = checked_predict(engine, encode_tokens(rows, model.spec.vocab_size))
    assert pred.shape == (n, 1, 3)
    oracle.assert_agrees(pred, oracle.logits(params_of(model), rows, model.spec.context_window), f"seed {seed}")


@pytest.mark.parametrize("length", [1, 5, 16, 40])
@pytest.mark.parametrize("dtype", [np.uint16, np.int64])
def test_lean_paths_match_oracle(engine, model, rng, seed, length, dtype):
    vocab = model.spec.vocab_size
    params = params_of(model)
    for n in (1, engine.executor.config.small_max + 9):  # the mapped-buffer path and the batch path
        ids = rng.integers(0, vocab, (n, length)).astype(dtype)
        lg = oracle.logits(params, list(ids), model.spec.context_window)
        engine.predict_array(ids)
        engine.poison()
        oracle.assert_agrees(engine.predict_array(ids), lg, f"seed {seed}")
        engine.poison()
        one = np.stack([engine.predict_one(row.tolist()) for row in ids[:5]])[:, None, :]
        oracle.assert_agrees(one, lg[:5], f"seed {seed}")


@pytest.mark.parametrize("n", [3, 200])
@pytest.mark.parametrize("length", [12, 40, 300])  # inside the window; before it; cut on the host
def test_ids_past_the_vocabulary_are_refused_with_their_place(engine, model, rng, n, length):
    vocab = model.spec.vocab_size
    ids = rng.integers(0, vocab, (n, length)).astype(np.uint16)
    outside_window = length - model.spec.context_window  # > 0: put the bad id where the window cannot see it
    row, position = int(rng.integers(n)), int(rng.integers(outside_window if outside_window > 0 else length))
    ids[row, position] = vocab + int(rng.integers(0, 65536 - vocab))
    with pytest.raises(PxglError, match=f"row {row}, position {position}: token id {ids[row, position]}"):
        engine.predict_array(ids)
    with pytest.raises(PxglError, match=f"position {position}"):
        engine.predict_one(ids[row].tolist())
    ids[row, position] = 0
    assert engine.predict_array(ids).shape == (n, 1, 3)  # the refusal left nothing behind


def test_chunks_upload_only_windows_unless_they_hold_an_id_past_the_vocabulary(tmp_path, gpu, seed, monkeypatch):
    """A batch of 5 chunks: those whose ids are all in the vocabulary go to the GPU as windows, those holding a
    bad id (before the window, where only the whole row shows it) whole: answers and refusal stay exact, and the
    first refused prompt is the one reported."""
    rng = np.random.default_rng(seed)
    model = random_model(tmp_path, rng, vocab=300, embed=17, hidden=33, window=3)
    weights = gpu.uint_texture(model.weights, "weights")
    executor = FusedExecutor(gpu, ExecutorInputs(model.spec, weights), FusedConfig(chunk=64))
    widths = []
    upload = executor._upload
    monkeypatch.setattr(
        executor, "_upload", lambda prompts, rows: (widths.append(rows.shape[1]), upload(prompts, rows))
    )
    ids = rng.integers(0, 300, (300, 13)).astype(np.uint16)
    first, second = int(rng.integers(64, 128)), int(rng.integers(192, 256))
    for row in (first, second):
        ids[row, 2] = 300 + int(rng.integers(0, 1000))
    pixels, refused = executor.run_ids(ids)
    assert refused == first, f"seed {seed}"
    assert widths == [3, 13, 3, 13, 3], f"seed {seed}: rows uploaded per chunk {widths}"
    ids[first, 2] = ids[second, 2] = 0
    executor.poison()
    pixels, refused = executor.run_ids(ids)
    assert refused is None
    oracle.assert_agrees(pixels[:, None, :], oracle.logits(params_of(model), list(ids), 3), f"seed {seed}")


@pytest.mark.parametrize("period", ["half", 4])
@pytest.mark.parametrize(
    "tuning",
    [FusedConfig(), FusedConfig(gemm=GemmConfig(min_groups=1)), FusedConfig(gemm=None)],
    ids=["gemm-slices", "gemm-one-slice", "tiles"],
)
def test_exact_ties_go_to_the_lowest_index(tmp_path, gpu, rng, seed, period, tuning):
    """Column k of the output layer equals column k % period, so every argmax is an exact tie between columns
    that different work groups hold (half the vocabulary apart) or one thread and its neighbours in a row hold
    (4 apart): the lowest one must win, as in the oracle, on every batch path."""
    base = random_model(tmp_path, rng, vocab=512)
    spec = base.spec
    stream = base.weights.reshape(-1).copy()
    period = spec.vocab_size // 2 if period == "half" else period
    for name in ("out.weight", "out.bias"):
        t = spec.tensors[name]
        tensor = stream[t.offset : t.offset + t.size].reshape(t.shape)
        tensor[...] = tensor[..., np.arange(spec.vocab_size) % period]
    save_model(tmp_path / "tied.pxi", spec, stream.tobytes())
    model = load_model(tmp_path / "tied.pxi")
    engine = Engine(model, gpu=gpu, executor="fused", tuning=tuning)
    for n in (1, 300):
        rows = random_rows(rng, n, spec.vocab_size, max_len=30)
        pred = checked_predict(engine, encode_tokens(rows, spec.vocab_size))
        got = pred[:, 0, 0].astype(int) + 256 * pred[:, 0, 1].astype(int)
        assert (got < period).all(), f"a tie went to a higher index (seed {seed})"
        oracle.assert_agrees(pred, oracle.logits(params_of(model), rows, spec.context_window), f"seed {seed}")


def test_a_prediction_the_gemm_path_leaves_unwritten_is_an_error(tmp_path, gpu, rng, monkeypatch):
    """Words are poisoned before each chunk: if the merge of vocabulary slices never runs, the run fails
    instead of handing out the words of the run before."""
    model = random_model(tmp_path, rng, vocab=300, embed=17, hidden=33, window=5)
    rows = encode_tokens(random_rows(rng, 300, 300, max_len=20), 300)
    with Engine(model, gpu=gpu, executor="fused") as engine:
        engine.predict(rows)
        parts = engine.executor._gemm
        assert parts is not None and parts.slices(300) > 1
        run = gpu.run
        monkeypatch.setattr(
            gpu, "run", lambda program, *a, **r: None if program is parts.merge_program else run(program, *a, **r)
        )
        with pytest.raises(PxglError, match="did not write the prediction"):
            engine.predict(rows)


def test_the_gemm_paths_buffers_grow_with_the_batch(tmp_path, gpu, rng, seed):
    """Hidden units for a few hundred prompts take a few hundred prompts' memory; a larger batch regrows them,
    a smaller one after it reuses them, and every answer stays the oracle's."""
    model = random_model(tmp_path, rng, vocab=300, embed=17, hidden=33, window=5)
    params = params_of(model)
    with Engine(model, gpu=gpu, executor="fused") as engine:
        parts = []
        for n in (100, 1000, 100):
            rows = random_rows(rng, n, 300, max_len=20)
            oracle.assert_agrees(
                checked_predict(engine, encode_tokens(rows, 300)), oracle.logits(params, rows, 5), f"seed {seed}"
            )
            parts.append(engine.executor._gemm.part)
        assert parts[0] < 1000 <= parts[1] == parts[2], f"parts {parts}"


def test_two_gl_backends_of_one_thread_take_turns(tmp_path, gpu, rng, seed):
    """A second GLBackend made current on this thread (an engine opened without gpu=, as the CLI and the bench
    do) must not leave the first one's commands going to the wrong context: each makes its own current."""
    from pxgl.gl import GLBackend

    model = random_model(tmp_path, rng, vocab=300, embed=17, hidden=33, window=5)
    params = params_of(model)
    first = Engine(model, gpu=gpu, executor="fused")
    other = GLBackend()
    try:
        second = Engine(model, gpu=other, executor="fused")
        for engine in (first, second, first, second):
            rows = random_rows(rng, 200, 300, max_len=20)
            pred = checked_predict(engine, encode_tokens(rows, 300))
            oracle.assert_agrees(pred, oracle.logits(params, rows, 5), f"seed {seed}")
        second.close()
    finally:
        other.release()


@pytest.mark.parametrize("dims", [(512, 64, 96, 8), (300, 17, 33, 5), (2, 1, 1, 1), (700, 40, 1000, 3)])
def test_other_model_sizes_run_without_code_change(tmp_path, gpu, seed, dims):
    rng = np.random.default_rng(seed)
    vocab, embed, hidden, window = dims
    model = random_model(tmp_path, rng, vocab, embed, hidden, window)
    engine = Engine(model, gpu=gpu, executor="fused")
    rows = random_rows(rng, 300, vocab, max_len=30)
    lg = oracle.logits(params_of(model), rows, window)
    oracle.assert_agrees(checked_predict(engine, encode_tokens(rows, vocab)), lg, f"seed {seed}")  # fused_tiles
    few = engine.executor.config.small_max // 2
    oracle.assert_agrees(checked_predict(engine, encode_tokens(rows[:few], vocab)), lg[:few], f"seed {seed}")
    one = np.stack([engine.predict_one(row.tolist()) for row in rows[:3]])[:, None, :]
    oracle.assert_agrees(one, lg[:3], f"seed {seed}")


@pytest.mark.parametrize(
    ("gemm", "hidden_tile_m"),
    [
        (dict(min_groups=1, part_bytes=1), 64),  # no slices: each group writes its words, parts of 128 prompts
        (dict(min_groups=1 << 20), 0),  # a slice per column step, merged by a second dispatch; pooled hidden units
        (dict(m=64, n=64, tm=4, tn=8, k=4, part_bytes=1), 8),  # parts of one tile: many parts a chunk
        (dict(m=32, n=128, tm=8, tn=4, k=16, min_groups=4), 16),
    ],
)
@pytest.mark.parametrize("mode", ["mean", "concat", "attention"])
def test_batches_as_hidden_layers_then_a_gemm_match_oracle(tmp_path, gpu, seed, gemm, hidden_tile_m, mode):
    """fused_gemm.py's path (hidden units to memory, fused_logits.comp) in several shapes, on random family
    members (one layer where the hidden units go straight from registers, 1-3 layers where they are pooled in
    shared memory), for token rows (pixels) and id arrays, with a refused prompt among them."""
    rng = np.random.default_rng(seed)
    depth = 1 if hidden_tile_m else int(rng.integers(1, 4))
    arch = random_architecture(rng, mode=mode, depth=depth)
    arch["context"]["window"] = min(arch["context"]["window"], 8)
    arch["context"]["concat"] = min(arch["context"].get("concat", 0), arch["context"]["window"])
    if mode != "attention":
        arch["context"].pop("concat")
    path = write_random_member(tmp_path, rng, arch)
    model, vocab = load_model(path), arch["vocab_size"]
    tuning = FusedConfig(gemm=GemmConfig(**gemm), hidden_tile_m=hidden_tile_m)
    with Engine(model, gpu=gpu, executor="fused", tuning=tuning) as engine:
        config = engine.executor.config
        assert config.gemm == GemmConfig(**gemm), f"seed {seed}: the shape must fit"
        direct = bool(hidden_tile_m) and mode != "attention"  # fused_config.direct_hidden
        assert bool(config.hidden_tile_m) == direct, f"seed {seed}: {config}"
        rows = random_rows(rng, 300, vocab, max_len=20)
        lg = oracle.logits(params_at(path), rows)
        oracle.assert_agrees(checked_predict(engine, encode_tokens(rows, vocab)), lg, f"seed {seed}, rows")
        ids = rng.integers(0, vocab, (257, 11)).astype(np.uint16)
        engine.predict_array(ids)
        engine.poison()
        oracle.assert_agrees(engine.predict_array(ids), oracle.logits(params_at(path), list(ids)), f"seed {seed}")
        row = int(rng.integers(len(ids)))
        ids[row, 3] = vocab
        with pytest.raises(PxglError, match=f"row {row}, position 3"):
            engine.predict_array(ids)


def test_an_attention_window_past_shared_memory_reads_its_keys_from_memory(tmp_path, gpu, rng, seed):
    """fused_small keeps a window's keys and values in shared memory where they fit; 32 tokens of a 192-wide
    head (48 KiB of them) fit no GPU's, and the executor still runs the model, reading them from memory."""
    arch = random_architecture(rng, mode="attention", depth=1)
    arch["context"] = {"mode": "attention", "window": 32, "concat": 1, "head_dim": 192}
    path = write_random_member(tmp_path, rng, arch, name="wide_head")
    model = load_model(path)
    with Engine(model, gpu=gpu, executor="fused") as engine:
        assert not engine.executor.config.keys_in_shared
        rows = random_rows(rng, 5, arch["vocab_size"], max_len=40)
        lg = oracle.logits(params_at(path), rows)
        oracle.assert_agrees(checked_predict(engine, encode_tokens(rows, arch["vocab_size"])), lg, f"seed {seed}")
        one = np.stack([engine.predict_one(list(row)) for row in rows[:2]])[:, None, :]
        oracle.assert_agrees(one, lg[:2], f"seed {seed}")


def test_trace_gives_the_tokens_it_ran_and_the_predictions(engine, model, rng, seed):
    rows = random_rows(rng, 9, model.spec.vocab_size, max_len=40)
    trace = engine.trace(encode_tokens(rows, model.spec.vocab_size))
    window = model.spec.context_window
    assert trace.context is None and trace.hidden is None and trace.logits is None
    for r, row in enumerate(rows):
        tail = row[-window:]
        ids = trace.tokens[r, : len(tail), 0].astype(int) + 256 * trace.tokens[r, : len(tail), 1].astype(int)
        assert (ids == tail).all()
    oracle.assert_agrees(trace.prediction, oracle.logits(params_of(model), rows, window), f"seed {seed}")


@pytest.mark.parametrize(
    "shape",
    [
        dict(tile_m=16, tm=4, tn=4, tile_n=32, stage_k=4),
        dict(tile_m=32, tm=8, tn=4, tile_n=64, stage_k=16),
        dict(small_threads=64, split=2),
        dict(small_threads=1024, split=1),
    ],
)
def test_other_work_shapes_match_oracle(tmp_path, gpu, seed, shape):
    """Shapes bench/variants/sweep.py tries, on a model whose sizes divide none of them."""
    rng = np.random.default_rng(seed)
    model = random_model(tmp_path, rng, vocab=300, embed=17, hidden=33, window=5)
    weights = gpu.uint_texture(model.weights, "weights")
    executor = FusedExecutor(gpu, ExecutorInputs(model.spec, weights), FusedConfig(**shape))
    for n in (1, 9, 200):
        ids = rng.integers(0, 300, (n, 7)).astype(np.uint16)
        pixels, refused = executor.run_ids(ids)
        assert refused is None
        lg = oracle.logits(params_of(model), list(ids), 5)
        oracle.assert_agrees(pixels[:, None, :], lg, f"seed {seed}")


@pytest.mark.parametrize(
    "hidden, shape",
    [
        (2, dict(tile_m=64, tm=4, tn=4, tile_n=128, stage_k=4)),
        (3, dict(tile_m=64, tm=4, tn=4, tile_n=64, stage_k=8)),
    ],
)
def test_more_tile_threads_than_staged_weights_match_oracle(tmp_path, gpu, seed, hidden, shape):
    """hidden < stage_k and more threads than staged weights: the threads with nothing to stage must not
    write shared memory (past the stage, or into the buffer the others are reading)."""
    rng = np.random.default_rng(seed)
    model = random_model(tmp_path, rng, vocab=300, embed=5, hidden=hidden, window=5)
    weights = gpu.uint_texture(model.weights, "weights")
    executor = FusedExecutor(gpu, ExecutorInputs(model.spec, weights), FusedConfig(**shape))
    config = executor.config
    assert (config.tile_m // config.tm) * (config.tile_n // config.tn) > config.stage_k * config.tile_n // 4
    ids = rng.integers(0, 300, (500, 7)).astype(np.uint16)
    pixels, refused = executor.run_ids(ids)
    assert refused is None
    oracle.assert_agrees(pixels[:, None, :], oracle.logits(params_of(model), list(ids), 5), f"seed {seed}")


@pytest.mark.parametrize("sync", ["poll", "fence"])
def test_host_reads_predictions_only_after_a_mapped_buffer_barrier(tmp_path, gpu, rng, monkeypatch, sync):
    """GL makes shader writes to a persistently mapped buffer visible to the host only after
    glMemoryBarrier(GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT) issued after the dispatch: on every path, the last
    dispatch must be followed by that barrier before the host waits (poll or fence)."""
    model = random_model(tmp_path, rng, vocab=300, embed=5, hidden=7, window=5)
    weights = gpu.uint_texture(model.weights, "weights")
    executor = FusedExecutor(gpu, ExecutorInputs(model.spec, weights), FusedConfig(chunk=64, sync=sync))
    calls: list[str] = []
    for name in ("run", "mapped_read_barrier", "wait_for_gpu", "flush"):
        method = getattr(gpu, name)
        monkeypatch.setattr(
            gpu, name, lambda *a, _name=name, _method=method, **k: (calls.append(_name), _method(*a, **k))[1]
        )
    for n in (1, 9, 300):  # fused_small; fused_tiles in several chunks
        calls.clear()
        ids = rng.integers(0, 300, (n, 7)).astype(np.uint16)
        executor.run_ids(ids)
        last_dispatch = max(i for i, call in enumerate(calls) if call == "run")
        last_sync = max(i for i, call in enumerate(calls) if call in ("wait_for_gpu", "flush"))
        assert "mapped_read_barrier" in calls[last_dispatch:last_sync], f"{n} prompts: {calls}"


def gl_buffer_exists(name: int) -> bool:
    """glIsBuffer, asked directly: the executor's own release path must not be what answers."""
    egl = ctypes.CDLL(os.environ.get("GLCONTEXT_LINUX_LIBEGL") or ctypes.util.find_library("EGL") or "libEGL.so.1")
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    is_buffer = ctypes.CFUNCTYPE(ctypes.c_ubyte, ctypes.c_uint)(egl.eglGetProcAddress(b"glIsBuffer"))
    return bool(is_buffer(name))


def test_regrown_buffers_are_freed(tmp_path, gpu, rng, seed):
    """Longer rows than the buffers were sized for regrow them: the old prompt and mapped prediction
    buffers must be freed in GL, and the regrown ones still give the oracle's predictions."""
    model = random_model(tmp_path, rng, vocab=300, embed=5, hidden=7, window=5)
    executor = FusedExecutor(gpu, ExecutorInputs(model.spec, gpu.uint_texture(model.weights, "weights")))
    params = params_of(model)
    for n in (3, executor.config.small_max + 5):  # the few-prompt buffers; a batch's
        executor.run_ids(rng.integers(0, 300, (n, 2)).astype(np.uint16))
        old = executor._small if n <= executor.config.small_max else next(iter(executor._batches.values()))
        names = [b.glo for b in (*old.prompts, old.predictions.buffer)]
        assert all(gl_buffer_exists(name) for name in names)
        ids = rng.integers(0, 300, (n, 200)).astype(np.uint16)  # 400 bytes a row: more than sized for
        pixels, refused = executor.run_ids(ids)
        held = {b.glo for buffers in (executor._small, *executor._batches.values()) for b in buffers.prompts}
        held |= {buffers.predictions.buffer.glo for buffers in (executor._small, *executor._batches.values())}
        leaked = [name for name in names if gl_buffer_exists(name) and name not in held]  # a name reused was freed
        assert not leaked, f"{n} prompts: old buffers {leaked} still exist"
        assert refused is None
        oracle.assert_agrees(pixels[:, None, :], oracle.logits(params, list(ids), 5), f"seed {seed}")


@pytest.mark.parametrize(
    "shape, complaint",
    [
        (dict(tile_m=48, tm=32), "tile_m=48 must be a multiple of tm=32"),
        (dict(tile_n=96, tn=64), "tile_n=96 must be a multiple of tn=64"),
        (dict(chunk=100), "chunk=100 must be a positive multiple of 64"),
        (dict(chunk=0), "chunk=0 must be a positive multiple of 64"),
    ],
)
def test_work_shapes_the_kernels_cannot_run_are_refused(tmp_path, gpu, rng, shape, complaint):
    model = random_model(tmp_path, rng, vocab=300, embed=5, hidden=7, window=5)
    with pytest.raises(ValueError, match=complaint):
        FusedConfig(**shape).fitted(gpu, model.spec)
