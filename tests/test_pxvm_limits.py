"""pxVM's limits hold on the GPU: a program at the size limit runs every instruction (llvmpipe ends a
shader's loops after 65535 iterations, so the executor splits a long program into dispatches), and one
past the limit is refused in one line before any work."""

import json
from pathlib import Path

import numpy as np
from pxgl.executors import ExecutorInputs
from pxgl.executors.pxvm import SEGMENT_LOOPS, PxvmExecutor
from pxgl.pxi import encode_tokens, token_ids, token_lengths, token_tails
from pxgl.pxvm.asm import assemble, disassemble
from pxgl.pxvm.compiler import compile_program
from pxgl.pxvm.opcodes import HEADER_PIXELS, MAX_PROGRAM_PIXELS, OPERAND_PIXELS
from pxgl.pxvm.program import decode_program
from pxgl.pxvm.validator import validate_program

from tests.cartridges import pxgl, snapshot
from tests.models import random_model, random_rows
from tests.reference import pxvm as pxvm_reference


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
    assert len(executor.segments) > len(program.instructions) * 32 // SEGMENT_LOOPS  # split, or llvmpipe stops
    window, vocab = model.spec.context_window, model.spec.vocab_size
    texture = encode_tokens(random_rows(rng, 2, vocab, max_len=window + 3), vocab)
    tails = token_tails(texture, token_lengths(texture, vocab), window)
    prediction, scratch = executor.run_with_scratch(tails)
    ids = token_ids(tails)
    rows = [ids[r, : int((tails[r, :, 2] == 255).sum())].tolist() for r in range(len(tails))]
    meta = json.loads(Path(model.source).with_suffix("").with_suffix(".meta.json").read_text())
    what = f"{len(program.instructions)} instructions (seed {seed})"
    pxvm_reference.assert_gpu_matches(pixels, meta, model.weights, rows, prediction, scratch, what)
    weights.release()
    executor.close()


def test_program_past_the_size_limit_is_refused_in_one_line(tmp_path, monkeypatch, capsys, rng):
    model = random_model(tmp_path, rng, 1024, 16, 32, 4)
    source = tmp_path / "long.asm"
    source.write_text(long_program(model, rng, 1))
    before = snapshot(tmp_path)
    code, out, err = pxgl(monkeypatch, capsys, "asm", str(source), "-o", str(tmp_path / "long.pxi"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(MAX_PROGRAM_PIXELS) in err, err
    assert snapshot(tmp_path) == before
