"""`pxgl compile`, `pxgl disasm`, `pxgl asm` and `pxgl infer --executor pxvm` as a user runs them: a new
process, exit codes, one-line errors, files written whole or not at all."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pxgl.loading import load_model
from pxgl.pack import pack
from pxgl.pxi import decode_predictions, encode_tokens, read_rgb, write_rgb
from pxgl.pxvm.compiler import compile_program
from pxgl.pxvm.files import program_path_for
from pxgl.resources import bundled_model
from pxgl.spec import meta_path_for
from pxgl.tokenizer import Tokenizer

from tests.cartridges import random_text
from tests.cli_process import pxgl
from tests.models import random_model, random_rows
from tests.reference import oracle

ROOT = Path(__file__).resolve().parents[1]


def assert_one_line_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def model(tmp_path, rng):
    return random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)


def test_compile_disasm_asm_round_trip(model, tmp_path):
    run = pxgl("compile", "-m", model.source, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    program = program_path_for(Path(model.source))
    assert np.array_equal(read_rgb(program), compile_program(model.spec)), "compile wrote another program"
    assert "11 instructions" in run.stdout

    listing = pxgl("disasm", str(program), "-m", model.source, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "DOT_PRODUCT" in listing.stdout and listing.stdout.rstrip().endswith("; @49")
    (tmp_path / "p.asm").write_text(listing.stdout)
    again = pxgl("asm", "p.asm", "-o", "again.pxi", "-m", model.source, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(read_rgb(tmp_path / "again.pxi"), read_rgb(program))


def test_infer_pxvm_input_gives_the_oracle_prediction(model, tmp_path, rng, seed):
    rows = random_rows(rng, 40, 300, max_len=30)
    write_rgb(tmp_path / "in.pxi", encode_tokens(rows, 300))
    run = pxgl("infer", "-m", model.source, "-x", "pxvm", "-i", "in.pxi", "-o", "out.pxi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    meta = json.loads(meta_path_for(Path(model.source)).read_text())
    lg = oracle.logits(oracle.dequantize(meta, model.weights), rows, 6)
    ids, conf = oracle.predict(lg)
    got_ids, got_conf = decode_predictions(read_rgb(tmp_path / "out.pxi"))
    assert ((got_ids == ids) | oracle.near_tie(lg)).all(), f"seed {seed}"
    same = got_ids == ids
    assert np.abs(got_conf[same].astype(int) - conf[same].astype(int)).max(initial=0) <= 1, f"seed {seed}"


def test_infer_with_a_bad_program_file_exits_2_and_writes_nothing(model, tmp_path):
    write_rgb(tmp_path / "in.pxi", encode_tokens([[1, 2, 3]], 300))
    infer = ("infer", "-m", model.source, "-i", "in.pxi", "-o", "out.pxi")

    bad = compile_program(model.spec)
    bad.reshape(-1, 3)[3] = (0x42, 3, 0)  # the first instruction's opcode
    write_rgb(tmp_path / "bad.pxi", bad)
    assert_one_line_error(pxgl(*infer, "--program", "bad.pxi", cwd=tmp_path), "bad.pxi", "unknown opcode 0x42")

    write_rgb(program_path_for(Path(model.source)), model.weights)  # a stray image where the program goes
    assert_one_line_error(pxgl(*infer, "-x", "pxvm", cwd=tmp_path), "program.pxi", "not a pxVM program")
    assert not (tmp_path / "out.pxi").exists()


def test_disasm_and_asm_refuse_bad_input(model, tmp_path):
    write_rgb(tmp_path / "tokens.pxi", encode_tokens([[1, 2]], 300))
    assert_one_line_error(pxgl("disasm", "tokens.pxi", cwd=tmp_path), "not a pxVM program")
    (tmp_path / "p.asm").write_text(".scratch 8\nLOAD_WEIGHT_SLICE b_out, 0, 301, s0\nHALT\n")
    # the format accepts it; this model's bounds do not
    assert_one_line_error(pxgl("asm", "p.asm", "-o", "p.pxi", "-m", model.source, cwd=tmp_path), "outside WEIGHTS")
    assert not (tmp_path / "p.pxi").exists()
    (tmp_path / "huge.asm").write_text(".scratch 8\n.image 200000 200000\nHALT\n")
    assert_one_line_error(pxgl("asm", "huge.asm", "-o", "p.pxi", cwd=tmp_path), "huge.asm", "size limit")
    assert not (tmp_path / "p.pxi").exists()


def test_infer_pxvm_runs_a_cartridges_own_program(model, tmp_path, rng):
    """A cartridge carries its program; `infer -x pxvm` runs that one, not the model's compiled program."""
    Tokenizer.train(random_text(rng), 300).save(model.tokenizer_path)
    (tmp_path / "bias.asm").write_text(
        ".scratch 302\nLOAD_WEIGHT_SLICE b_out, 0, 300, s0\nARGMAX s0, 300, s300\nSTORE_PIXEL s300, o0\nHALT\n"
    )
    assert pxgl("asm", "bias.asm", "-o", "bias.pxi", "-m", model.source, cwd=tmp_path).returncode == 0
    pack(model.source, tmp_path / "bias.pxa", executor="pxvm", program_path=tmp_path / "bias.pxi")
    write_rgb(tmp_path / "in.pxi", encode_tokens(random_rows(rng, 5, 300, max_len=9), 300))
    run = pxgl("infer", "-m", "bias.pxa", "-x", "pxvm", "-i", "in.pxi", "-o", "out.pxi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    meta = json.loads(meta_path_for(Path(model.source)).read_text())
    b_out = oracle.dequantize(meta, model.weights)["out.bias"]
    ids, _ = decode_predictions(read_rgb(tmp_path / "out.pxi"))
    assert (ids == int(np.argmax(b_out))).all(), "the cartridge's program did not run"


def test_shipped_program_is_the_bundled_models_and_round_trips(tmp_path):
    """assets/pixellm_v0.program.pxi: what `pxgl compile` gives for the bundled model; `pxgl disasm` of it,
    assembled again with `pxgl asm`, is the same program."""
    try:
        weights = bundled_model()
    except FileNotFoundError:
        pytest.skip("no bundled model in this checkout")
    shipped = program_path_for(weights)
    if not (weights.exists() and shipped.exists()):
        pytest.skip("the bundled model or its program has not landed")
    spec = load_model(weights).spec
    assert np.array_equal(read_rgb(shipped), compile_program(spec)), "recompile it: pxgl compile"
    listing = pxgl("disasm", str(shipped), "-m", str(weights), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (tmp_path / "shipped.asm").write_text(listing.stdout)
    again = pxgl("asm", "shipped.asm", "-o", "again.pxi", "-m", str(weights), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(read_rgb(tmp_path / "again.pxi"), read_rgb(shipped))
