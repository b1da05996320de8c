"""Hostile Hugging Face folders (docs/FORMATS.md §10.2, issue 28 item 6): a config.json lying about shapes or
claiming absurd sizes, a shard index naming a missing file, an absolute path, `..` or a link out of the folder, a
tensor in two shards, a header claiming 10 GB, NaN and infinite weights, and what the spec cannot express. Each
is one line naming the problem, exit status 2, no traceback, nothing written; the peak memory of the largest
claims is asserted in a process of its own."""

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxgl.cli import app
from pxgl.errors import PxglError
from typer.testing import CliRunner

from tests.cli_process import PEAK_MEMORY

torch = pytest.importorskip("torch", reason="the reference extra: pip install -e '.[reference]'")
transformers = pytest.importorskip("transformers", reason="the reference extra: pip install -e '.[reference]'")

PEAK_BYTES = 200 << 20
"""§0: peak memory ≤ the input's size + 200 MB (the inputs here are a few hundred kB)."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A small GPT-2 folder (one file) and a Llama folder in shards, made once and copied by each test."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=1,
                                                                n_head=2))  # fmt: skip
    gpt2.save_pretrained(root / "gpt2")
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(vocab_size=300, max_position_embeddings=32, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    )  # fmt: skip
    llama.save_pretrained(root / "llama", max_shard_size="20KB")
    return {"gpt2": root / "gpt2", "llama": root / "llama"}


def copy(folders: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folders[name], tmp_path / name))


def refused(tmp_path: Path, folder: Path, pattern: str, *options: str) -> None:
    """`pxgl import FOLDER -o out.pxi` refuses with one line matching `pattern`, and writes nothing."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(out / "m.pxi"), *options])
    assert isinstance(result.exception, PxglError), result.output
    message = str(result.exception)
    assert "\n" not in message and re.search(pattern, message), message
    assert list(out.iterdir()) == []


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


def edit_index(folder: Path, change) -> None:
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    change(index["weight_map"])
    index_path.write_text(json.dumps(index))


def test_a_config_lying_about_shapes_is_refused(folders, tmp_path):
    folder = copy(folders, "gpt2", tmp_path)
    edit_config(folder, n_embd=64)
    refused(tmp_path, folder, r"transformer\.wte\.weight' is \[300, 32\]; config\.json makes it \[300, 64\]")
    edit_config(folder, n_embd=32, n_layer=2)
    refused(tmp_path, folder, r"missing \[.*'transformer\.h\.1\.")


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda m: m.update({"lm_head.weight": "model-gone.safetensors"}), r"model-gone\.safetensors: no such file"),
        (lambda m: m.update({"lm_head.weight": "/etc/passwd"}), "not a plain file name inside the folder"),
        (lambda m: m.update({"lm_head.weight": "../x.safetensors"}), "not a plain file name inside the folder"),
        (lambda m: m.update({"lm_head.weight": ".."}), "not a plain file name inside the folder"),
        (lambda m: m.update({"lm_head.weight": ["a", "b"]}), "not a plain file name inside the folder"),
        (lambda m: m.update({"extra.weight": next(iter(m.values()))}), "names tensors no shard holds"),
    ],
)
def test_a_shard_index_naming_what_it_should_not_is_refused(folders, tmp_path, change, pattern):
    folder = copy(folders, "llama", tmp_path)
    edit_index(folder, change)
    refused(tmp_path, folder, pattern)


def test_a_shard_linking_out_of_the_folder_is_refused(folders, tmp_path):
    folder = copy(folders, "llama", tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    outside = tmp_path / "outside.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    refused(tmp_path, folder, "a link leading out of the folder")


def test_a_tensor_in_two_shards_is_refused(folders, tmp_path):
    folder = copy(folders, "llama", tmp_path)
    first, second = sorted(folder.glob("model-*.safetensors"))[:2]
    shutil.copy(first, second)
    refused(tmp_path, folder, r"(is also in|which model\.safetensors\.index\.json places in)")


def header_claiming(path: Path, name: str, size: int) -> None:
    """Rewrite the safetensors header so that `name` claims `size` bytes (its shape grown to match)."""
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    entry = header[name]
    entry["shape"] = [size // 4]
    entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][0] + size]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])


def run_measured(folder: Path, out: Path) -> tuple[subprocess.CompletedProcess, int]:
    run = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, "import", str(folder), "-o", str(out)], capture_output=True, text=True
    )
    lines = run.stderr.strip().splitlines()
    return run, int(lines[-1])


def test_a_header_claiming_10_gb_and_absurd_sizes_stay_small_in_memory(folders, tmp_path):
    folder = copy(folders, "gpt2", tmp_path)
    header_claiming(folder / "model.safetensors", "transformer.wte.weight", 10 << 30)
    run, peak = run_measured(folder, tmp_path / "m.pxi")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 2 and "outside the" in lines[0], run.stderr
    assert peak <= PEAK_BYTES + (folder / "model.safetensors").stat().st_size, peak

    folder = copy(folders, "llama", tmp_path / "absurd")
    edit_config(folder, vocab_size=16_000_000, hidden_size=8192, intermediate_size=65536, num_hidden_layers=128)
    run, peak = run_measured(folder, tmp_path / "m.pxi")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 2 and "not the folder's" in lines[0], run.stderr
    assert peak <= PEAK_BYTES, peak
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_infinite_weights_are_refused(folders, tmp_path, bad):
    folder = copy(folders, "gpt2", tmp_path)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    begin = 8 + length + header["transformer.h.0.mlp.c_fc.weight"]["data_offsets"][0]
    data[begin + 40 : begin + 44] = np.float32(bad).tobytes()
    path.write_bytes(bytes(data))
    refused(tmp_path, folder, r"tensor 'block0\.mlp\.up\.weight' holds NaN or infinite values")


@pytest.mark.parametrize(
    "name, changes, pattern",
    [
        (
            "gpt2",
            {"architectures": ["GPTNeoForCausalLM"]},
            "config.json: GPTNeoForCausalLM: GPT-Neo's local attention",
        ),
        ("gpt2", {"architectures": ["BertModel"]}, r"'architectures' is \['BertModel'\]; pxgl imports exactly one of"),
        ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ("gpt2", {"activation_function": "relu"}, "activation_function 'relu'"),
        ("llama", {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "RoPE scaling 'yarn'"),
        ("llama", {"partial_rotary_factor": 0.5}, "partial rotary"),
        ("llama", {"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True}, "sliding-window"),
        ("llama", {"architectures": ["MistralForCausalLM"], "sliding_window": 16}, "sliding_window 16"),
        ("llama", {"vocab_size": 2**40}, "'vocab_size' = 1099511627776 is outside"),
        ("llama", {"num_hidden_layers": 1.5}, "'num_hidden_layers' must be an integer"),
    ],
)
def test_what_the_spec_cannot_express_is_refused_naming_it(folders, tmp_path, name, changes, pattern):
    folder = copy(folders, name, tmp_path)
    edit_config(folder, **changes)
    refused(tmp_path, folder, pattern)


def test_options_a_folder_brings_itself_are_refused(folders, tmp_path):
    refused(tmp_path, copy(folders, "gpt2", tmp_path), "brings its own config", "--config", str(tmp_path / "c.json"))
