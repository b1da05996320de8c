"""The write side of hardening (docs/FORMATS.md §0, §2.3): no command overwrites its own input, a device
or pxgl's installed package; outputs are checked before any work; sets of files appear whole, and a set
a crash left mixed is refused; leftovers of a killed write are cleaned up; batch memory follows the work."""

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pxgl import outputs
from pxgl.engine import Engine
from pxgl.errors import PxglError
from pxgl.loading import load_model
from pxgl.model import read_weights, save_model
from pxgl.pxi import encode_tokens, read_rgb, write_rgb
from pxgl.tokenizer import Tokenizer

from tests.cartridges import pxgl, random_text, snapshot
from tests.cli_process import PEAK_MEMORY
from tests.models import random_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path: Path, rng: np.random.Generator) -> Path:
    """A random model w.pxi (meta, tokenizer beside), a token texture t.pxi, prompts p.txt, text.pxi of
    training text and p.asm of assembly."""
    model = random_model(tmp_path, rng, 512, 16, 24, 4, "w")
    tokenizer = Tokenizer.train(random_text(rng, 3000), 512)
    tokenizer.save(model.tokenizer_path)
    write_rgb(tmp_path / "t.pxi", encode_tokens([rng.integers(0, 512, 5).tolist()], 512))
    (tmp_path / "p.txt").write_text("ab cd\nef\n")
    (tmp_path / "text.pxi").write_text(random_text(rng, 200))
    (tmp_path / "p.asm").write_text(".scratch 2\nSTORE_PIXEL s0, o0\nHALT\n")
    return tmp_path


def refused(monkeypatch, capsys, folder: Path, *args: str) -> str:
    """Run a command that must be refused: exit 2, one line on stderr, nothing written."""
    before = snapshot(folder)
    code, out, err = pxgl(monkeypatch, capsys, *args)
    assert code == 2, (args, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert snapshot(folder) == before
    return err


DATA_LOSS = {
    "infer --input over itself": ("infer", "--input", "{t}", "-m", "{w}", "-o", "{t}"),
    "infer -o over the weights": ("infer", "ab", "-m", "{w}", "-o", "{w}"),
    "infer -o over the meta": ("infer", "ab", "-m", "{w}", "-o", "{meta}"),
    "infer --batch over itself": ("infer", "--batch", "{p}", "-m", "{w}", "-o", "{p}"),
    "infer --tokens-out over the input": ("infer", "--input", "{t}", "-m", "{w}", "--tokens-out", "{t}"),
    "run -o over the input": ("run", "--input", "{t}", "-m", "{w}", "-o", "{t}"),
    "ask -o over the tokenizer": ("ask", "ab", "-m", "{w}", "-o", "{tok}"),
    "encode -o over the weights": ("encode", "ab", "-m", "{w}", "-o", "{w}"),
    "compile -o over the weights": ("compile", "-m", "{w}", "-o", "{w}"),
    "compile -o over the meta": ("compile", "-m", "{w}", "-o", "{meta}"),
    "asm over its source": ("asm", "{asm}", "-o", "{asm}"),
    "pack -o over the weights": ("pack", "-m", "{w}", "-o", "{w}"),
    "export -o over the meta": ("export", "-m", "{w}", "-o", "{meta}"),
    "train -o over its text": ("train", "{text}", "-o", "{text}", "--steps", "1"),
    "generate --batch -o over itself": ("generate", "--batch", "{p}", "-m", "{w}", "-o", "{p}"),
    "hard link to the input": ("infer", "--input", "{t}", "-m", "{w}", "-o", "{hard}"),
    "symbolic link to the weights": ("encode", "ab", "-m", "{w}", "-o", "{soft}"),
}


@pytest.mark.parametrize("case", sorted(DATA_LOSS))
def test_output_over_an_input_is_refused(case, folder, monkeypatch, capsys):
    os.link(folder / "t.pxi", folder / "hard.pxi")
    (folder / "soft.pxi").symlink_to(folder / "w.pxi")
    names = {"t": "t.pxi", "w": "w.pxi", "meta": "w.meta.json", "tok": "w.tokenizer.json", "p": "p.txt"}
    names |= {"asm": "p.asm", "text": "text.pxi", "hard": "hard.pxi", "soft": "soft.pxi"}
    args = [arg.format(**{key: str(folder / name) for key, name in names.items()}) for arg in DATA_LOSS[case]]
    err = refused(monkeypatch, capsys, folder, *args)
    assert "is the input" in err, err


SET_LOSS = {
    "encode -o over the tokenizer its meta names": ("encode", "ab", "-m", "{w}", "-o", "{tok}"),
    "ask -o over the tokenizer its meta names": ("ask", "ab", "-m", "{w}", "-o", "{tok}"),
    "infer -x pxvm -o over the program beside": ("infer", "ab", "-m", "{w}", "-x", "pxvm", "-o", "{program}"),
    "generate -x pxvm -o over the program beside": ("generate", "ab", "-m", "{w}", "-x", "pxvm", "-o", "{program}"),
    "asm -m -o over the program beside": ("asm", "{asm}", "-m", "{w}", "-o", "{program}"),
    "viz -o the model's folder, its tokenizer named index.html": ("viz", "--weights", "-m", "{w}", "-o", "{here}"),
    "viz -o a folder whose weights.png is the program": ("viz", "--weights", "-m", "{w}", "-o", "{viz}"),
}


@pytest.mark.parametrize("case", sorted(SET_LOSS))
def test_output_over_a_file_of_the_model_set_is_refused(case, folder, monkeypatch, capsys):
    """A model reads more than its weights and meta: the tokenizer its meta names (any plain name), the
    pxVM program beside it; and `viz -o DIR` writes files into DIR that may be inputs by another name."""
    meta = folder / "w.meta.json"
    document = json.loads(meta.read_text())
    (folder / "w.tokenizer.json").rename(folder / "index.html")
    meta.write_text(json.dumps(document | {"tokenizer": "index.html"}))
    assert pxgl(monkeypatch, capsys, "compile", "-m", str(folder / "w.pxi"))[0] == 0
    (folder / "viz").mkdir()
    os.link(folder / "w.program.pxi", folder / "viz" / "weights.png")  # the same file by another name
    names = {"w": "w.pxi", "tok": "index.html", "program": "w.program.pxi", "asm": "p.asm", "viz": "viz", "here": "."}
    args = [arg.format(**{key: str(folder / name) for key, name in names.items()}) for arg in SET_LOSS[case]]
    err = refused(monkeypatch, capsys, folder, *args)
    assert "is the input" in err, err


def test_viz_refuses_a_special_file_where_it_writes(folder, monkeypatch, capsys):
    (folder / "v").mkdir()
    os.mkfifo(folder / "v" / "viz.json")
    err = refused(monkeypatch, capsys, folder, "viz", "--weights", "-m", str(folder / "w.pxi"), "-o", str(folder / "v"))
    assert "viz.json: is a device or other special file" in err, err


@pytest.mark.parametrize("verb", [("encode", "ab"), ("ask", "ab"), ("infer", "ab"), ("compile",)])
def test_a_folder_as_output_is_refused(verb, folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    err = refused(monkeypatch, capsys, folder, *verb, "-m", str(folder / "w.pxi"), "-o", ".")
    assert "is a folder" in err


def test_a_device_as_output_is_refused(folder, monkeypatch, capsys):
    device = Path(os.devnull)
    for out in (device, folder / "null.pxi"):
        if out != device:
            out.symlink_to(device)
        err = refused(monkeypatch, capsys, folder, "encode", "ab", "-m", str(folder / "w.pxi"), "-o", str(out))
        assert "not a regular file" in err
    assert device.is_char_device()


def test_outputs_the_file_system_cannot_check_are_refused(folder, tmp_path_factory, monkeypatch, capsys):
    """A name too long for the file system, a symbolic link loop, a file used as a folder, a folder that
    is a link to nothing: one line each (an OSError from the check was a traceback)."""
    links = tmp_path_factory.mktemp("links")  # beside the folder: its snapshot does not follow them
    (links / "loop").symlink_to(links / "loop")
    (links / "dangling").symlink_to(links / "nothing")
    model = ("-m", str(folder / "w.pxi"))
    cases = {
        "File name too long": ("encode", "ab", *model, "-o", str(folder / ("a" * 300 + ".pxi"))),
        "Too many levels of symbolic links": ("encode", "ab", *model, "-o", str(links / "loop")),
        "Not a directory": ("encode", "ab", *model, "-o", str(folder / "w.pxi" / "x.pxi")),
        "cannot check the folder (Too many levels": ("viz", "--weights", *model, "-o", str(links / "loop")),
        "is a link to nothing": ("viz", "--weights", *model, "-o", str(links / "dangling")),
    }
    for message, args in cases.items():
        err = refused(monkeypatch, capsys, folder, *args)
        assert message in err, err


def test_the_installed_package_folder_is_refused(folder, monkeypatch, capsys):
    """A bundled model of a wheel install: `compile` without -o would write beside it, in the package."""
    monkeypatch.setattr(outputs, "installed_package", lambda: folder.resolve())
    err = refused(monkeypatch, capsys, folder, "compile", "-m", str(folder / "w.pxi"))
    assert "installed package" in err
    refused(monkeypatch, capsys, folder, "viz", "--weights", "-m", str(folder / "w.pxi"), "-o", str(folder / "v"))


def test_train_checks_its_output_before_training(folder, monkeypatch, capsys):
    def trained(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(Tokenizer, "train", trained)
    text = str(folder / "text.pxi")
    err = refused(monkeypatch, capsys, folder, "train", text, "-o", str(folder / "nodir" / "m.pxi"))
    assert "does not exist" in err
    (folder / "m.meta.json").mkdir()
    err = refused(monkeypatch, capsys, folder, "train", text, "-o", str(folder / "m.pxi"))
    assert "is a folder" in err


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from pxgl.model import read_weights, save_model
from pxgl.tokenizer import Tokenizer

path, renames = Path(sys.argv[1]), int(sys.argv[2])
spec = read_weights(path).spec
real, done = os.replace, []


def replace(src, dst):
    if len(done) == renames:
        os.kill(os.getpid(), signal.SIGKILL)
    done.append(dst)
    real(src, dst)


os.replace = replace
save_model(path, spec, Path(sys.argv[3]).read_bytes(), Tokenizer.load(sys.argv[4]))
"""


@pytest.mark.parametrize("renames", [0, 1, 2])
@pytest.mark.parametrize("old_meta", ["recorded", "legacy"])
def test_a_set_mixed_by_a_kill_is_refused(renames, old_meta, tmp_path, monkeypatch, capsys, rng):
    """pxgl killed between the renames of a set written over an old one, whose meta records its files or
    (legacy, like the bundled models) does not: the new files are never read with the old meta (it is
    removed before the first rename); the next write cleans up."""
    old = load_model(random_model(tmp_path, rng, 300, 8, 8, 2, "old").source)
    tokenizer = Tokenizer.train(random_text(rng, 2000), 300)
    path = tmp_path / "m.pxi"
    save_model(path, old.spec, old.weights.tobytes(), tokenizer)
    meta = tmp_path / "m.meta.json"
    if old_meta == "legacy":
        document = json.loads(meta.read_text())
        del document["files"]
        meta.write_text(json.dumps(document))
    assert read_weights(path).tokenizer.vocab_size == 300
    new_weights = rng.integers(0, 256, old.spec.image_bytes, dtype=np.uint8).tobytes()
    (tmp_path / "new.bin").write_bytes(new_weights)
    Tokenizer.train(random_text(rng, 2000), 300).save(tmp_path / "new.json")
    args = [str(path), str(renames), str(tmp_path / "new.bin"), str(tmp_path / "new.json")]
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, *args], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not meta.exists()
    with pytest.raises(PxglError, match=r"m\.meta\.json: no such meta file"):
        read_weights(path)
    refused(monkeypatch, capsys, tmp_path, "encode", "ab", "-m", str(path), "-o", str(tmp_path / "e.pxi"))
    assert len(list(tmp_path.glob(f".*{outputs.TEMP_SUFFIX}"))) == 3 - renames  # what the kill left
    save_model(path, old.spec, new_weights, tokenizer)  # the next write removes them
    assert not list(tmp_path.glob(f".*{outputs.TEMP_SUFFIX}"))
    assert read_weights(path).weights.tobytes()[: len(new_weights)] == new_weights


def test_a_legacy_meta_is_read_without_a_set_check_and_a_bad_record_is_refused(tmp_path, rng):
    """A meta without `files` (the bundled models', hand-made ones) is read as it stands, its weights and
    tokenizer unchecked (pxgl never leaves one beside files it wrote: see the kill test); a `files` that is
    there must record the weights, and only roles pxgl writes."""
    model = load_model(random_model(tmp_path, rng, 300, 8, 8, 2, "old").source)
    path = tmp_path / "m.pxi"
    save_model(path, model.spec, model.weights.tobytes(), Tokenizer.train(random_text(rng, 2000), 300))
    meta = tmp_path / "m.meta.json"
    document = json.loads(meta.read_text())
    assert set(document["files"]) == {"weights", "tokenizer"}  # every set pxgl writes has the record
    legacy = {k: v for k, v in document.items() if k != "files"}
    meta.write_text(json.dumps(legacy))
    Tokenizer.train(random_text(rng, 2000), 300).save(tmp_path / model.spec.tokenizer)  # replaced: unseen
    assert read_weights(path).tokenizer.vocab_size == 300
    for record in ({}, [], {"tokenizer": document["files"]["tokenizer"]}, document["files"] | {"weight": 1}):
        meta.write_text(json.dumps(legacy | {"files": record}))
        with pytest.raises(PxglError, match="'files' must be an object recording the weights"):
            read_weights(path)
    assert json.loads((ROOT / "assets/pixellm_v0.meta.json").read_text()).get("files") is None
    assert read_weights(ROOT / "assets/pixellm_v0.pxi").spec.vocab_size == 1024


def test_a_replaced_tokenizer_is_refused(tmp_path, rng):
    model = load_model(random_model(tmp_path, rng, 300, 8, 8, 2, "old").source)
    path = tmp_path / "m.pxi"
    save_model(path, model.spec, model.weights.tobytes(), Tokenizer.train(random_text(rng, 2000), 300))
    Tokenizer.train(random_text(rng, 2000), 300).save(tmp_path / model.spec.tokenizer)
    with pytest.raises(PxglError, match="not the tokenizer file its meta was written with"):
        read_weights(path).tokenizer.encode("ab")


def test_leftovers_of_dead_writers_only_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "out.pxi"
    gone = tmp_path / f".out.pxi.{int(dead.stdout)}{outputs.TEMP_SUFFIX}"
    running = tmp_path / f".out.pxi.{os.getppid()}{outputs.TEMP_SUFFIX}"
    other = tmp_path / f".other.pxi.{int(dead.stdout)}{outputs.TEMP_SUFFIX}"
    for leftover in (gone, running, other):
        leftover.write_bytes(b"partial")
    outputs.atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole"
    assert not gone.exists() and running.exists() and other.exists()


def test_a_failed_set_changes_nothing(tmp_path, rng):
    files = {tmp_path / f"{i}.bin": rng.bytes(int(rng.integers(1, 100))) for i in range(4)}
    for path, data in files.items():
        path.write_bytes(data)
    broken = int(rng.integers(0, 4))

    def writer(i: int, data: bytes):
        def write(tmp: Path) -> None:
            if i == broken:
                raise OSError(28, "No space left on device")
            tmp.write_bytes(data[::-1])

        return write

    before = snapshot(tmp_path)
    with pytest.raises(PxglError, match="No space left"):
        outputs.write_files({path: writer(i, data) for i, (path, data) in enumerate(files.items())})
    assert snapshot(tmp_path) == before


def test_viz_renames_index_and_record_last(folder, monkeypatch, capsys):
    order: list[str] = []
    real = os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda src, dst: (order.append(Path(dst).name), real(src, dst)))
    code, _, err = pxgl(monkeypatch, capsys, "viz", "--weights", "-m", str(folder / "w.pxi"), "-o", str(folder / "v"))
    assert code == 0, err
    assert order[-2:] == ["index.html", "viz.json"] and sorted(order) == sorted(
        p.name for p in (folder / "v").iterdir()
    )


def test_batch_memory_follows_the_work(folder, rng):
    """One 16,000-token line and 20,000 short ones: only each prompt's last window tokens are held (the
    whole texture, padded to the widest line, would be 20,001 by 16,000 pixels: 7 GB as int64)."""
    tokenizer = Tokenizer.load(folder / "w.tokenizer.json")
    long_line = random_text(rng, 5000)
    assert len(tokenizer.encode(long_line)) >= 16_000
    short = random_text(rng, 20_000).split(" ")
    (folder / "many.txt").write_text("\n".join([long_line, *short]) + "\n")
    args = ["infer", "--batch", str(folder / "many.txt"), "-m", str(folder / "w.pxi"), "-o", str(folder / "o.pxi")]
    run = subprocess.run([sys.executable, "-c", PEAK_MEMORY, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 20_002  # an answer per prompt, and where the pixels went
    peak = int(run.stderr.split()[-1])
    assert peak < 400 << 20, f"peak {peak >> 20} MiB"


def test_a_wide_token_texture_is_validated_in_blocks(tmp_path, gpu, rng):
    """1,024 prompts of 8,192 tokens: the validation's temporaries stay near a block, not the texture's
    int64 copies (160 MiB), and an error still names the row in the whole texture."""
    model = random_model(tmp_path, rng, 512, 16, 24, 4)
    ids = rng.integers(0, 512, (1024, 8192), dtype=np.uint16)
    pixels = np.zeros((*ids.shape, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = ids % 256, ids // 256, 255
    with Engine(model, gpu=gpu) as engine:
        want = engine.predict_array(ids[:, -model.spec.context_window :])
        tracemalloc.start()
        try:
            got = engine.predict(pixels, "wide")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert np.array_equal(got, want)
        assert peak < 48 << 20, f"peak {peak >> 20} MiB"
        row = int(rng.integers(512, 1024))
        pixels[row, 100] = (0, 0, 0)
        with pytest.raises(PxglError, match=f"^wide: row {row}, position 101: "):
            engine.predict(pixels, "wide")


ONE_FILE_TWICE = {
    "infer -o in its --viz folder": ("infer", "ab", "-m", "{w}", "-o", "{v}/overview.png", "--viz", "{v}"),
    "infer --tokens-out in its --viz folder": ("infer", "ab", "-m", "{w}", "--tokens-out", "{v}/x.png", "--viz", "{v}"),
    "generate -o in its --viz folder": ("generate", "ab", "-n", "2", "-m", "{w}", "-o", "{v}/prompt0_logits.png",
                                        "--viz", "{v}"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ONE_FILE_TWICE))
@pytest.mark.parametrize("exists", [False, True])
def test_an_output_the_viz_folder_would_write_is_refused(case, exists, folder, monkeypatch, capsys):
    """A file named as the visuals name theirs, in the --viz folder, is two outputs of one command: the
    visuals replaced the prediction pixels or film strip just written there, and the command said it wrote
    both (FORMATS §0.3), whether or not the file was there before."""
    (folder / "v").mkdir()
    args = [arg.format(w=str(folder / "w.pxi"), v=str(folder / "v")) for arg in ONE_FILE_TWICE[case]]
    if exists:
        Path(args[args.index("--viz") - 1]).write_bytes(b"")  # an empty file: replaceable by either
    err = refused(monkeypatch, capsys, folder, *args)
    assert "the same file" in err, err


VIZ_FOLDER_REFUSED = {
    "infer -o the --viz folder": (("infer", "ab", "-m", "{w}", "-o", "{f}/v", "--viz", "{f}/v"), "the same file"),
    "generate -o the --viz folder": (
        ("generate", "ab", "-n", "2", "-m", "{w}", "-o", "{f}/v", "--viz", "{f}/v"),
        "the same file",
    ),
    "generate --viz where no folder can be made": (
        ("generate", "ab", "-n", "2", "-m", "{w}", "--viz", "/proc/pxgl-no-such-folder"),
        "cannot create the folder",
    ),
}


@pytest.mark.parametrize("case", sorted(VIZ_FOLDER_REFUSED))
def test_a_viz_folder_that_cannot_be_made_is_one_line_and_nothing_written(case, folder, monkeypatch, capsys):
    """`-o X --viz X` wrote X, then failed making the folder X (infer: exit 2 with X written; generate: a
    FileExistsError traceback): refused before any work. A folder the system will not make is one line
    (generate: a traceback)."""
    args, message = VIZ_FOLDER_REFUSED[case]
    err = refused(monkeypatch, capsys, folder, *[arg.format(w=str(folder / "w.pxi"), f=folder) for arg in args])
    assert message in err, err


REPLACEABLE = {
    "encode -o": (("encode", "ab", "-m", "{w}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "infer -o": (("infer", "ab", "-m", "{w}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "infer --tokens-out": (("infer", "ab", "-m", "{w}", "--tokens-out", "{o}"), "o.pxi", "o.pxi"),
    "infer --viz": (("infer", "ab", "-m", "{w}", "--viz", "{o}"), "v", "v/viz.json"),
    "run -o": (("run", "-i", "{t}", "-m", "{w}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "ask -o": (("ask", "ab", "-n", "2", "-m", "{w}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "generate -o": (("generate", "ab", "-n", "2", "-m", "{w}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "generate --viz": (("generate", "ab", "-n", "2", "-m", "{w}", "--viz", "{o}"), "v", "v/prompt0_logits.png"),
    "compile -o": (("compile", "-m", "{w}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "asm -o": (("asm", "{asm}", "-o", "{o}"), "o.pxi", "o.pxi"),
    "pack -o": (("pack", "-m", "{w}", "-o", "{o}"), "o.pxa", "o.pxa"),
    "export -o .npz": (("export", "-m", "{w}", "-o", "{o}"), "o.npz", "o.npz"),
    "export -o .safetensors": (("export", "-m", "{w}", "-o", "{o}"), "o.safetensors", "o.safetensors"),
    "import -o, its meta": (("import", "{tensors}", "-o", "{o}"), "o.pxi", "o.meta.json"),
    "train -o, its tokenizer": (
        ("train", "{docs}", "-o", "{o}", "--steps", "1", "--vocab", "300", "--embed", "4", "--hidden", "4"),
        "o.pxi",
        "o.tokenizer.json",
    ),
    "viz -o, its page": (("viz", "--weights", "-m", "{w}", "-o", "{o}"), "v", "v/index.html"),
}
"""Each writing verb: its arguments, the output it is given, and the file of that output the test puts a
user's file at."""


@pytest.mark.parametrize("case", sorted(REPLACEABLE))
def test_a_named_output_replaces_only_a_file_of_its_kind(case, folder, monkeypatch, capsys, rng):
    """A user's file where a verb writes is refused, one line naming it, without --force; with --force it
    is replaced, and the verb names what it wrote; the file the verb wrote is then replaced by a second run
    without --force (its first bytes are of its kind, as FORMATS §0.3 says every such file begins)."""
    args, output, where = REPLACEABLE[case]
    (folder / "docs.txt").write_text("\n\n".join(random_text(rng, 800) for _ in range(4)) + "\n")
    if "{tensors}" in args:
        assert (
            pxgl(monkeypatch, capsys, "export", "-m", str(folder / "w.pxi"), "-o", str(folder / "x.safetensors"))[0]
            == 0
        )
    names = {"w": "w.pxi", "t": "t.pxi", "asm": "p.asm", "tensors": "x.safetensors", "docs": "docs.txt", "o": output}
    command = [arg.format(**{key: str(folder / name) for key, name in names.items()}) for arg in args]
    target = folder / where
    target.parent.mkdir(exist_ok=True)
    users = random_text(rng, int(rng.integers(1, 50))).encode() + rng.bytes(int(rng.integers(0, 300)))
    target.write_bytes(users)
    err = refused(monkeypatch, capsys, folder, *command)
    assert f"{target}: exists and is not " in err and "--force" in err, err
    assert target.read_bytes() == users
    code, out, err = pxgl(monkeypatch, capsys, *command, "--force")
    assert code == 0, err
    assert target.read_bytes() != users and str(folder / output) in out, out
    code, out, err = pxgl(monkeypatch, capsys, *command)
    assert code == 0, f"pxgl refused to replace the file it wrote itself: {err}"


def test_an_empty_file_is_replaced_and_a_kind_is_told_by_its_first_bytes(folder, monkeypatch, capsys):
    """An empty file holds nothing to lose; a PNG that is not 8-bit RGB, or whose IDAT does not come first, is
    not what pxgl writes (a photo with its metadata chunks); prediction pixels are one pixel wide."""
    from PIL import Image

    target = folder / "o.pxi"
    target.write_bytes(b"")
    assert pxgl(monkeypatch, capsys, "infer", "ab", "-m", str(folder / "w.pxi"), "-o", str(target))[0] == 0
    assert read_rgb(target).shape == (1, 1, 3)
    Image.new("RGB", (1, 1)).save(target, "PNG", dpi=(72, 72))  # a pHYs chunk before IDAT
    refused(monkeypatch, capsys, folder, "infer", "ab", "-m", str(folder / "w.pxi"), "-o", str(target))
    Image.new("RGBA", (1, 1)).save(target, "PNG")
    refused(monkeypatch, capsys, folder, "infer", "ab", "-m", str(folder / "w.pxi"), "-o", str(target))
    write_rgb(target, np.zeros((1, 2, 3), np.uint8))  # a token texture is not prediction pixels
    refused(monkeypatch, capsys, folder, "infer", "ab", "-m", str(folder / "w.pxi"), "-o", str(target))
    assert pxgl(monkeypatch, capsys, "encode", "ab", "-m", str(folder / "w.pxi"), "-o", str(target))[0] == 0


@pytest.mark.parametrize(
    ("verb", "default"),
    [
        (("encode", "ab", "-m", "{w}"), "input_tokens.pxi"),
        (("pack", "-m", "{w}"), "w.pxa"),
        (("compile", "-m", "{w}"), "w.program.pxi"),
        (("compile", "-m", "pixellm_v0"), "pixellm_v0.program.pxi"),
        (("train", "{text}", "--steps", "1"), "pixellm.meta.json"),
    ],
)
def test_a_default_output_is_never_written_over(verb, default, folder, monkeypatch, capsys, rng):
    """Without -o a verb writes where no file is (like cp -n): a second run is refused, even over its own
    kind of file, until --force; compile writes a bundled model's program in the current folder."""
    monkeypatch.chdir(folder)
    command = [arg.format(w=str(folder / "w.pxi"), text=str(folder / "text.pxi")) for arg in verb]
    if verb[0] == "train":  # refused before any training: a meta at the default's place
        (folder / default).write_text(json.dumps({"format": "pixellm"}))
    else:
        code, out, err = pxgl(monkeypatch, capsys, *command)
        assert code == 0, err
        assert default in out, out
    err = refused(monkeypatch, capsys, folder, *command)
    assert f"{default} (the default): exists" in err and "--force" in err, err
    if verb[0] != "train":
        assert pxgl(monkeypatch, capsys, *command, "--force")[0] == 0


def test_infer_run_and_ask_write_only_what_they_are_asked_to(folder, monkeypatch, capsys):
    """No prediction pixels appear unasked (output_token.pxi was written, and overwritten, by default), and
    --tokens-out writes the token texture alone; the JSON names only what was written."""
    monkeypatch.chdir(folder)
    model = ("-m", str(folder / "w.pxi"))
    for command in (("infer", "ab", *model), ("run", "-i", "t.pxi", *model), ("ask", "ab", "-n", "2", *model)):
        before = snapshot(folder)
        code, out, err = pxgl(monkeypatch, capsys, *command, "--json")
        assert code == 0, err
        assert snapshot(folder) == before, f"{command[0]} wrote a file it was not asked to"
        assert all("out" not in json.loads(line) for line in out.splitlines()), out
    code, out, err = pxgl(monkeypatch, capsys, "infer", "ab", *model, "--tokens-out", "prompt.pxi")
    assert code == 0, err
    assert sorted(set(snapshot(folder)) - set(before)) == [str(folder / "prompt.pxi")]
    assert "→ prompt.pxi: the prompts' token texture" in out, out


def test_compile_without_arguments_writes_in_the_current_folder(tmp_path, monkeypatch, capsys):
    """`pxgl compile` always failed in a wheel install (the bundled model's program beside it is inside the
    package) and wrote into a checkout's assets: a bundled model's or a cartridge's program is written to
    the current folder."""
    from pxgl.pxvm.compiler import compile_program

    assets = ROOT / "assets"
    monkeypatch.setattr(outputs, "installed_package", lambda: assets.resolve())
    monkeypatch.chdir(tmp_path)
    before = snapshot(assets)
    for args, written in (((), "pixellm_v1.program.pxi"), (("-m", "pixellm_v0.pxa"), "pixellm_v0.program.pxi")):
        code, out, err = pxgl(monkeypatch, capsys, "compile", *args)
        assert code == 0, err
        assert out.startswith(f"{written}: ")
        spec = load_model(args[1] if args else None).spec
        assert np.array_equal(read_rgb(tmp_path / written), compile_program(spec))
    assert snapshot(assets) == before


def test_the_json_names_every_file_written(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    model = ("-m", str(folder / "w.pxi"))
    for command, files in (
        (
            ("infer", "ab", "-o", "o.pxi", "--tokens-out", "t2.pxi", "--viz", "v"),
            {"out": "o.pxi", "tokens_out": "t2.pxi", "viz": "v"},
        ),
        (("generate", "ab", "-n", "2", "-o", "g.pxi", "--viz", "v"), {"out": "g.pxi", "viz": "v"}),
        (("ask", "ab", "-n", "2", "-o", "a.pxi"), {"out": "a.pxi"}),
        (("run", "-i", "t.pxi", "-o", "r.pxi"), {"out": "r.pxi"}),
    ):
        code, out, err = pxgl(monkeypatch, capsys, *command, *model, "--json")
        assert code == 0, err
        record = json.loads(out.splitlines()[0])
        assert {key: record.get(key) for key in ("out", "tokens_out", "viz") if key in record} == files, command
        assert all((folder / path).exists() for path in files.values())
