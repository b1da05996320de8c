"""pxVM's limits hold on the GPU: a program at the size limit runs every instruction, and so does one
instruction whose loops alone are longer than a dispatch may run (llvmpipe ends a shader's loops after
65535 iterations, so the executor splits a long program into dispatches and a long instruction into
parts); an instruction that cannot be split and is too long, and a program past the size limit, are
refused in one line before any work."""

import json
from pathlib import Path

import numpy as np
import pxgl.executors.pxvm as pxvm_executor
import pxgl.pxvm.dispatch as vm_dispatch
import pytest
from pxgl.errors import PxglError
from pxgl.executors import ExecutorInputs
from pxgl.executors.pxvm import PxvmExecutor
from pxgl.loading import load_model
from pxgl.pxi import encode_tokens, token_ids, token_lengths, token_tails
from pxgl.pxvm.asm import assemble, disassemble
from pxgl.pxvm.compiler import compile_program
from pxgl.pxvm.dispatch import ALL, DISPATCH_LOOPS, Dispatch, whole_loops
from pxgl.pxvm.opcodes import HEADER_PIXELS, MAX_PROGRAM_PIXELS, OPERAND_PIXELS
from pxgl.pxvm.program import decode_program
from pxgl.pxvm.validator import validate_program

from tests.cartridges import pxgl, snapshot
from tests.models import random_model, random_rows
from tests.reference import pxvm as pxvm_reference
from tests.reference.models import write_random_member


def long_program(model, rng: np.random.Generator, extra_pixels: int) -> str:
    """The model's compiled program with ADD_BIAS instructions (each adds a random slice of the output
    bias to the logits, so a skipped one changes the answer) filling the size limit, plus `extra_pixels`
    more."""
    compiled = decode_program(compile_program(model.spec), "compiled")
    lines = [line for line in disassemble(compiled).splitlines() if not line.startswith(".image")]
    operand = OPERAND_PIXELS[compiled.version]
    used = HEADER_PIXELS + sum(1 + len(ins.operands) * operand for ins in compiled.instructions)
    add = 1 + 3 * operand
    count = (MAX_PROGRAM_PIXELS - used) // add + -(-extra_pixels // add)
    logits, bias = compiled.instructions[5]["dst"], compiled.instructions[6]["dst"]  # after b_out is loaded
    adds = [f"ADD_BIAS s{logits}, s{bias + int(rng.integers(0, 64))}, 4" for _ in range(count)]
    at = next(i for i, line in enumerate(lines) if line.startswith("LOAD_WEIGHT_SLICE  b_out"))
    return "\n".join(lines[: at + 1] + adds + lines[at + 1 :]) + "\n"


def test_program_at_the_size_limit_runs_every_instruction(tmp_path, gpu, rng, seed):
    model = random_model(tmp_path, rng, 1024, 16, 32, 4)
    pixels = assemble(long_program(model, rng, 0), "long")
    assert MAX_PROGRAM_PIXELS - 4 < pixels.shape[0] * pixels.shape[1] <= MAX_PROGRAM_PIXELS
    program = validate_program(pixels, model.spec, "long")
    weights = gpu.uint_texture(model.weights, "weights")
    executor = PxvmExecutor(gpu, ExecutorInputs(model.spec, weights, program))
    assert len(executor.dispatches) > len(program.instructions) * 32 // DISPATCH_LOOPS  # split, or llvmpipe stops
    assert_runs_as_reference(executor, model, pixels, rng, f"{len(program.instructions)} instructions (seed {seed})")
    weights.release()
    executor.close()


def assert_runs_as_reference(
    executor: PxvmExecutor, model, pixels: np.ndarray, rng, what: str, long_sum: int | None = None
) -> None:
    """Two random prompts through the executor: every scratch float and the pixel as the reference's. The
    float at `long_sum` sums LONG terms in float32, so it is held to that sum's error bound (LONG·2^-24 of
    the sum of |terms|, Higham), which still sees any part left out or run twice."""
    window, vocab = model.spec.context_window, model.spec.vocab_size
    texture = encode_tokens(random_rows(rng, 2, vocab, max_len=window + 3), vocab)
    tails = token_tails(texture, token_lengths(texture, vocab), window)
    prediction, gpu_scratch = executor.run_with_scratch(tails)
    scratch = gpu_scratch.copy()
    ids = token_ids(tails)
    rows = [ids[r, : int((tails[r, :, 2] == 255).sum())].tolist() for r in range(len(tails))]
    meta = json.loads(Path(model.source).with_suffix("").with_suffix(".meta.json").read_text())
    for r, row in enumerate(rows if long_sum is not None else []):
        ref = pxvm_reference.run(pixels, meta, model.weights, row)
        got, want, bound = float(scratch[r, long_sum]), ref.scratch[long_sum], LONG * 2.0**-24 * ref.magnitude[long_sum]
        assert abs(got - want) <= bound, f"{what}: prompt {r}, s{long_sum}: GPU {got}, reference {want} (±{bound:.3g})"
        scratch[r, long_sum] = want
    pxvm_reference.assert_gpu_matches(pixels, meta, model.weights, rows, prediction, scratch, what)


LONG = 131072
"""Elements of out.weight in long_instructions' model: a DOT_PRODUCT over all of them, out_len 1, loops
131,073 times in one invocation, twice what llvmpipe runs."""


def long_instructions() -> str:
    """Every splittable opcode of version 0 at its longest in a (2048, 16, 64, 4) model, one DOT_PRODUCT
    summing all LONG weights into one float."""
    return f"""
.scratch {LONG + 16 + 16 + 64 + 2 + 1}
POOL_TOKENS        embed, 16, s0
LOAD_TOKEN         t0, embed, 16, s{LONG + 16}
ADD_BIAS           s0, s{LONG + 16}, 16
LOAD_WEIGHT_SLICE  out, 0, {LONG}, s16
RELU               s16, {LONG}
DOT_PRODUCT        s16, {LONG}, out, 0, 1, s{LONG + 32 + 64 + 2}
DOT_PRODUCT        s0, 16, hidden, 0, 64, s{LONG + 32}
ARGMAX             s{LONG + 32}, 64, s{LONG + 32 + 64}
STORE_PIXEL        s{LONG + 32 + 64}, o0
HALT
"""


def dispatch_loops(dispatch: Dispatch, program, window: int, threads: int) -> int:
    """An upper bound of one invocation's loop iterations in a dispatch, counted here from the shader's loops
    (independently of the executor's plan)."""
    loops = window + 1
    for ins in program.instructions:
        if not dispatch.pc_begin <= ins.pixel < dispatch.pc_end:
            continue
        name = ins.op.name
        if name in ("DOT_PRODUCT", "LOAD_WEIGHT_SLICE", "LOAD_TOKEN", "ADD_BIAS", "RELU", "POOL_TOKENS"):
            n = ins["out_len"] if name == "DOT_PRODUCT" else ins["length"]
            items = min(n, dispatch.item_end) - dispatch.item_begin
            inner = window + 1 if name == "POOL_TOKENS" else 0
            if name == "DOT_PRODUCT":
                inner = min(ins["in_len"], dispatch.term_end) - dispatch.term_begin + 1
            loops += 32 + 1 + -(-items // threads) * (1 + inner)
        else:
            loops += whole_loops(ins, window, threads)
    return loops


@pytest.mark.parametrize("threads, loop_limit", [(None, None), (16, 2000)])
def test_one_instruction_longer_than_a_dispatch_runs_in_parts(
    tmp_path, gpu, rng, seed, monkeypatch, threads, loop_limit
):
    """At the interpreter's own sizes the long DOT_PRODUCT's sum is split; with 16 invocations and a small
    dispatch every splittable opcode is split in elements too: the scratch is the reference's either way."""
    if threads:
        monkeypatch.setattr(pxvm_executor, "VM_THREADS", threads)
        monkeypatch.setattr(vm_dispatch, "DISPATCH_LOOPS", loop_limit)
    model = random_model(tmp_path, rng, 2048, 16, 64, 4)
    pixels = assemble(long_instructions(), "long instructions")
    program = validate_program(pixels, model.spec, "long instructions")
    weights = gpu.uint_texture(model.weights, "weights")
    executor = PxvmExecutor(gpu, ExecutorInputs(model.spec, weights, program))
    local_size = threads or 256
    long_dot = next(ins for ins in program.instructions if ins.op.name == "DOT_PRODUCT")
    parts = [d for d in executor.dispatches if d.pc_begin == long_dot.pixel]
    assert len(parts) >= 2 and all(d.term_end - d.term_begin < LONG for d in parts), parts
    for dispatch in executor.dispatches:
        assert dispatch_loops(dispatch, program, 4, local_size) <= vm_dispatch.DISPATCH_LOOPS, dispatch
    if threads:
        split = {
            ins.op.name
            for ins in program.instructions
            for d in executor.dispatches
            if d.pc_begin == ins.pixel and d.item_end < ALL
        }
        assert {"LOAD_WEIGHT_SLICE", "RELU"} <= split, split
    what = f"long instructions, {local_size} threads (seed {seed})"
    assert_runs_as_reference(executor, model, pixels, rng, what, long_sum=long_dot["dst"])
    weights.release()
    executor.close()


def attention_member(tmp_path, rng, head_dim: int):
    """A one-head member of embed 256 whose ATTEND loops about head·258 times in the scores step."""
    arch = {"vocab_size": 256, "embed_dim": 256, "context": {"mode": "attention", "window": 4, "concat": 0}}
    arch["context"]["head_dim"] = head_dim
    name = f"head{head_dim}"
    return load_model(write_random_member(tmp_path, rng, arch | {"hidden": [1], "residual": False}, name))


def test_an_attend_too_long_for_any_dispatch_is_refused_in_one_line(tmp_path, rng):
    """ATTEND is never split: one whose scores loop head·(length + 2) times (256 x 258 here) is refused by
    the validator, naming the instruction and the limit; at head 128 the same model's program is valid."""
    model = attention_member(tmp_path, rng, 256)
    with pytest.raises(PxglError) as refused:
        validate_program(compile_program(model.spec), model.spec, "attention")
    message = str(refused.value)
    assert "\n" not in message and "ATTEND" in message and str(DISPATCH_LOOPS) in message, message
    smaller = attention_member(tmp_path, rng, 128)
    validate_program(compile_program(smaller.spec), smaller.spec, "attention")


def test_program_past_the_size_limit_is_refused_in_one_line(tmp_path, monkeypatch, capsys, rng):
    model = random_model(tmp_path, rng, 1024, 16, 32, 4)
    source = tmp_path / "long.asm"
    source.write_text(long_program(model, rng, 1))
    before = snapshot(tmp_path)
    code, out, err = pxgl(monkeypatch, capsys, "asm", str(source), "-o", str(tmp_path / "long.pxi"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(MAX_PROGRAM_PIXELS) in err, err
    assert snapshot(tmp_path) == before
