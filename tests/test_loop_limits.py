"""The loop-limit rule (docs/FORMATS.md §3.1): Mesa's llvmpipe silently ends a shader invocation's loops after
65,535 iterations in all, so every kernel declares its loops and none is compiled past DISPATCH_LOOPS; work
past it is split or refused before any GPU work. Here: the probe that shows the limit, the static count of
every passes and sampling kernel at the family's largest shapes, the two reproducers of issue 26, and random
members straddling each limit on every executor and sampling setting, each answer the oracle's or a refusal
(pxvm; fused outside its envelope) — never a wrong answer."""

import math

import numpy as np
import pytest
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.executors.fused_config import FusedConfig, loop_refusal, refusal
from pxgl.executors.generation import GENERATE_SAMPLE, RANK_KEY_BITS, SAMPLE_MAX_THREADS
from pxgl.executors.passes import compile_passes
from pxgl.generation import Sampling
from pxgl.gl import GLBackend, Limits
from pxgl.kernel import DISPATCH_LOOPS, Constants, Kernel
from pxgl.loading import load_model
from pxgl.spec import spec_from_meta

from tests.reference import oracle
from tests.reference.generation import assert_replays
from tests.reference.models import image_size, member_shapes, params_at, write_random_member

LLVMPIPE_LOOPS = 65535
PROBE = """#version 430
layout(local_size_x = 1) in;
layout(std430, binding = 0) buffer Out { uint counted[]; };
uniform int outer;
void main() {
    uint loops = 0u, inner = 0u;
    for (int i = 0; i < outer; i++) {
        loops++;
        for (int k = 0; k < 8; k++) inner += 1u;  // a constant trip count: unrolled, not counted
    }
    counted[0] = loops;
    counted[1] = inner;
}
"""
GL43 = Limits(
    max_texture_size=16384,
    max_work_group_count=(65535, 65535, 65535),
    max_work_group_size=(1024, 1024, 64),
    max_work_group_invocations=1024,
    max_shared_memory=32768,
    max_storage_block_size=1 << 27,
    storage_offset_alignment=256,
)
"""What OpenGL 4.3 promises every GPU: the static counts assume no more."""


def probe_loops(outer: int) -> tuple[int, int]:
    """(outer loops run, inner iterations run) in one invocation, on a GL context of its own: a GLBackend, so
    the session's backend makes its own context current again afterwards (a bare moderngl context left its
    released context current, and the NVIDIA driver then dropped the session's later dispatches)."""
    probe = GLBackend()
    try:
        shader = probe.ctx.compute_shader(PROBE)
        counted = probe.ctx.buffer(reserve=8)
        counted.bind_to_storage_buffer(0)
        shader["outer"].value = outer
        shader.run(1)
        loops, inner = np.frombuffer(counted.read(), np.uint32)
        return int(loops), int(inner)
    finally:
        probe.release()


def test_the_driver_runs_dispatch_loops_and_llvmpipe_cuts_past_65535(gpu):
    """The measurement behind DISPATCH_LOOPS: a loop of DISPATCH_LOOPS iterations (each with a constant
    8-trip inner loop, which the fused count omits) runs whole on this driver; on llvmpipe, 70,000 stop at
    65,535 — silently, the cause of issue 26."""
    assert probe_loops(DISPATCH_LOOPS) == (DISPATCH_LOOPS, 8 * DISPATCH_LOOPS)
    if gpu.cpu_renderer and "llvmpipe" in gpu.renderer:
        assert probe_loops(70000)[0] == LLVMPIPE_LOOPS


class Recorder:
    """A stand-in GPU with OpenGL 4.3's guaranteed limits that records what an executor would compile."""

    limits = GL43

    def __init__(self) -> None:
        self.compiled: list[tuple[Kernel, dict, int]] = []

    def program(self, kernel: Kernel, constants, local_size: int) -> None:
        self.compiled.append((kernel, constants, local_size))


def member_spec(arch: dict):
    """The spec of a member of this architecture (tensors back to back), from its meta alone."""
    tensors, offset = {}, 0
    for name, shape in member_shapes(arch).items():
        tensors[name] = {"offset": offset, "shape": list(shape), "scale": 0.01, "zero_point": 128}
        offset += math.prod(shape)
    width, height = image_size(offset)
    meta = {"format": "pixellm", "version": 1, **arch, "tokenizer": "t.json", "tensors": tensors}
    return spec_from_meta(meta | {"image": {"width": width, "height": height}})


LARGEST = [
    {"vocab_size": 65536, "embed_dim": 1024, "context": {"mode": "mean", "window": 16384}, "hidden": [512]},
    {"vocab_size": 256, "embed_dim": 4096, "context": {"mode": "attention", "window": 16384, "concat": 0,
                                                       "head_dim": 4096}, "hidden": [16]},
    {"vocab_size": 256, "embed_dim": 4, "context": {"mode": "attention", "window": 16384, "concat": 16384,
                                                    "head_dim": 4096}, "hidden": [512]},
    {"vocab_size": 65536, "embed_dim": 4, "context": {"mode": "concat", "window": 16384}, "hidden": [1024, 4096, 1024]},
]  # fmt: skip
"""Members at the family's limits (docs/FORMATS.md §2.1), each within the image's 2^26 pixels."""


@pytest.mark.parametrize("arch", LARGEST, ids=lambda a: f"{a['context']['mode']}-V{a['vocab_size']}")
def test_every_passes_and_sampling_kernel_loops_within_the_limit_at_the_familys_largest_shapes(arch):
    spec = member_spec(arch | {"residual": True})
    recorder = Recorder()
    programs = compile_passes(recorder, spec)
    sample_group = min(SAMPLE_MAX_THREADS, 1 << (spec.vocab_size - 1).bit_length())
    sample_constants = programs.constants | {"RANK_KEY_BITS": RANK_KEY_BITS}
    for kernel, constants, local_size in [*recorder.compiled, (GENERATE_SAMPLE, sample_constants, sample_group)]:
        loops = kernel.loops(constants, local_size)
        assert 0 <= loops <= DISPATCH_LOOPS, f"glsl/{kernel.shader}.comp loops {loops} times for {arch}"
    assert max(programs.dense_parts) > 1 or spec.context.mode != "concat", "a 65,536-wide sum runs in parts"


def generate(model, executor: str, rows: list, steps: int, sampling: dict, gpu):
    with Engine(model, gpu=gpu, executor=executor) as engine:
        return engine.generate(rows, steps, Sampling(**sampling))


def test_sampling_at_a_4096_token_vocabulary_keeps_its_cut(tmp_path, gpu, rng, seed):
    """Issue 26's first reproducer: top-p (and top-k) sampling at V = 4,096 drew id 0, outside the kept set,
    on every prompt: the ranking loop ran V^2/256 = 65,536 iterations an invocation."""
    arch = {"vocab_size": 4096, "embed_dim": 8, "context": {"mode": "mean", "window": 2}, "hidden": [16]}
    path = write_random_member(tmp_path, rng, arch | {"residual": False})
    rows = [list(map(int, rng.integers(0, 4096, 3))) for _ in range(4)]
    for sampling in ({"temperature": 0.8, "top_p": 0.9}, {"temperature": 1.5, "top_k": 40}):
        sampling |= {"seed": int(rng.integers(0, 2**32))}
        generation = generate(load_model(path), "passes", rows, 2, sampling, gpu)
        what = f"V 4096, {sampling}, seed {seed}"
        assert assert_replays(params_at(path), rows, generation.tokens, generation.logprobs, sampling, what) > 0


def test_passes_attention_with_embed_512_head_256_agrees(tmp_path, gpu, rng, seed):
    """Issue 26's second reproducer: the scores pass looped HEAD_DIM x EMBED_DIM = 131,072 times an invocation."""
    context = {"mode": "attention", "window": 8, "concat": 0, "head_dim": 256}
    arch = {"vocab_size": 256, "embed_dim": 512, "context": context, "hidden": [64], "residual": False}
    path = write_random_member(tmp_path, rng, arch)
    rows = [list(map(int, rng.integers(0, 256, int(rng.integers(1, 11))))) for _ in range(12)]
    with Engine(load_model(path), gpu=gpu, executor="passes") as engine:
        predictions = engine.predict_ids(rows)
    oracle.assert_agrees(predictions, oracle.logits(params_at(path), rows), f"E 512, D 256, seed {seed}")


SETTINGS = [
    {},
    {"temperature": 1.3},
    {"temperature": 2.0, "top_k": 5},
    {"temperature": 1.0, "top_p": 0.7},
    {"temperature": 2.5, "top_k": 300, "top_p": 0.95},
]


def straddling_members(rng: np.random.Generator) -> list[dict]:
    """12 members on both sides of each limit: vocabularies around 4,096 and up to 65,536, E·D around 2^16
    and up to 2^20, windows up to 512 (a 65,536-wide concat sum: two parts) and a 16,384-token mean; tiny
    elsewhere."""

    def member(vocab: int, embed: int, context: dict) -> dict:
        hidden = [int(rng.integers(8, 17)) for _ in range(int(rng.integers(1, 3)))]
        return {"vocab_size": vocab, "embed_dim": embed, "context": context, "hidden": hidden, "residual": False}

    def attention(window: int, head: int) -> dict:
        return {"mode": "attention", "window": window, "concat": int(rng.integers(0, 2)), "head_dim": head}

    mean = {"mode": "mean", "window": 3}
    return [
        member(int(rng.integers(3900, 4040)), 8, mean),
        member(int(rng.integers(4096, 4300)), 8, mean),
        member(int(rng.integers(16000, 20000)), 8, mean),
        member(65536, 4, {"mode": "concat", "window": 2}),
        member(300, 256, attention(4, 224)),  # E·D just below 2^16
        member(300, 512, attention(4, 160)),  # E·D just above
        member(257, 1024, attention(3, 1024)),  # 2^20
        member(300, 16, attention(512, 8)),
        member(300, 16, attention(33, 4)),  # one past fused's 32-token window
        member(300, 128, {"mode": "concat", "window": 512}),  # X = 65,536: the dense sum in two parts
        member(300, 8, {"mode": "mean", "window": 16384}),  # past fused's window and loop envelope: refused there
        member(int(rng.integers(4096, 8192)), 24, attention(int(rng.integers(20, 33)), 16)),
    ]


def test_random_members_straddling_each_limit_answer_or_refuse_on_every_executor(tmp_path, gpu, rng, seed):
    refused: dict[str, str] = {}
    for index, arch in enumerate(straddling_members(rng)):
        path = write_random_member(tmp_path, rng, arch, name=f"m{index}")
        model, params = load_model(path), params_at(path)
        if index == 10:  # the envelope's loop count refuses it too, not only its window (nor the driver's cut)
            assert loop_refusal(model.spec, FusedConfig().fitted(gpu, model.spec)) is not None, seed
        window, vocab = arch["context"]["window"], arch["vocab_size"]
        rows = [list(map(int, rng.integers(0, vocab, int(rng.integers(1, min(window, 600) + 3))))) for _ in range(3)]
        rows[0] = rows[0][:1]
        what = f"member {index} ({model.spec.architecture.describe()}), seed {seed}"
        lg = oracle.logits(params, rows)
        for executor in ("passes", "fused", "pxvm"):
            fused_refusal = refusal(model.spec, gpu) if executor == "fused" else None
            try:
                with Engine(model, gpu=gpu, executor=executor) as engine:
                    oracle.assert_agrees(engine.predict_ids(rows), lg, f"{executor}, {what}")
                    greedy = engine.generate(rows, 2)
            except PxglError as e:
                message = str(e)
                assert "\n" not in message, message
                # refused before any GPU work: only pxvm (an unsplittable instruction) and fused outside its envelope
                assert executor == "pxvm" or fused_refusal is not None, f"{executor} refused {what}: {message}"
                refused[f"{executor} {index}"] = message
                continue
            logprobs = None if executor == "pxvm" else greedy.logprobs
            assert_replays(params, rows, greedy.tokens, logprobs, {}, f"{executor}, {what}")
        sampling = SETTINGS[1 + index % (len(SETTINGS) - 1)] | {"seed": int(rng.integers(0, 2**32))}
        sampled = generate(model, "passes", rows, 2, sampling, gpu)
        assert_replays(params, rows, sampled.tokens, sampled.logprobs, sampling, f"passes, {sampling}, {what}")
    assert "windows of at most 512 tokens" in refused.get("fused 10", ""), refused


def test_fused_generation_runs_a_long_chunk_in_dispatches_within_the_limit(tmp_path, gpu, rng, seed):
    """A chunk of fused steps ran in one dispatch: past 65,535 loops (about 2,850 steps of pixellm_v0 on
    llvmpipe, 32 of this member, whose 1,024-wide layer loops 1,025 times a step) the GPU left tokens unwritten."""
    arch = {"vocab_size": 300, "embed_dim": 8, "context": {"mode": "mean", "window": 4}, "hidden": [1024, 16]}
    path = write_random_member(tmp_path, rng, arch | {"residual": False})
    # 8 rows: a row whose first step is a near tie is not compared (2 rows were both ties for seed 303460927)
    rows = [list(map(int, rng.integers(0, 300, int(rng.integers(1, 6))))) for _ in range(8)]
    with Engine(load_model(path), gpu=gpu, executor="fused") as engine:
        generation = engine.generate(rows, 80)
    what = f"fused, 80 steps, seed {seed}"
    params = params_at(path)
    compared = assert_replays(params, rows, generation.tokens, generation.logprobs, {}, what)
    # none compared only where every row's first step is a near tie (a member whose ReLUs all died)
    assert compared > 0 or oracle.near_tie(oracle.logits(params, rows)).all(), what


def test_a_kernel_past_the_limit_is_refused_in_one_line_before_it_compiles(gpu):
    kernel = Kernel("generate_window", (), loops=lambda constants, size: DISPATCH_LOOPS + 1)
    with pytest.raises(PxglError, match=r"^glsl/generate_window\.comp: one GPU invocation would loop 57,345 times"):
        gpu.program(kernel, Constants(), 64)
