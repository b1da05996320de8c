#!/usr/bin/env bash
# Issue 16 (hardening) on a real GPU: what CI (llvmpipe) cannot show. Run from the repository root after
# `make setup`, on the NVIDIA machine:
#
#     bash tests/gpu_hardening.sh            # PXGL_DEVICE=N picks the EGL device
#
# 1. the hardening tests that touch the GPU: pxVM at its size limit and one instruction longer than a
#    dispatch (split into parts), every pxVM opcode against the reference, the output guard and hostile
#    inputs end to end, the fuzz suite (CPU only, but it must pass wherever the lead runs it);
# 2. a probe of how many loop iterations one invocation of glsl/pxvm.comp runs in ONE dispatch on this
#    driver (the executor's plan is switched off, so nothing is split): llvmpipe stops at 65,535; the
#    table says whether this driver runs 2^14 .. 2^20 (a DOT_PRODUCT of out_len 1 summing n terms, checked
#    against numpy), and that the split plan gives the same answer at every size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m pxgl info
$PY -m pytest -q -p no:cacheprovider \
  tests/test_pxvm_limits.py tests/test_pxvm_ops.py tests/test_pxvm_program.py tests/test_pxvm_validator.py \
  tests/test_pxvm_cli.py tests/test_outputs.py tests/test_hostile_inputs.py tests/test_cartridge_hostile.py \
  tests/test_fuzz.py "tests/test_generate.py" -k "not browser" --durations=10
PYTHONPATH=. $PY - <<'EOF'
"""One long DOT_PRODUCT per size, in one dispatch (plan off) and in the executor's parts (plan on)."""
import tempfile
import time
from pathlib import Path

import numpy as np
import pxgl.pxvm.dispatch as vm_dispatch
from pxgl.executors import ExecutorInputs
from pxgl.executors.pxvm import PxvmExecutor
from pxgl.gl import GLBackend
from pxgl.pxi import encode_tokens, token_lengths, token_tails
from pxgl.pxvm.asm import assemble
from pxgl.pxvm.validator import validate_program

from tests.models import random_model

gpu = GLBackend()
print(f"\nrenderer: {gpu.renderer}")
rng = np.random.default_rng(16)
model = random_model(Path(tempfile.mkdtemp()), rng, 16384, 16, 64, 4)  # out.weight: 2^20 elements
weights = gpu.uint_texture(model.weights, "weights")
out = model.spec.tensors["out.weight"]
values = (model.weights.reshape(-1)[out.offset : out.offset + out.size].astype(np.float64) - out.zero_point) * out.scale
texture = encode_tokens([[1, 2, 3]], model.spec.vocab_size)
tails = token_tails(texture, token_lengths(texture, model.spec.vocab_size), model.spec.context_window)
print(f"{'terms n':>9} {'loops/invocation':>17} {'one dispatch':>14} {'s':>7} {'dispatches':>10} {'split plan':>14} {'s':>7}")
for n in (1 << 14, 1 << 16, 1 << 18, (1 << 20) - 8):
    source = f".scratch {n + 4}\nLOAD_WEIGHT_SLICE out, 0, {n}, s0\nRELU s0, {n}\n"
    source += f"DOT_PRODUCT s0, {n}, out, 0, 1, s{n}\nARGMAX s{n}, 1, s{n + 1}\nSTORE_PIXEL s{n + 1}, o0\nHALT\n"
    pixels = assemble(source, f"probe {n}")
    program = validate_program(pixels, model.spec, f"probe {n}")
    want = float(np.sum(np.maximum(values[:n], 0) * values[:n]))
    row = [f"{n:>9}", f"{n + 2:>17}"]
    for limit in (10**12, vm_dispatch.DISPATCH_LOOPS):
        vm_dispatch.DISPATCH_LOOPS = limit
        executor = PxvmExecutor(gpu, ExecutorInputs(model.spec, weights, program))
        start = time.perf_counter()
        try:
            _, scratch = executor.run_with_scratch(tails)
            got = float(scratch[0, n])
            ok = "ran" if abs(got - want) <= n * 2**-24 * abs(want) + 1e-3 else f"WRONG {got:.4g}"
        except Exception as e:  # noqa: BLE001 - the probe reports any failure
            ok = f"failed: {type(e).__name__}"
        row += [f"{ok:>14}", f"{time.perf_counter() - start:7.2f}"]
        if limit != 10**12:
            row.insert(-2, f"{len(executor.dispatches):>10}")
        executor.close()
    vm_dispatch.DISPATCH_LOOPS = 56 << 10
    print(" ".join(row))
EOF
