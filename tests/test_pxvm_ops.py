"""Every pxVM opcode on the GPU interpreter against the reference interpreter (tests/pxvm_reference.py):
small hand-assembled programs with random operands over random weights and random prompts.

Each program loads its inputs with LOAD_WEIGHT_SLICE, runs the opcode under test and ends with ARGMAX,
STORE_PIXEL, HALT, so the whole scratch (NaN where unwritten) and the prediction pixel are compared."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pxgl.executors.protocol import ExecutorInputs
from pxgl.executors.pxvm import PxvmExecutor
from pxgl.loading import load_model
from pxgl.pxi import encode_tokens, token_ids, token_lengths, token_tails
from pxgl.pxvm.asm import assemble
from pxgl.pxvm.opcodes import OPS, TENSOR_SPELLING, TENSOR_TABLES
from pxgl.pxvm.validator import validate_program

from tests.models import random_model, random_rows
from tests.reference import pxvm as pxvm_reference
from tests.reference.models import write_random_member

SCRATCH = 4000
PROMPTS = 24
CASES = 3
"""Random programs per opcode in one run."""


class Builder:
    """Assembly text for one random program; scratch regions handed out in order with random gaps."""

    def __init__(self, rng: np.random.Generator, spec, version: int) -> None:
        self.rng, self.spec, self.version = rng, spec, version
        self.lines = [f".version {version}", f".scratch {SCRATCH}"]
        self.free = 0
        tables = zip(TENSOR_SPELLING[version], TENSOR_TABLES[version], strict=True)
        self.sizes = {spelled: spec.tensors[name].size for spelled, name in tables if name in spec.tensors}
        """Each tensor this model has, as the program version spells it, and its element count."""

    def alloc(self, length: int) -> int:
        start = self.free + int(self.rng.integers(0, 9))
        self.free = start + length
        assert self.free <= SCRATCH, "test program outgrew its scratch"
        return start

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def tensor(self, at_least: int) -> str:
        return str(self.rng.choice([n for n, size in self.sizes.items() if size >= at_least]))

    def load(self, length: int) -> int:
        """LOAD_WEIGHT_SLICE of random weights into a fresh region; returns its address."""
        name = self.tensor(length)
        offset = int(self.rng.integers(0, self.sizes[name] - length + 1))
        dst = self.alloc(length)
        self.emit(f"LOAD_WEIGHT_SLICE {name}, {offset}, {length}, s{dst}")
        return dst

    def token_rows(self) -> tuple[str, int]:
        """A tensor and row length whose rows cover every token id."""
        name = self.tensor(self.spec.vocab_size)
        longest = self.sizes[name] // self.spec.vocab_size
        return name, int(self.rng.integers(1, min(longest, 96) + 1))

    def length(self, most: int) -> int:
        return int(self.rng.integers(1, most + 1))

    def finish(self, src: int, length: int) -> str:
        result = self.alloc(2)
        self.emit(f"ARGMAX s{src}, {length}, s{result}")
        self.emit(f"STORE_PIXEL s{result}, o0")
        self.emit("HALT")
        return "\n".join(self.lines) + "\n"


def load_weight_slice(b: Builder) -> str:
    length = b.length(700)
    return b.finish(b.load(length), length)


def load_token(b: Builder) -> str:
    name, length = b.token_rows()
    back = int(b.rng.integers(0, b.spec.context_window))
    dst = b.alloc(length)
    b.emit(f"LOAD_TOKEN t{back}, {name}, {length}, s{dst}")
    return b.finish(dst, length)


def pool_tokens(b: Builder) -> str:
    name, length = b.token_rows()
    dst = b.alloc(length)
    b.emit(f"POOL_TOKENS {name}, {length}, s{dst}")
    return b.finish(dst, length)


def dot_product(b: Builder) -> str:
    in_len = b.length(32)
    name = b.tensor(in_len)
    out_len = b.length(min(b.sizes[name] // in_len, 300))  # past THREADS: several outputs each
    offset = int(b.rng.integers(0, b.sizes[name] - in_len * out_len + 1))
    src, dst = b.load(in_len), b.alloc(out_len)
    b.emit(f"DOT_PRODUCT s{src}, {in_len}, {name}, {offset}, {out_len}, s{dst}")
    return b.finish(dst, out_len)


def add_bias(b: Builder) -> str:
    length = b.length(500)
    dst, src = b.load(length), b.load(length)
    b.emit(f"ADD_BIAS s{dst}, s{src}, {length}")
    return b.finish(dst, length)


def relu(b: Builder) -> str:
    length = b.length(500)
    dst = b.load(length)
    b.emit(f"RELU s{dst}, {length}")
    return b.finish(dst, length)


def argmax(b: Builder) -> str:
    """Over quantized weights: equal bytes make exact ties, which must go to the lowest index."""
    length = b.length(1500)
    return b.finish(b.load(length), length)


def store_pixel(b: Builder) -> str:
    """From any two floats, not only an ARGMAX result: id = clamp(floor(S[src])), p = S[src + 1]."""
    src = b.load(2)
    b.emit(f"STORE_PIXEL s{src}, o0")
    b.emit("HALT")
    return "\n".join(b.lines) + "\n"


def concat_tokens(b: Builder) -> str:
    """Version 1: the last `count` rows side by side, zeros where the prompt is shorter."""
    name, length = b.token_rows()
    count = int(b.rng.integers(1, b.spec.context_window + 1))
    dst = b.alloc(count * length)
    b.emit(f"CONCAT_TOKENS {name}, {length}, {count}, s{dst}")
    return b.finish(dst, count * length)


def attend(b: Builder) -> str:
    """Version 1, on an attention model: the head over the prompt's tokens, any head width; tmp after dst."""
    e, c = b.spec.embed_dim, b.spec.context
    head = int(b.rng.integers(1, c.head_dim + 1))
    dst, tmp = b.alloc(head), b.alloc(head + c.window)
    b.emit(f"ATTEND embed, attn.pos, attn.query, attn.key, attn.value, {e}, {head}, s{tmp}, s{dst}")
    return b.finish(dst, head)


GENERATORS: dict[str, Callable[[Builder], str]] = {
    "LOAD_WEIGHT_SLICE": load_weight_slice,
    "LOAD_TOKEN": load_token,
    "POOL_TOKENS": pool_tokens,
    "DOT_PRODUCT": dot_product,
    "ADD_BIAS": add_bias,
    "RELU": relu,
    "ARGMAX": argmax,
    "STORE_PIXEL": store_pixel,
    "CONCAT_TOKENS": concat_tokens,
    "ATTEND": attend,
}
V1_ONLY = {"CONCAT_TOKENS", "ATTEND"}


def test_every_opcode_has_a_test():
    assert set(GENERATORS) == {op.name for op in OPS} - {"HALT"}  # HALT ends every program here


def op_model(directory: Path, rng: np.random.Generator, version: int):
    """Version 0: a pixellm_v0-shaped model; version 1: an attention member, so every tensor exists."""
    if version == 0:
        return random_model(directory, rng, vocab=97, embed=24, hidden=40, window=6)
    context = {"mode": "attention", "window": 6, "concat": 2, "head_dim": int(rng.integers(1, 20))}
    arch = {"vocab_size": 300, "embed_dim": 24, "context": context, "hidden": [40, 33], "residual": False}
    return load_model(write_random_member(directory, rng, arch))


def meta_of(model) -> dict:
    return json.loads(Path(model.source).with_suffix("").with_suffix(".meta.json").read_text())


def random_tails(rng, model) -> tuple[np.ndarray, list[list[int]]]:
    """Token texture rows as the engine hands them to an executor, and each prompt's ids."""
    window = model.spec.context_window
    pixels = encode_tokens(random_rows(rng, PROMPTS, model.spec.vocab_size, max_len=window + 3), model.spec.vocab_size)
    tails = token_tails(pixels, token_lengths(pixels, model.spec.vocab_size), window)
    ids = token_ids(tails)
    return tails, [ids[r, : int((tails[r, :, 2] == 255).sum())].tolist() for r in range(len(tails))]


@pytest.mark.parametrize(
    ("opcode", "version"), [(op, v) for op in sorted(GENERATORS) for v in (0, 1) if v == 1 or op not in V1_ONLY]
)
def test_opcode_on_gpu_matches_reference(opcode, version, tmp_path, gpu, rng, seed):
    model = op_model(tmp_path, rng, version)
    weights = gpu.uint_texture(model.weights, "weights")
    meta = meta_of(model)
    for case in range(CASES):
        text = GENERATORS[opcode](Builder(rng, model.spec, version))
        pixels = assemble(text, f"{opcode} case {case}")
        executor = PxvmExecutor(
            gpu, ExecutorInputs(model.spec, weights, validate_program(pixels, model.spec, f"{opcode} {case}"))
        )
        tails, ids = random_tails(rng, model)
        executor.run(tails)  # allocate the tile, then poison it so an unwritten value cannot pass
        executor.poison()
        prediction, scratch = executor.run_with_scratch(tails)
        what = f"{opcode} case {case} (seed {seed}):\n{text}"
        pxvm_reference.assert_gpu_matches(pixels, meta, model.weights, ids, prediction, scratch, what)
