"""The static validator and the text form: a corpus of malformed programs, one per problem class, each
rejected with its own one-line message before any GPU work (a spy counts GL contexts and dispatches);
random bit flips of a valid program (hypothesis) are rejected, or run in bounds exactly as the reference
interpreter says; disassembly round-trips through the assembler byte for byte."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pxgl.cli import app
from pxgl.errors import PxglError
from pxgl.executors.protocol import ExecutorInputs
from pxgl.executors.pxvm import PxvmExecutor
from pxgl.gl import GLBackend
from pxgl.pxi import encode_tokens, token_lengths, token_tails, write_rgb
from pxgl.pxvm.asm import assemble, disassemble
from pxgl.pxvm.compiler import compile_program, compiled_instructions, program_version, scratch_layout
from pxgl.pxvm.opcodes import BY_NAME, HEADER_PIXELS, MAX_SCRATCH, OPERAND_PIXELS, OPS, TENSOR_SPELLING
from pxgl.pxvm.program import Instruction, decode_program, encode_program
from pxgl.pxvm.validator import validate_program, work, work_limit
from pxgl.spec import MAX_IMAGE_SIDE, meta_path_for
from typer.testing import CliRunner

from tests.models import random_model, random_rows
from tests.reference import pxvm as pxvm_reference

SLOW_EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def model(tmp_path, rng):
    return random_model(tmp_path, rng, vocab=40, embed=8, hidden=12, window=4)


@pytest.fixture
def gpu_calls(monkeypatch) -> Counter:
    """Counts GL contexts made and compute dispatches, by wrapping GLBackend's own methods."""
    calls: Counter = Counter()
    init, dispatch = GLBackend.__init__, GLBackend.run

    def counting_init(self, *args, **kwargs):
        calls["context"] += 1
        init(self, *args, **kwargs)

    def counting_dispatch(self, *args, **kwargs):
        calls["dispatch"] += 1
        dispatch(self, *args, **kwargs)

    monkeypatch.setattr(GLBackend, "__init__", counting_init)
    monkeypatch.setattr(GLBackend, "run", counting_dispatch)
    return calls


def ins(name: str, *operands: int) -> Instruction:
    return Instruction(BY_NAME[name], operands)


def program_with(
    spec, changes: dict[int, Instruction] | None = None, scratch: int | None = None, drop=()
) -> np.ndarray:
    """The compiled program with some instructions replaced or dropped."""
    changes = changes or {}
    body = [changes.get(i, x) for i, x in enumerate(compiled_instructions(spec)) if i not in drop]
    size = scratch if scratch is not None else scratch_layout(spec).size
    return encode_program(size, body, version=program_version(spec))


def set_pixel(pixels: np.ndarray, index: int, value) -> np.ndarray:
    out = pixels.copy()
    out.reshape(-1, 3)[index] = value
    return out


def malformed(spec) -> dict[str, tuple[np.ndarray, str]]:
    """One program per problem class → (pixels, the message it must be rejected with)."""
    good = compile_program(spec)
    s, e, h = scratch_layout(spec), spec.embed_dim, spec.hidden[0]
    tensor = {name: i for i, name in enumerate(TENSOR_SPELLING[0])}
    context, hidden = s.context, s.hidden[0]
    pool = HEADER_PIXELS  # the first instruction's header pixel
    body = compiled_instructions(spec)
    logits = body[5]  # DOT_PRODUCT h · out: repeated until the program does more than the work limit allows
    repeats = work_limit(spec) // work(logits, spec) + 1
    no_halt = compiled_instructions(spec)[:-1]
    exact = encode_program(s.size, no_halt, (HEADER_PIXELS + sum(1 + len(x.operands) for x in no_halt), 1), 0)
    return {
        "not an image": (good[..., :2], "is an RGB image"),
        "bad magic": (set_pixel(good, 0, (0x70, 0x78, 0x57)), "not a pxVM program"),
        "too few pixels": (good.reshape(-1, 3)[: HEADER_PIXELS - 1].reshape(1, -1, 3), "fewer than the 3"),
        "version": (set_pixel(good, 1, (7, 0, 0)), "program version 7"),
        "no scratch": (set_pixel(good, 2, (0, 0, 0)), "declares 0 scratch floats"),
        "too much scratch": (program_with(spec, scratch=MAX_SCRATCH[0] + 1), "scratch floats; pxVM version 0 allows"),
        "over the size limit": (np.zeros((257, 256, 3), np.uint8), "over the pxVM program size limit"),
        "unknown opcode": (set_pixel(good, pool, (0x42, 3, 0)), "unknown opcode 0x42"),
        "wrong operand count": (set_pixel(good, pool, (BY_NAME["POOL_TOKENS"].code, 4, 0)), "it takes 3"),
        "reserved flags": (set_pixel(good, pool, (BY_NAME["POOL_TOKENS"].code, 3, 1)), "flags byte is reserved"),
        "truncated": (exact[:, :-1], "the program is truncated"),
        "missing HALT": (exact, "without HALT"),
        "junk after HALT": (set_pixel(good, good.shape[0] * good.shape[1] - 1, (0, 0, 1)), "after HALT"),
        "unknown tensor": (program_with(spec, {0: ins("POOL_TOKENS", 5, e, context)}), "names tensor 5"),
        "zero length": (program_with(spec, {4: ins("RELU", hidden, 0)}), "lengths are at least 1"),
        "scratch out of bounds": (program_with(spec, scratch=s.size - 1), "outside SCRATCH"),
        "weights out of bounds": (
            program_with(spec, {1: ins("DOT_PRODUCT", context, e, tensor["hidden"], 1, h, hidden)}),
            "outside WEIGHTS",
        ),
        "token rows out of bounds": (
            program_with(spec, {0: ins("POOL_TOKENS", tensor["embed"], e + 1, context)}),
            "outside WEIGHTS",
        ),
        "tokens out of bounds": (
            program_with(spec, {0: ins("LOAD_TOKEN", spec.context_window, tensor["embed"], e, context)}),
            "outside TOKENS",
        ),
        "output out of bounds": (program_with(spec, {9: ins("STORE_PIXEL", s.result, 1)}), "outside OUTPUT"),
        "output overlaps input": (
            program_with(spec, {1: ins("DOT_PRODUCT", context, e, tensor["hidden"], 0, h, context + 1)}),
            "overlaps",
        ),
        "read before write": (program_with(spec, drop=(6,)), "before any instruction writes it"),
        "no output": (program_with(spec, drop=(9,)), "never writes its prediction pixel"),
        "too much work": (
            encode_program(s.size, body[:6] + [logits] * repeats + body[6:], None, 0),
            "over the limit of",
        ),
        "opcode of a later version": (
            set_pixel(good, pool, (BY_NAME["CONCAT_TOKENS"].code, 4, 0)),
            "is a version-1 opcode; this program is version 0",
        ),
    }


def test_each_malformed_class_has_its_own_one_line_message(model, gpu_calls):
    corpus = malformed(model.spec)
    messages = set()
    for name, (pixels, expected) in corpus.items():
        with pytest.raises(PxglError) as raised:
            validate_program(pixels, model.spec, name)
        message = str(raised.value)
        assert expected in message, f"{name}: {message}"
        assert "\n" not in message, f"{name}: not one line"
        messages.add(message.removeprefix(f"{name}: "))
    assert len(messages) == len(corpus), "two problem classes share a message"
    assert gpu_calls == Counter(), "validation touched the GPU"


def test_cli_rejects_each_malformed_program_before_any_gpu_work(model, tmp_path, gpu_calls):
    tokens = tmp_path / "in.pxi"
    write_rgb(tokens, encode_tokens([[1, 2, 3]], model.spec.vocab_size))
    runner = CliRunner()
    for name, (pixels, expected) in malformed(model.spec).items():
        if pixels.shape[-1] != 3:
            continue  # not writable as a pixel file
        path = tmp_path / f"{name.replace(' ', '_')}.pxi"
        write_rgb(path, pixels)
        args = ["infer", "-m", model.source, "-i", str(tokens), "--program", str(path), "-o", str(tmp_path / "o.pxi")]
        result = runner.invoke(app, args)
        assert isinstance(result.exception, PxglError) and expected in str(result.exception), f"{name}: {result}"
    assert gpu_calls == Counter(), "a rejected program reached the GPU"
    assert not (tmp_path / "o.pxi").exists()
    good = tmp_path / "good.pxi"
    write_rgb(good, compile_program(model.spec))
    args = ["infer", "-m", model.source, "-i", str(tokens), "--program", str(good), "-o", str(tmp_path / "o.pxi")]
    assert runner.invoke(app, args).exit_code == 0
    assert gpu_calls["dispatch"] > 0, "the spy must see a valid program's dispatch"


def flip(pixels: np.ndarray, bits: list[tuple[int, int]]) -> np.ndarray:
    """Flip bit b of byte i of the pixel stream, for each (i, b)."""
    flat = pixels.reshape(-1).copy()
    for byte, bit in bits:
        flat[byte] ^= np.uint8(1 << bit)
    return flat.reshape(pixels.shape)


def assert_runs_like_the_reference(pixels, model, gpu, rng, what):
    """Accepted programs: the reference interpreter, which checks every access itself, must not fault,
    and the GPU must agree with it value for value."""
    program = validate_program(pixels, model.spec, what)
    meta = json.loads(meta_path_for(Path(model.source)).read_text())
    rows = random_rows(rng, 6, model.spec.vocab_size, max_len=7)
    tokens = encode_tokens(rows, model.spec.vocab_size)
    tails = token_tails(tokens, token_lengths(tokens, model.spec.vocab_size), model.spec.context_window)
    executor = PxvmExecutor(gpu, ExecutorInputs(model.spec, gpu.uint_texture(model.weights, "weights"), program))
    executor.run(tails)
    executor.poison()
    prediction, scratch = executor.run_with_scratch(tails)
    ids = [row[-model.spec.context_window :].tolist() for row in rows]
    pxvm_reference.assert_gpu_matches(pixels, meta, model.weights, ids, prediction, scratch, what)


def test_flips_that_stay_valid_run_like_the_reference(model, gpu, rng):
    valid = compile_program(model.spec)
    relu = next(x for x in decode_program(valid, "valid").instructions if x.op.name == "RELU")
    length_byte = (relu.pixel + 2) * 3  # RELU dst, length: the low byte of its length
    cases = {"scratch size + 1": [(2 * 3, 0)], "RELU over the bias too": [(length_byte, 0)]}
    for what, bits in cases.items():
        assert_runs_like_the_reference(flip(valid, bits), model, gpu, rng, what)


@st.composite
def bit_flips(draw, pixels: np.ndarray) -> list[tuple[int, int]]:
    """1-3 random bit flips: anywhere, or (to reach valid programs more often) in an operand's low bits."""
    operand_pixels = [
        x.pixel + 1 + k for x in decode_program(pixels, "valid").instructions for k in range(len(x.operands))
    ]
    anywhere = st.tuples(st.integers(0, pixels.size - 1), st.integers(0, 7))
    low_operand_bit = st.tuples(st.sampled_from(operand_pixels).map(lambda p: 3 * p), st.integers(0, 5))
    return draw(st.lists(st.one_of(anywhere, low_operand_bit), min_size=1, max_size=3))


@SLOW_EXAMPLES
@given(data=st.data())
def test_bit_flips_are_rejected_or_run_in_bounds(model, gpu, data):
    valid = compile_program(model.spec)
    bits = data.draw(bit_flips(valid))
    pixels = flip(valid, bits)
    try:
        validate_program(pixels, model.spec, "flipped")
    except PxglError as e:
        assert "\n" not in str(e)
        event("rejected")
        return
    event("accepted")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    assert_runs_like_the_reference(pixels, model, gpu, rng, f"flips {bits}")


@pytest.mark.parametrize("dims", [(1024, 128, 128, 16), (512, 64, 96, 8), (2, 1, 1, 1)])
def test_disasm_of_the_compiled_program_round_trips(tmp_path, rng, dims):
    model = random_model(tmp_path, rng, *dims)
    pixels = compile_program(model.spec)
    text = disassemble(validate_program(pixels, model.spec, "compiled"))
    for op in ("POOL_TOKENS", "DOT_PRODUCT", "RELU", "ARGMAX", "STORE_PIXEL", "HALT"):
        assert op in text
    assert np.array_equal(assemble(text, "disassembly"), pixels)


def operand_limit(version: int) -> int:
    return 1 << (24 * OPERAND_PIXELS[version])


@st.composite
def decodable_programs(draw) -> np.ndarray:
    """Random programs of either version that the format accepts (the model's bounds aside), at random
    image widths."""
    version = draw(st.sampled_from([0, 1]))
    ops = [op for op in OPS if op.name != "HALT" and op.since <= version]
    body = []
    for op in draw(st.lists(st.sampled_from(ops), max_size=12)):
        values = [
            draw(st.integers(0, len(TENSOR_SPELLING[version]) - 1))
            if o.kind.name == "TENSOR"
            else draw(st.integers(0, operand_limit(version) - 1))
            for o in op.operands
        ]
        body.append(Instruction(op, tuple(values)))
    body.append(ins("HALT"))
    length = 3 + sum(1 + OPERAND_PIXELS[version] * len(x.operands) for x in body)
    width = draw(st.integers(1, length))
    height = -(-length // width) + draw(st.integers(0, 2))
    return encode_program(draw(st.integers(1, MAX_SCRATCH[version])), body, (width, height), version)


@settings(max_examples=200, deadline=None)
@given(pixels=decodable_programs())
def test_any_decodable_program_round_trips_through_text(pixels):
    text = disassemble(decode_program(pixels, "random"))
    assert np.array_equal(assemble(text, "random"), pixels)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RELU s0, 1\nHALT\n", "no '.scratch <floats>' line"),
        (".scratch 4\nJUMP s0\n", ":2: unknown instruction 'JUMP'"),
        (".scratch 4\nRELU s0\n", ":2: RELU takes 2 operands (dst, length), got 1"),
        (".scratch 4\nRELU 0, 1\n", ":2: dst: '0' is not s<address>"),
        (".scratch 4\nPOOL_TOKENS weights, 1, s0\n", "'weights' is not a version-0 tensor"),
        (".version 1\n.scratch 4\nPOOL_TOKENS hidden, 1, s0\n", "'hidden' is not a version-1 tensor"),
        (".scratch 4\n.version 3\n", ":2: expected one '.version <0 or 1>' line"),
        (".scratch 4\n.scratch 5\n", ":2: expected one '.scratch <floats>' line"),
        (".scratch 4\n.image 1\n", ":2: expected one '.image <width> <height>' line"),
        (".scratch 4\n.image 1 1\nHALT\n", "cannot hold a program of 4 pixels"),
        (f".scratch 4\nRELU s{1 << 24}, 1\nHALT\n", "does not fit a version-0 operand"),
        (f".version 1\n.scratch 4\nRELU s{1 << 48}, 1\nHALT\n", "does not fit a version-1 operand"),
        (".scratch 4\nCONCAT_TOKENS embed, 1, 1, s0\nHALT\n", "CONCAT_TOKENS needs a version-1 program"),
        (".scratch 4\n.image 200000 200000\nHALT\n", "200000x200000 image is over the pxVM program size limit"),
        (f".scratch 4\n.image {MAX_IMAGE_SIDE + 1} 1\nHALT\n", "over the pxVM program size limit"),
    ],
)
def test_assembler_errors_name_the_line(text, message):
    with pytest.raises(PxglError) as raised:
        assemble(text, "prog.asm")
    assert message in str(raised.value) and "\n" not in str(raised.value)
