"""Cartridges end to end (docs/FORMATS.md §8): `pxgl pack` writes the format; a packed model of any size runs
on every executor and matches the numpy oracle (tests/oracle.py, over the meta and weights read back from
the zip here, not through engine.cartridge); `pxgl ask` / `run` give the same pixel as `pxgl infer`;
`pxgl inspect` reports what the files hold; the committed assets/pixellm_v0.pxa is valid.

Same tolerance as tests/test_passes.py: ids agree except on oracle near-ties, confidence within ±1."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl import __version__ as pxgl_version
from pxgl.cartridge import open_cartridge
from pxgl.engine import Engine
from pxgl.executors import EXECUTORS
from pxgl.loading import load_model
from pxgl.pack import pack
from pxgl.pxi import decode_predictions, encode_tokens, read_rgb, write_rgb
from pxgl.pxvm.compiler import compiled_instructions, scratch_layout
from pxgl.pxvm.opcodes import MAGIC
from pxgl.pxvm.program import decode_program, encode_program
from pxgl.tokenizer import Tokenizer

from tests.cartridges import pxgl, random_cartridge, random_text, read_members, relisted, write_contents
from tests.cli_process import pxgl as pxgl_subprocess
from tests.models import random_model, random_rows
from tests.reference import oracle

ROOT = Path(__file__).resolve().parents[1]
DIMS = [(512, 64, 96, 8), (260, 24, 40, 3)]
"""(vocab, embed, hidden, window): other sizes than the bundled model's; a tokenizer needs vocab ≥ 256."""


def zip_model(cart: Path) -> tuple[dict, np.ndarray]:
    """(meta, weight pixels) read from the archive with zipfile, json and PIL alone."""
    with zipfile.ZipFile(cart) as archive:
        meta = json.loads(archive.read("weights.meta.json"))
        weights = np.asarray(Image.open(io.BytesIO(archive.read("weights.pxi"))).convert("RGB"))
    return meta, weights


def oracle_logits(cart: Path, rows) -> np.ndarray:
    meta, weights = zip_model(cart)
    return oracle.logits(oracle.dequantize(meta, weights), rows, meta["context_window"])


@pytest.fixture
def cart(tmp_path, rng) -> tuple[Path, object]:
    return random_cartridge(tmp_path, rng, *DIMS[int(rng.integers(len(DIMS)))])


def test_pack_writes_the_format(cart, tmp_path, seed):
    path, model = cart
    members = read_members(path)
    manifest = json.loads(members["manifest.json"])
    assert next(iter(members)) == "manifest.json"
    assert set(members) == {"manifest.json", "weights.pxi", "weights.meta.json", "tokenizer.json", "program.pxi"}
    assert (manifest["format"], manifest["version"], manifest["executor"]) == ("pxgl-cartridge", 1, "passes")
    assert manifest["formats"] == {"weights": 0, "pxvm": 0} and "model" not in manifest
    assert manifest["about"] == {"packed_by": f"pxgl {pxgl_version}"}
    spec = model.spec
    assert [m["name"] for m in manifest["members"]] == [n for n in members if n != "manifest.json"]
    for m in manifest["members"]:
        data = members[m["name"]]
        assert (m["size"], m["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), m["name"]
    meta, weights = zip_model(path)
    assert np.array_equal(weights, model.weights)
    original_meta = json.loads(Path(model.source).with_suffix(".meta.json").read_text())
    assert meta == original_meta | {"tokenizer": "tokenizer.json"}
    assert json.loads(members["tokenizer.json"])["merges"] == json.loads(model.tokenizer_path.read_text())["merges"]
    program = np.asarray(Image.open(io.BytesIO(members["program.pxi"])).convert("RGB"))
    assert len(decode_program(program, "program.pxi").instructions) == len(compiled_instructions(spec))
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            assert info.external_attr >> 16 == 0o100644, f"{info.filename} is not a plain file"
    again = tmp_path / "again.pxa"
    pack(model.source, again, "passes")
    assert again.read_bytes() == path.read_bytes(), "packing the same model twice gave different bytes"


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
@pytest.mark.parametrize("dims", DIMS)
def test_cartridge_of_any_size_runs_on_every_executor(tmp_path, gpu, seed, dims, executor):
    rng = np.random.default_rng(seed)
    path, _ = random_cartridge(tmp_path, rng, *dims)
    model = load_model(path)
    rows = random_rows(rng, 200, dims[0], max_len=30)
    engine = Engine(model, gpu=gpu, executor=executor)
    oracle.assert_agrees(engine.predict(encode_tokens(rows, dims[0])), oracle_logits(path, rows), f"seed {seed}")


def test_pxvm_runs_the_cartridges_own_program(tmp_path, gpu, rng, seed):
    """Pack a different valid program (no ReLU): the pxvm executor must follow it, not recompile its own."""
    vocab, embed, hidden, window = DIMS[0]
    _, model = random_cartridge(tmp_path, rng, vocab, embed, hidden, window)
    spec = model.spec
    no_relu = [i for i in compiled_instructions(spec) if i.op.name != "RELU"]
    write_rgb(tmp_path / "no_relu.pxi", encode_program(scratch_layout(spec).size, no_relu))
    custom = tmp_path / "custom.pxa"
    pack(model.source, custom, "pxvm", program_path=tmp_path / "no_relu.pxi")
    rows = random_rows(rng, 200, vocab, max_len=30)
    meta, weights = zip_model(custom)
    p = oracle.dequantize(meta, weights)
    pooled = np.stack([p["embed"][r[-window:]].mean(axis=0) for r in rows])
    linear = ((pooled @ p["layer0.weight"] + p["layer0.bias"]) @ p["out.weight"] + p["out.bias"]).astype(np.float32)
    relu = oracle_logits(custom, rows)
    assert (linear.argmax(axis=1) != relu.argmax(axis=1)).any(), f"ReLU changes no prediction (seed {seed})"
    loaded = load_model(custom)
    engine = Engine(loaded, gpu=gpu, executor="pxvm")
    oracle.assert_agrees(engine.predict(encode_tokens(rows, vocab)), linear, f"seed {seed}")


@pytest.mark.parametrize("executor", ["passes", "pxvm"])
def test_ask_and_run_give_the_pixel_infer_gives(cart, tmp_path, seed, monkeypatch, capsys, executor):
    path, model = cart
    monkeypatch.chdir(tmp_path)
    prompt = "pixels dream of pixels"
    code, out, err = pxgl(monkeypatch, capsys, "pack", "-m", model.source, "-o", "cli.pxa", "--json")
    assert code == 0, err
    assert json.loads(out)["members"] == json.loads(read_members(path)["manifest.json"])["members"]
    code, out, err = pxgl(
        monkeypatch, capsys, "ask", "-m", "cli.pxa", prompt, "-x", executor, "-o", "ask.pxi", "--json", "-n", "1"
    )
    assert code == 0, err
    asked = json.loads(out)
    code, _, err = pxgl(
        monkeypatch, capsys, "infer", prompt, "-m", model.source, "-x", executor, "-o", "infer.pxi",
        "--tokens-out", "tokens.pxi",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = pxgl(
        monkeypatch, capsys, "run", "--model", "cli.pxa", "--input", "tokens.pxi", "--out", "run.pxi",
        "-x", executor,
    )  # fmt: skip
    assert code == 0, err
    ask, infer, run = (read_rgb(tmp_path / n) for n in ("ask.pxi", "infer.pxi", "run.pxi"))
    assert np.array_equal(ask, infer) and np.array_equal(run, infer), f"{ask}, {run} vs {infer} (seed {seed})"
    tokenizer = Tokenizer.load(model.tokenizer_path)
    ids = tokenizer.encode(prompt)
    oracle.assert_agrees(ask, oracle_logits(path, [ids]), f"seed {seed}")
    (token,), (conf,) = decode_predictions(ask)
    assert asked["tokens"] == [token] and asked["pixels"] == [ask[0, 0].tolist()]
    assert asked["text"] == tokenizer.decode([token]) and asked["confidences"] == [round(int(conf) / 255, 4)]


def test_ask_shows_the_pixel_as_a_coloured_block(cart, tmp_path, monkeypatch, capsys):
    path, model = cart
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLORTERM", "truecolor")
    code, out, err = pxgl(monkeypatch, capsys, "ask", "-m", str(path), "some prompt", "-n", "6", "-o", "o.pxi")
    assert code == 0, err
    pixels = read_rgb(tmp_path / "o.pxi")
    assert pixels.shape == (6, 1, 3)  # one prediction pixel per token of the answer
    tokenizer = Tokenizer.load(model.tokenizer_path)
    tokens = [r + 256 * g for r, g, _ in pixels[:, 0].tolist()]
    assert out.startswith("some prompt" + tokenizer.decode(tokens)), out
    for r, g, b in pixels[:, 0].tolist():
        assert f"\x1b[38;2;{r};{g};{b}m██" in out, f"no 24-bit colour block for pixel {(r, g, b)} in {out!r}"
    r, g, b = pixels[0, 0].tolist()
    first = tokenizer.decode([tokens[0]])
    assert repr(first) in out and f"id {tokens[0]}" in out and f"confidence {b / 255:.1%}" in out


def test_shader_members_are_a_record_never_a_gate(cart, tmp_path, seed, monkeypatch, capsys):
    """A cartridge's shader members (version 0 carts carry the packing engine's) are never run nor compared:
    one whose shader differs from any engine's runs with no flag, and gives the pixels its weights give."""
    path, model = cart
    members = read_members(path)
    carrying = tmp_path / "carrying.pxa"
    write_contents(carrying, relisted(members | {"shaders/argmax.comp": b"#version 430\nvoid main() {}\n"}))
    rows = random_rows(np.random.default_rng(seed), 50, model.spec.vocab_size, max_len=20)
    write_rgb(tmp_path / "tokens.pxi", encode_tokens(rows, model.spec.vocab_size))
    monkeypatch.chdir(tmp_path)

    code, out, err = pxgl(monkeypatch, capsys, "inspect", "carrying.pxa", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["verdict"] == "valid: runs" and "kept for the record" in record["shaders"]
    code, _, err = pxgl(monkeypatch, capsys, "run", "-m", "carrying.pxa", "-i", "tokens.pxi", "-o", "carried.pxi")
    assert code == 0 and err == "", err
    code, _, err = pxgl(monkeypatch, capsys, "run", "-m", str(path), "-i", "tokens.pxi", "-o", "own.pxi")
    assert code == 0, err
    assert np.array_equal(read_rgb(tmp_path / "carried.pxi"), read_rgb(tmp_path / "own.pxi"))
    oracle.assert_agrees(read_rgb(tmp_path / "carried.pxi"), oracle_logits(path, rows), f"seed {seed}")
    code, _, err = pxgl(monkeypatch, capsys, "run", "-m", "carrying.pxa", "-i", "tokens.pxi", "--trust-shaders")
    assert code == 2 and "--trust-shaders" in err, "the flag is gone: nothing needs trusting"


def test_the_manifest_names_the_default_executor(tmp_path, rng, monkeypatch, capsys):
    chosen = []
    real_init = Engine.__init__

    def spy(self, model, **options):
        real_init(self, model, **options)
        chosen.append((self.executor_name, self.runnable.program is not None))

    monkeypatch.setattr(Engine, "__init__", spy)
    path, model = random_cartridge(tmp_path, rng, *DIMS[1], executor="pxvm")
    write_rgb(tmp_path / "tokens.pxi", encode_tokens([[1, 2, 3]], DIMS[1][0]))
    monkeypatch.chdir(tmp_path)
    assert pxgl(monkeypatch, capsys, "run", "-m", str(path), "-i", "tokens.pxi")[0] == 0
    assert pxgl(monkeypatch, capsys, "run", "-m", str(path), "-i", "tokens.pxi", "-x", "passes")[0] == 0
    assert pxgl(monkeypatch, capsys, "run", "-m", model.source, "-i", "tokens.pxi")[0] == 0
    assert chosen == [("pxvm", True), ("passes", False), ("fused", False)]  # auto: fused runs this model


def test_model_option_takes_a_cartridge_everywhere(cart, tmp_path, monkeypatch, capsys):
    path, model = cart
    monkeypatch.chdir(tmp_path)
    texts = ["first prompt", "a second one"]
    for name, source in (("pxi", model.source), ("pxa", str(path))):
        code, _, err = pxgl(monkeypatch, capsys, "encode", *texts, "-m", source, "-o", f"{name}.pxi")
        assert code == 0, err
    assert np.array_equal(read_rgb(tmp_path / "pxi.pxi"), read_rgb(tmp_path / "pxa.pxi"))
    code, out, err = pxgl(monkeypatch, capsys, "decode", "pxa.pxi", "-m", str(path))
    assert code == 0, err
    assert out.splitlines() == texts


def test_inspect_tells_each_kind_of_file(cart, tmp_path, monkeypatch, capsys):
    path, model = cart
    monkeypatch.chdir(tmp_path)
    members = read_members(path)

    def inspect(file: str) -> dict:
        code, out, err = pxgl(monkeypatch, capsys, "inspect", file, "--json")
        assert code == 0, err
        return json.loads(out)

    record = inspect(str(path))
    assert record["kind"] == "cartridge" and record["verdict"] == "valid: runs"
    assert record["members"] == json.loads(members["manifest.json"])["members"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    record = inspect(model.source)
    meta = json.loads(Path(model.source).with_suffix(".meta.json").read_text())
    assert record["kind"] == "weights"
    assert {t["name"]: {k: v for k, v in t.items() if k != "name"} for t in record["tensors"]} == meta["tensors"]

    rows = [[5, 6, 7], [8]]
    write_rgb(tmp_path / "tokens.pxi", encode_tokens(rows, model.spec.vocab_size))
    record = inspect("tokens.pxi")
    assert record["kind"] == "token texture" and record["rows"] == 2
    assert [p["ids"] for p in record["prompts"]] == rows

    write_rgb(tmp_path / "pred.pxi", np.array([[[7, 1, 99]], [[0, 0, 3]]], np.uint8))
    record = inspect("pred.pxi")
    assert record["kind"] == "prediction pixels"
    assert [(p["id"], p["confidence"]) for p in record["predictions"]] == [
        (263, round(99 / 255, 4)),
        (0, round(3 / 255, 4)),
    ]

    (tmp_path / "program.pxi").write_bytes(members["program.pxi"])
    record = inspect("program.pxi")
    assert record["kind"] == "pxvm program"
    assert record["instructions"] == len(compiled_instructions(model.spec))
    assert record["scratch_floats"] == scratch_layout(model.spec).size

    write_rgb(tmp_path / "noise.pxi", np.full((3, 3, 3), 7, np.uint8))
    code, _, err = pxgl(monkeypatch, capsys, "inspect", "noise.pxi")
    assert code == 2 and "no pxgl pixel file" in err and err.count("\n") == 1


BUNDLED = ROOT / "assets" / "pixellm_v0.pxa"
V0_CARTRIDGE = ROOT / "tests" / "fixtures" / "pixellm_v0-207f995.pxa"
"""assets/pixellm_v0.pxa as committed at 207f995: a version-0 cartridge carrying that engine's shaders."""
DEMO_PROMPT = "pxOS evolution"


@pytest.mark.parametrize("cartridge", [BUNDLED, V0_CARTRIDGE], ids=["bundled", "v0-207f995"])
def test_committed_cartridges_are_valid_and_answer_like_infer(tmp_path, seed, cartridge):
    cart = open_cartridge(cartridge)
    bundled = load_model(ROOT / "assets" / "pixellm_v0.pxi")
    assert cart.spec == replace(bundled.spec, tokenizer="tokenizer.json")
    assert np.array_equal(cart.weights, bundled.weights)
    assert cart.tokenizer.merges == Tokenizer.load(bundled.tokenizer_path).merges

    def pxgl_process(*args: str) -> dict:
        run = pxgl_subprocess(*args, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.splitlines()[-1]) if "--json" in args else {}

    asked = pxgl_process("ask", "-m", str(cartridge), DEMO_PROMPT, "-o", "ask.pxi", "--json", "-n", "1")
    pxgl_process("infer", "-m", "pixellm_v0", DEMO_PROMPT, "-o", "infer.pxi", "--tokens-out", "tokens.pxi")
    pxgl_process("run", "--model", str(cartridge), "--input", "tokens.pxi", "--out", "run.pxi")
    ask, infer, run = (read_rgb(tmp_path / n) for n in ("ask.pxi", "infer.pxi", "run.pxi"))
    assert np.array_equal(ask, infer) and np.array_equal(run, infer)
    ids = cart.tokenizer.encode(DEMO_PROMPT)
    oracle.assert_agrees(ask, oracle_logits(cartridge, [ids]), f"seed {seed}")
    assert asked["text"] == cart.tokenizer.decode(asked["tokens"])


def test_the_v0_cartridge_is_reported_as_v0(tmp_path):
    run = pxgl_subprocess("inspect", str(V0_CARTRIDGE), "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["format"] == "pxgl-cartridge version 0 (weights 0, pxvm 0)" and record["verdict"] == "valid: runs"
    assert "shader files of the engine that packed it" in record["shaders"]


def test_an_edited_engine_shader_breaks_no_cartridge(tmp_path, seed):
    """A copy of the package whose argmax shader is edited: that copy is the one loaded, and the committed
    version-0 cartridge still runs on it with no flag and no repack, giving the same pixels."""
    package = tmp_path / "site" / "pxgl"
    shutil.copytree(ROOT / "engine", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "glsl", package / "glsl")
    shutil.copytree(ROOT / "assets", package / "assets")
    marker = f"// edited by test {seed}"
    argmax = package / "glsl" / "argmax.comp"
    argmax.write_text(argmax.read_text() + f"\n{marker}\n")
    # The copy first; what else the path held (e.g. moderngl's folder on a machine without a venv) after it.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))}
    probe = (
        "import pxgl, pxgl.gl.source as s; from pxgl.executors.passes import ARGMAX; "
        "print(pxgl.__file__); print(s.kernel_source(ARGMAX, {}))"
    )
    located = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert located.returncode == 0, located.stderr
    assert located.stdout.startswith(str(package)) and marker in located.stdout
    rows = random_rows(np.random.default_rng(seed), 64, 1024, max_len=12)
    write_rgb(tmp_path / "tokens.pxi", encode_tokens(rows, 1024))
    for name, environment in (("edited", env), ("own", {})):
        run = subprocess.run(
            [sys.executable, "-m", "pxgl.cli", "run", "-m", str(V0_CARTRIDGE), "-i", "tokens.pxi", "-o", f"{name}.pxi"],
            env=os.environ | environment, capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0 and run.stderr == "", run.stderr
    assert np.array_equal(read_rgb(tmp_path / "edited.pxi"), read_rgb(tmp_path / "own.pxi"))
    oracle.assert_agrees(read_rgb(tmp_path / "edited.pxi"), oracle_logits(V0_CARTRIDGE, rows), f"seed {seed}")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"version": 3}, "cartridge format version 3; this pxgl reads cartridge 0 to 2, weights 0 to 2, pxvm 0 to 1"),
        ({"formats": {"weights": 7, "pxvm": 0}}, "needs weights 7; this pxgl reads"),
        ({"formats": {"weights": 0, "pxvm": 3}}, "needs pxvm 3; this pxgl reads"),
        ({"formats": {"weights": 0}}, "'formats' must give weights, pxvm"),
        ({"executor": "abacus"}, "unknown executor 'abacus'"),
        ({"about": ["not", "an", "object"]}, "'about' must be a JSON object"),
    ],
    ids=["newer-cartridge", "newer-weights", "newer-pxvm", "formats-incomplete", "unknown-executor", "about-list"],
)
def test_format_versions_decide_what_runs(cart, tmp_path, monkeypatch, capsys, edit, message):
    path, _ = cart
    members = read_members(path)
    manifest = json.loads(members.pop("manifest.json")) | edit
    write_contents(tmp_path / "edited.pxa", {"manifest.json": json.dumps(manifest).encode(), **members})
    write_rgb(tmp_path / "tokens.pxi", encode_tokens([[1, 2, 3]], DIMS[1][0]))
    monkeypatch.chdir(tmp_path)
    code, _, err = pxgl(monkeypatch, capsys, "run", "-m", "edited.pxa", "-i", "tokens.pxi", "-o", "out.pxi")
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.pxi").exists()


def test_a_repacked_cartridge_keeps_its_program(cart, tmp_path):
    """Repacking a cartridge whose program is not the compiled one keeps that program."""
    path, model = cart
    spec = model.spec
    no_relu = [i for i in compiled_instructions(spec) if i.op.name != "RELU"]
    write_rgb(tmp_path / "no_relu.pxi", encode_program(scratch_layout(spec).size, no_relu))
    pack(model.source, tmp_path / "custom.pxa", program_path=tmp_path / "no_relu.pxi")
    pack(tmp_path / "custom.pxa", tmp_path / "repacked.pxa")
    program = read_members(tmp_path / "repacked.pxa")["program.pxi"]
    assert program == read_members(tmp_path / "custom.pxa")["program.pxi"] != read_members(path)["program.pxi"]


def test_repacking_keeps_the_cartridges_executor_and_name_unless_told(tmp_path, rng, monkeypatch, capsys):
    _, model = random_cartridge(tmp_path, rng, *DIMS[1], executor="pxvm")
    pack(model.source, tmp_path / "original.pxa", "pxvm")
    monkeypatch.chdir(tmp_path)

    def manifest_of(cart: str) -> dict:
        return json.loads(read_members(tmp_path / cart)["manifest.json"])

    code, _, err = pxgl(monkeypatch, capsys, "pack", "-m", "original.pxa", "-o", "repacked.pxa")
    assert code == 0, err
    original, repacked = manifest_of("original.pxa"), manifest_of("repacked.pxa")
    assert (original["name"], original["executor"]) == (Path(model.source).stem, "pxvm")
    assert (repacked["name"], repacked["executor"]) == (original["name"], original["executor"])
    assert repacked["members"] == original["members"]

    code, _, err = pxgl(monkeypatch, capsys, "pack", "-m", "original.pxa", "-o", "told.pxa", "-x", "passes",
                        "--name", "pixel dreams v2")  # fmt: skip
    assert code == 0, err
    told = manifest_of("told.pxa")
    assert (told["name"], told["executor"]) == ("pixel dreams v2", "passes")
    assert open_cartridge(tmp_path / "told.pxa").manifest.name == "pixel dreams v2"


def test_pack_refuses_a_name_the_reader_would_refuse_and_writes_nothing(tmp_path, rng, monkeypatch, capsys):
    unprintable = "zero\u200bwidth"  # U+200B is a format character: not printable
    model = random_model(tmp_path, rng, *DIMS[1], name=unprintable)
    Tokenizer.train(random_text(rng), DIMS[1][0]).save(model.tokenizer_path)
    monkeypatch.chdir(tmp_path)
    for args, fragment in (
        (("-m", model.source, "-o", "stem.pxa"), "give a name with --name"),
        (("-m", model.source, "-o", "given.pxa", "--name", "tab\there"), "printable characters"),
    ):
        code, _, err = pxgl(monkeypatch, capsys, "pack", *args)
        assert code == 2 and fragment in err and err.count("\n") == 1, err
        assert not (tmp_path / args[3]).exists(), f"{args[3]} was written"
    code, _, err = pxgl(monkeypatch, capsys, "pack", "-m", model.source, "-o", "named.pxa", "--name", "fine name")
    assert code == 0, err
    assert open_cartridge(tmp_path / "named.pxa").manifest.name == "fine name"


def test_inspect_tells_weights_whose_first_pixel_is_the_pxvm_magic(tmp_path, rng, monkeypatch, capsys):
    model = random_model(tmp_path, rng, *DIMS[1])
    weights = model.weights.copy()
    weights[0, 0] = MAGIC
    write_rgb(Path(model.source), weights)
    monkeypatch.chdir(tmp_path)
    code, out, err = pxgl(monkeypatch, capsys, "inspect", model.source, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["kind"] == "weights" and record["model"]["vocab_size"] == DIMS[1][0]
