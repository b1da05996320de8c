"""`pxgl infer` / `pxgl info` as a user runs them: a new process, exit codes, files written or not."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxgl.pxi import encode_tokens, read_rgb, write_rgb
from pxgl.tokenizer import Tokenizer

from tests.cli_process import pxgl
from tests.models import params_of, random_model
from tests.reference import oracle

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the pixel model reads pixels and writes pixels; every weight is a byte of an image.\n" * 20


@pytest.fixture
def model(tmp_path, rng):
    model = random_model(tmp_path, rng, vocab=300, embed=24, hidden=20, window=6)
    Tokenizer.train(TEXT, 300).save(model.tokenizer_path)
    return model


def test_infer_prompt_writes_the_prediction_pixel(model, tmp_path, seed):
    prompt = "pixels and weights"
    run = pxgl("infer", prompt, "-m", model.source, "-o", "out.pxi", "--tokens-out", "t.pxi", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    ids = Tokenizer.load(model.tokenizer_path).encode(prompt)
    pixels = read_rgb(tmp_path / "out.pxi")
    assert pixels.shape == (1, 1, 3)
    oracle.assert_agrees(pixels, oracle.logits(params_of(model), [ids], model.spec.context_window), f"seed {seed}")
    assert record["id"] == int(pixels[0, 0, 0]) + 256 * int(pixels[0, 0, 1])
    assert np.array_equal(read_rgb(tmp_path / "t.pxi"), encode_tokens([ids], 300))


def test_infer_pixels_in_pixels_out_and_batch(model, tmp_path, rng, seed):
    rows = [list(rng.integers(0, 300, int(rng.integers(1, 30)))) for _ in range(40)]
    write_rgb(tmp_path / "in.pxi", encode_tokens(rows, 300))
    run = pxgl("infer", "--input", "in.pxi", "-o", "pred.pxi", "-m", model.source, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    oracle.assert_agrees(
        read_rgb(tmp_path / "pred.pxi"),
        oracle.logits(params_of(model), rows, model.spec.context_window),
        f"seed {seed}",
    )

    lines = ["pixel model", "weights\fand\x1cbytes\u2028too", "a byte of an image", "reads"]  # only \n ends a line
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
    run = pxgl("infer", "--batch", "prompts.txt", "-o", "batch.pxi", "-m", model.source, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["row"] for r in records] == list(range(len(lines)))
    tokenizer = Tokenizer.load(model.tokenizer_path)
    oracle.assert_agrees(
        read_rgb(tmp_path / "batch.pxi"),
        oracle.logits(params_of(model), [tokenizer.encode(x) for x in lines], model.spec.context_window),
        f"seed {seed}",
    )


def bad_inputs(tmp_path: Path, texture_limit: int) -> dict[str, tuple[list[str], str]]:
    from PIL import Image

    (tmp_path / "notpng.pxi").write_bytes(b"hello")
    Image.new("RGBA", (3, 1)).save(tmp_path / "rgba.pxi", "PNG")
    big = encode_tokens([[1, 2, 3]], 300)
    big[0, 2] = (44, 1, 255)  # id 300 = vocab
    write_rgb(tmp_path / "big.pxi", big)
    empty_row = encode_tokens([[1, 2], [3]], 300)
    empty_row[1] = 0
    write_rgb(tmp_path / "emptyrow.pxi", empty_row)
    (tmp_path / "gap.txt").write_text("first\n\nthird\n")
    return {
        "no source": ([], "give exactly one of PROMPT, --input FILE or --batch FILE"),
        "two sources": (["hi", "--input", "big.pxi"], "give exactly one of"),
        "non-PNG": (["--input", "notpng.pxi"], "notpng.pxi: not a PNG file"),
        "wrong mode": (["--input", "rgba.pxi"], "8-bit RGBA PNG; pixel files are 8-bit RGB"),
        "id past vocab": (["--input", "big.pxi"], "row 0, position 2: token id 300 ≥ vocab size 300"),
        "empty row": (["--input", "emptyrow.pxi"], "row 1 is empty"),
        "empty prompt": ([""], "the prompt is empty"),
        "empty line": (["--batch", "gap.txt"], "gap.txt: line 2 is empty"),
        "missing model": (["hi", "-m", "nowhere.pxi"], "nowhere.pxi: no such model file, nor a bundled model"),
        "unknown executor": (["hi", "-x", "abacus"], "unknown executor 'abacus'"),
        "tokens-out folder missing": (["hi", "--tokens-out", "nowhere/t.pxi"], "folder nowhere does not exist"),
        "tokens-out is a folder": (["hi", "--tokens-out", "."], "--tokens-out .: is a folder"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no source",
        "two sources",
        "non-PNG",
        "wrong mode",
        "id past vocab",
        "empty row",
        "empty prompt",
        "empty line",
        "missing model",
        "unknown executor",
        "tokens-out folder missing",
        "tokens-out is a folder",
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(model, gpu, tmp_path, case):
    args, message = bad_inputs(tmp_path, gpu.limits.max_texture_size)[case]
    model_args = [] if "-m" in args else ["-m", model.source]
    before = set(tmp_path.iterdir())
    run = pxgl("infer", *args, *model_args, "-o", "out.pxi", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert set(tmp_path.iterdir()) == before, "nothing may be written on an error"


def test_no_gl_context_is_a_clear_error(tmp_path):
    run = pxgl("info", cwd=tmp_path, env={"__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json")})
    assert run.returncode == 2
    assert "no OpenGL 4.3 context" in run.stderr and "apt-get install" in run.stderr


def test_info_reports_renderer_and_limits(tmp_path):
    run = pxgl("info", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["renderer"] and info["max_texture_size"] >= 1024
    assert len(info["max_work_group_count"]) == 3


def test_a_prompt_wider_than_the_texture_limit_is_cut_to_its_window(model, gpu, tmp_path, rng, seed):
    """Only the last context_window tokens reach the GPU, so the texture limit never refuses a long prompt."""
    wide = list(rng.integers(0, 300, gpu.limits.max_texture_size + 5))
    write_rgb(tmp_path / "wide.pxi", encode_tokens([wide, wide[-3:]], 300))
    run = pxgl("infer", "--input", "wide.pxi", "-m", model.source, "-o", "out.pxi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lg = oracle.logits(params_of(model), [wide, wide[-3:]], model.spec.context_window)
    oracle.assert_agrees(read_rgb(tmp_path / "out.pxi"), lg, f"seed {seed}")


def test_only_newlines_end_batch_prompts_and_answers_are_printed_beside_them(model, tmp_path):
    (tmp_path / "prompts.txt").write_bytes(b"pixel\rmodel\r\nweights and bytes\nreads\n")
    run = pxgl("infer", "--batch", "prompts.txt", "-m", model.source, "-o", "b.pxi", "-x", "passes", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(read_rgb(tmp_path / "b.pxi")) == 3, "a lone carriage return ended a prompt"
    assert lines[0].startswith("'pixel\\rmodel' → ") and lines[1].startswith("'weights and bytes' → ")
    assert "confidence" in lines[2] and lines[3].startswith("→ b.pxi: 3 prediction pixels")


def test_version_and_the_bundled_models_by_name_from_any_folder(tmp_path):
    from pxgl import __version__

    run = pxgl("--version", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout == f"pxgl {__version__}\n"
    listed = pxgl("models", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert "pixellm_v0" in names
    for name in ("pixellm_v0", "pixellm_v0.pxa"):
        run = pxgl("infer", "pxOS evolution", "-m", name, "-o", "o.pxi", "--json", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["id"] == 349  # pixellm_v0's answer, FORMATS §3


@pytest.mark.parametrize(
    ("platform", "words"), [("darwin", "macOS"), ("win32", "WSL2"), ("linux", "apt-get install libegl1")]
)
def test_no_gl_names_the_platform_and_what_to_do(platform, words):
    from pxgl.gl import setup_hint

    assert words in setup_hint(platform) and "OpenGL 4.3" in setup_hint(platform)


SHARED_OPTIONS = {
    "model": ("--model", "-m"),
    "out": ("--out", "-o"),
    "executor": ("--executor", "-x"),
    "device": ("--device", "-d"),
    "as_json": ("--json",),
}
"""The things several verbs take, and the one way every verb spells each."""


def test_every_verb_spells_the_shared_options_the_same_way():
    import typer
    from pxgl.cli import app

    group = typer.main.get_command(app)
    seen = set()
    for verb, command in group.commands.items():
        for param in command.params:
            if param.name in SHARED_OPTIONS and isinstance(param, typer.core.TyperOption):
                assert tuple(param.opts) == SHARED_OPTIONS[param.name], f"pxgl {verb}: {param.opts}"
                seen.add(param.name)
            for spelling in param.opts:
                for name, spellings in SHARED_OPTIONS.items():
                    assert spelling not in spellings or param.name == name, f"pxgl {verb}: {spelling} is not {name}"
    assert seen == set(SHARED_OPTIONS)


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "pixels", "--bogus"],
        ["generate", "pixels", "--seed", "9" * 5000],
        ["infer", "pixels", "-n"],
        ["no-such-verb"],
    ],
)
def test_a_command_line_that_cannot_be_parsed_is_one_line(tmp_path, args):
    run = pxgl(*args, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == "", run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], run.stderr


def test_the_command_line_imports_nothing_heavy_before_a_verb_runs():
    """Every command starts by importing pxgl.cli: numpy (whose BLAS threads a GPU verb keeps to one, which
    it can only do before numpy loads), the GL driver, PIL and rich load later, where a verb needs them."""
    probe = "import sys, pxgl.cli; print(' '.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    loaded = {name.split(".")[0] for name in run.stdout.split()}
    assert not loaded & {"numpy", "moderngl", "glcontext", "PIL", "rich", "multiprocessing"}


def test_the_console_script_ends_at_once_but_runs_atexit_handlers_and_flushes_first():
    from pxgl import __version__

    probe = "import atexit, sys; atexit.register(print, 'at exit'); sys.argv = ['pxgl', '--version']; "
    probe += "from pxgl.cli import console; console()"
    buffered = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}

    def python(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], env=buffered, capture_output=True, text=True)

    run = python(probe)
    assert run.returncode == 0 and run.stdout == f"pxgl {__version__}\nat exit\n", run.stdout + run.stderr
    run = python(probe.replace("--version", "--bogus"))
    assert run.returncode == 2 and run.stdout == "at exit\n" and run.stderr.startswith("error: "), run.stderr
    closed = subprocess.run(
        [sys.executable, "-c", probe],
        env=buffered,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr  # started with stdout closed


WRITING_VERBS = {
    "encode",
    "infer",
    "run",
    "ask",
    "generate",
    "viz",
    "compile",
    "asm",
    "pack",
    "train",
    "import",
    "export",
}


def test_every_writing_verb_takes_force_and_only_they_do():
    import typer
    from pxgl.cli import app

    group = typer.main.get_command(app)
    forcing = {
        verb
        for verb, command in group.commands.items()
        for param in command.params
        if "--force" in param.opts and getattr(param, "help", None)
    }
    assert forcing == WRITING_VERBS


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "hi", "--device", "0,0"],
        ["generate", "hi", "--device", "zero"],
        ["ask", "hi", "--device", "0,0"],
        ["viz", "hi", "-o", "v", "--device", "0,0"],
        ["run", "-i", "t.pxi", "-o", "o.pxi", "--device", "0,0"],
    ],
)
def test_an_argument_error_comes_before_any_output(model, tmp_path, args):
    """`generate --device 0,0 hi` printed `hi`, then its error: every argument is checked before anything
    is printed or written."""
    write_rgb(tmp_path / "t.pxi", encode_tokens([[1, 2]], 300))
    before = set(tmp_path.iterdir())
    run = pxgl(*args, "-m", model.source, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == "", run.stdout
    assert run.stderr.startswith("error: --device") and run.stderr.count("\n") == 1, run.stderr
    assert set(tmp_path.iterdir()) == before


def test_a_mistyped_model_name_names_the_closest_bundled_model(tmp_path):
    """A model argument that names no file lists the bundled models, and suggests the closest to a name
    that looks mistyped (as a mistyped verb or flag is)."""
    cases = {
        ("infer", "hi", "-m", "pixelm_v1"): "did you mean pixellm_v1?",
        ("encode", "hi", "-o", "t.pxi", "--model", "pixellm_v0.pxi"): "did you mean pixellm_v0?",
        ("generate", "hi", "-m", "pxllm_v0.pxa"): "did you mean pixellm_v0.pxa?",
        ("eval", "-m", "mymodel.pxi"): None,
    }
    for args, guess in cases.items():
        run = pxgl(*args, cwd=tmp_path)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert "no such model file, nor a bundled model" in run.stderr and "pixellm_v1, pixellm_v0" in run.stderr
        assert (guess in run.stderr) if guess else "did you mean" not in run.stderr, run.stderr
    assert not list(tmp_path.iterdir())


def scores_in(text: str) -> tuple[str, str, str]:
    """top-1, bits/byte and perplexity as a line of `pxgl models` or the README's table prints them."""
    found = re.search(r"(\d+\.\d\d)%\**\D+?(\d\.\d{4})\**\D+?(\d+\.\d\d)", text)
    assert found, text
    return found.groups()


def test_models_shows_the_held_out_scores_eval_gives_and_the_readme_too(tmp_path):
    """One truth: `pxgl models` printed pixellm_v0's scores by pxgl 0.1's rule (27.69%, 43.97), the README
    and `pxgl eval` those of FORMATS §9. v0's are recomputed here from the spec alone over its whole
    held-out split (tests/reference/heldout.py); v1's come from its meta, which test_train checks."""
    from tests.reference import heldout

    run = pxgl("models", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    shown = {record["name"]: scores_in(record["scores"]) for record in map(json.loads, run.stdout.splitlines())}
    readme = (ROOT / "README.md").read_text()
    for name, scores in shown.items():
        assert scores_in(readme[readme.index(f"| `{name}` (uint8") :]) == scores, name
    meta = json.loads((ROOT / "assets" / "pixellm_v0.meta.json").read_text())
    params = oracle.dequantize(meta, read_rgb(ROOT / "assets" / "pixellm_v0.pxi"))
    merges = json.loads((ROOT / "assets" / "pixellm_v0.tokenizer.json").read_text())["merges"]
    documents = heldout.heldout_documents(heldout.corpus_documents(ROOT / "assets" / "corpus.json.xz"), 0, 0.1)
    expected = heldout.scores(params, merges, documents)
    recomputed = (f"{expected['top1']:.2%}"[:-1], f"{expected['bits_per_byte']:.4f}", f"{expected['perplexity']:.2f}")
    assert shown["pixellm_v0"] == recomputed


def test_batch_answers_are_told_apart_and_a_long_prompt_is_shown_by_its_ends(model, tmp_path, rng):
    """`generate --batch` ran its answers together; `infer --batch` echoed a 40,000-character prompt whole.
    Text output: a rule line before each answer, a long prompt shown by its ends and its length; the JSON
    keeps every prompt whole."""
    words = TEXT.split()
    long_prompt = " ".join(rng.choice(words, 8000))[:40_000]
    prompts = ["pixels and weights", long_prompt, "reads"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    generated = pxgl("generate", "--batch", "prompts.txt", "-n", "3", "-m", model.source, cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    rules = [line for line in generated.stdout.splitlines() if line.startswith("── answer ")]
    assert rules == [f"── answer {n} of 3 ──" for n in (1, 2, 3)], generated.stdout[:500]
    answers = generated.stdout.split("── answer ")[1:]
    assert answers[0].split("\n", 1)[1].startswith("pixels and weights")
    assert answers[2].split("\n", 1)[1].startswith("reads")
    for run in (generated, pxgl("infer", "--batch", "prompts.txt", "-m", model.source, cwd=tmp_path)):
        assert run.returncode == 0, run.stderr
        assert f"{long_prompt[:32] + '…' + long_prompt[-32:]!r} (40,000 characters)" in run.stdout, run.stdout[:500]
        assert max(map(len, run.stdout.splitlines())) < 200
    for verb in (["generate", "-n", "1"], ["infer"]):
        run = pxgl(*verb, "--batch", "prompts.txt", "-m", model.source, "--json", cwd=tmp_path)
        assert [json.loads(line)["prompt"] for line in run.stdout.splitlines()] == prompts
