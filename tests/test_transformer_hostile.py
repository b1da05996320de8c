"""Hostile inputs to what version 2 reads (docs/FORMATS.md §14): a meta whose version is the float 2.0, an output
named as a model's image k ≥ 1 (§14.7), the GPU executors' inputs — token ids, slots, draw steps, step counts,
Choice values past what their record's words hold, a byte stream shorter than the spec — and `pxgl viz` of a
prompt through a tokenizer of another vocabulary. Each is one PxglError before anything is run or written: a
slot is left as it was, no file is replaced. The sweep's other attacks (bombs, truncations, lying sizes,
sha256, NaN weights, cartridges) are refused already, and tested in tests/test_transformer_files.py,
tests/test_hostile_inputs.py and tests/test_cartridge_hostile.py."""

import hashlib
import json
import math
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxgl.cli import app
from pxgl.errors import PxglError
from pxgl.transformer import files, read_transformer
from pxgl.transformer.gpu import Choice, PassesTransformer
from pxgl.transformer.interchange import export_transformer, is_transformer
from pxgl.transformer.meta import transformer_spec_from_meta
from typer.testing import CliRunner

from tests.test_transformer_choice import small_member
from tests.test_transformer_files import small_architecture

CONTEXT = 16
ROOT = Path(__file__).resolve().parent.parent


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_meta_of_version_2_point_0_is_refused_as_a_float(tmp_path, rng):
    path = tmp_path / "m.pxi"
    files.write_random_transformer(path, small_architecture(rng), "q8", seed=int(rng.integers(1 << 32)))
    meta = json.loads(path.with_name("m.meta.json").read_text()) | {"version": 2.0}
    with pytest.raises(PxglError, match=r"^meta: not a pixellm version-2 meta"):
        transformer_spec_from_meta(meta)
    assert not is_transformer({"version": 2.0}) and is_transformer({"version": 2})


def test_compile_never_writes_over_a_models_image_k(tmp_path, monkeypatch, rng):
    architecture = small_architecture(rng)
    _, stream = files.random_layout(architecture, "f16", seed=0)
    monkeypatch.setattr(files, "FULL_IMAGE_SIDE", math.isqrt(len(stream) // 9))  # 3 or 4 images
    path = tmp_path / "m.pxi"
    files.write_random_transformer(path, architecture, "f16", seed=int(rng.integers(1 << 32)))
    image = files.image_paths(path, 3)[int(rng.integers(1, 3))]
    before = digest(image)
    result = CliRunner().invoke(app, ["compile", "-m", str(path), "-o", str(image)])
    assert isinstance(result.exception, PxglError), result.output
    assert f"is the input {image}" in str(result.exception)
    assert digest(image) == before
    read_transformer(path)


@pytest.fixture(scope="module")
def executor(tmp_path_factory, gpu):
    seed = int(np.random.SeedSequence().entropy % (1 << 32))
    print(f"executor's model seed {seed}")
    rng = np.random.default_rng(seed)
    _, _, (spec, pixels) = small_member(tmp_path_factory.mktemp("hostile"), rng, 300, context=CONTEXT)
    model = PassesTransformer(gpu, spec, pixels, slots=2)
    yield model, spec, pixels
    model.close()


BAD_PREFILLS = {
    "float ids": (dict(tokens=[1.7, 2.2]), "token ids must be a list of integers"),
    "NaN id": (dict(tokens=[float("nan")]), "token ids must be a list of integers"),
    "an id past int64": (dict(tokens=[2**70]), "token ids must be a list of integers"),
    "string ids": (dict(tokens=["5"]), "token ids must be a list of integers"),
    "a matrix of ids": (dict(tokens=[[1, 2]]), "token ids must be a list of integers"),
    "bool ids": (dict(tokens=[True]), "token ids must be a list of integers"),
    "float targets": (dict(targets=[1.5, 2]), "targets: token ids must be a list of integers"),
    "a float slot": (dict(slot=0.5), r"slot 0\.5: this executor holds"),
    "a bool slot": (dict(slot=True), "slot True: this executor holds"),
    "a negative step": (dict(choice=Choice(temperature=1), step=-1), r"step -1 must be an integer in 0\.\.2\^32-1"),
    "a step past 2^32": (dict(choice=Choice(temperature=1), step=2**40), "step 1099511627776 must be"),
    "top_k past 2^32": (dict(choice=Choice(temperature=1, top_k=2**40)), r"top_k must lie in 0\.\.2147483647"),
    "top_k past int32": (dict(choice=Choice(temperature=1, top_k=2**31)), r"top_k must lie in 0\.\.2147483647"),
    "a float top_k": (dict(choice=Choice(temperature=1, top_k=2.5)), "top_k, seed, draw_row, top_logprobs are int"),
    "a float seed": (dict(choice=Choice(seed=1.5)), "top_k, seed, draw_row, top_logprobs are int"),
    "a float top_logprobs": (dict(choice=Choice(top_logprobs=2.5)), "top_k, seed, draw_row, top_logprobs are int"),
    "a bool top_logprobs": (dict(choice=Choice(top_logprobs=True)), "top_k, seed, draw_row, top_logprobs are int"),
    "a string temperature": (dict(choice=Choice(temperature="1")), "top_k, seed, draw_row, top_logprobs are int"),
    "a temperature past float32": (dict(choice=Choice(temperature=1e39)), "temperature must be ≥ 0 and finite"),
    "top_p 0 in float32": (dict(choice=Choice(temperature=1, top_p=1e-50)), "must be past 0 in float32"),
    "a penalty 0 in float32": (dict(choice=Choice(repetition_penalty=1e-50)), "must be past 0 in float32"),
}


@pytest.mark.parametrize("bad", BAD_PREFILLS)
def test_a_hostile_prefill_is_one_error_and_leaves_the_slot_as_it_was(executor, bad):
    model, _, _ = executor
    model.truncate(0, 0)
    model.prefill(0, [1, 2, 3], choice=Choice())
    call, message = BAD_PREFILLS[bad]
    arguments = dict(slot=0, tokens=[4, 5]) | call
    with pytest.raises(PxglError, match=message):
        model.prefill(**arguments)
    assert (model.length(0), model.pending(0)) == (3, True)


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(count=2.5), "give count ≥ 1"),
        (dict(steps=[-1]), r"decode: step -1 must be an integer in 0\.\.2\^32-1"),
        (dict(steps=[2**40]), "decode: step 1099511627776 must be"),
        (dict(slots=[0.0]), r"slot 0\.0: this executor holds"),
        (dict(count=10**9), "the context holds 16 positions"),
    ],
)
def test_a_hostile_decode_is_one_error_and_leaves_the_slot_as_it_was(executor, call, message):
    model, _, _ = executor
    model.truncate(0, 0)
    model.prefill(0, [1, 2, 3], choice=Choice())
    with pytest.raises(PxglError, match=message):
        model.decode(**(dict(slots=[0], choices=[Choice()]) | call))
    assert (model.length(0), model.pending(0)) == (3, True)


@pytest.mark.parametrize("n", [1.5, True, -1, 4])
def test_a_hostile_truncate_is_one_error_and_leaves_the_slot_as_it_was(executor, n):
    model, _, _ = executor
    model.truncate(0, 0)
    model.prefill(0, [1, 2, 3], choice=Choice())
    with pytest.raises(PxglError, match=rf"truncate slot 0 to {n}: it holds 3 positions"):
        model.truncate(0, n)
    assert (model.length(0), model.pending(0)) == (3, True)


def test_a_byte_stream_shorter_than_its_spec_is_refused(executor, gpu):
    _, spec, pixels = executor
    with pytest.raises(PxglError, match="weight bytes: the spec's tensors run past them"):
        PassesTransformer(gpu, spec, pixels[: len(pixels) // 2])


def test_viz_refuses_a_tokenizer_of_another_vocabulary_before_running(tmp_path, rng):
    architecture = small_architecture(rng)
    path = tmp_path / "m.pxi"
    files.write_random_transformer(path, architecture, "q8", seed=int(rng.integers(1 << 32)))
    bundled = json.loads((ROOT / "assets" / "pixellm_v0.tokenizer.json").read_text())
    # a vocabulary other than the model's: smaller where one of 257+ tokens can be, else larger
    vocab = architecture.vocab_size
    merges = int(rng.integers(1, vocab - 256)) if vocab > 257 else int(rng.integers(max(1, vocab - 255), 512))
    tokenizer = bundled | {"vocab_size": 256 + merges, "merges": bundled["merges"][:merges]}
    (tmp_path / "tok.json").write_text(json.dumps(tokenizer))
    meta = json.loads(path.with_name("m.meta.json").read_text()) | {"tokenizer": "tok.json"}
    path.with_name("m.meta.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["viz", "hi there", "-m", str(path), "-o", str(tmp_path / "out")])
    assert isinstance(result.exception, PxglError), result.output
    assert str(result.exception) == (
        f"{tmp_path / 'tok.json'}: {256 + merges} tokens; the model's vocabulary is {architecture.vocab_size}"
    )
    assert not (tmp_path / "out").exists()


def test_a_meta_missing_a_big_models_tensors_is_one_short_line(tmp_path, rng):
    path = tmp_path / "m.pxi"
    files.write_random_transformer(path, small_architecture(rng), "q8", seed=int(rng.integers(1 << 32)))
    meta = json.loads(path.with_name("m.meta.json").read_text())
    meta |= {"layers": int(rng.integers(64, 129)), "tensors": {f"junk{k}": {} for k in range(1000)}}
    with pytest.raises(
        PxglError,
        match=r"missing \['block0\..*, … \d+ in all\], extra \['junk0', 'junk1', 'junk10', 'junk100', … 1000 in all\]",
    ) as e:
        transformer_spec_from_meta(meta)
    assert len(str(e.value)) < 400


def test_an_import_missing_a_big_models_tensors_is_one_short_line(tmp_path, rng):
    spec, stream = files.random_layout(small_architecture(rng), "q8", seed=int(rng.integers(1 << 32)))
    export_transformer(tmp_path / "m.safetensors", spec, stream, None)
    data = (tmp_path / "m.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    architecture = json.loads(header["__metadata__"]["pxgl.architecture"]) | {"layers": int(rng.integers(64, 129))}
    header["__metadata__"]["pxgl.architecture"] = json.dumps(architecture)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (tmp_path / "big.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])
    result = CliRunner().invoke(app, ["import", str(tmp_path / "big.safetensors"), "-o", str(tmp_path / "big.pxi")])
    assert isinstance(result.exception, PxglError), result.output
    assert re.search(r"needs \['block\d+\..*, … \d+ in all\]; the file also has nothing else", str(result.exception))
    assert len(str(result.exception)) < 400
    assert not (tmp_path / "big.pxi").exists()


def test_a_meta_declaring_more_memory_than_the_process_has_is_one_line(tmp_path, rng):
    """32 full images declared (6.4 GB) where an address-space limit of 3 GiB stands for a small machine."""
    path = tmp_path / "m.pxi"
    files.write_random_transformer(path, small_architecture(rng), "q8", seed=int(rng.integers(1 << 32)))
    meta = json.loads(path.with_name("m.meta.json").read_text())
    meta.pop("image"), meta.pop("files")
    path.with_name("m.meta.json").write_text(json.dumps(meta | {"images": [{"width": 8192, "height": 8192}] * 32}))
    limit = 3 << 30
    result = subprocess.run(
        [sys.executable, "-m", "pxgl.cli", "export", "-m", str(path), "-o", str(tmp_path / "m.npz")],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {path.with_name('m.meta.json')}: its 32 weight image(s) hold 6,442,450,944 bytes, more memory than "
        "this process can have: run it where more memory is free\n",
    )
    assert not (tmp_path / "m.npz").exists()
