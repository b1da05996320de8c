"""Hostile inputs the review of issue 28 found through the CLI (docs/FORMATS.md §0.3, §10.2, §10.3), each of
which failed before its fix: config.json values of a type the reader did not expect (a traceback, or a value
silently read as another), a FIFO named like a GGUF file (the import waited forever for a writer), and an
export over a GGUF file pxgl did not write (a user's llama.cpp model, replaced without --force)."""

import json
import os
import subprocess
import sys

import pytest
from pxgl.transformer.files import write_random_transformer
from pxgl.transformer.meta import architecture_from_meta

from tests.cartridges import pxgl
from tests.gguf_files import hf_meta

GPT2 = {
    "architectures": ["GPT2LMHeadModel"],
    "vocab_size": 300,
    "n_positions": 32,
    "n_embd": 32,
    "n_layer": 1,
    "n_head": 2,
}
QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"],
    "vocab_size": 300,
    "max_position_embeddings": 32,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}
ODD_CONFIGS = {
    # name → (config, what the one line names)
    "an architecture that is an object": (GPT2 | {"architectures": [{"a": 1}]}, "'architectures'"),
    "an activation that is an object": (GPT2 | {"activation_function": {"a": 1}}, "activation_function"),
    "an activation that is a list": (GPT2 | {"activation_function": ["gelu"]}, "activation_function"),
    "layer types that are a number": (QWEN2 | {"layer_types": 5}, "layer_types"),
    # read as "unscaled" before, where transformers scales (a non-empty string is true to Python)
    "scale_attn_weights a string": (GPT2 | {"scale_attn_weights": "yes"}, "scale_attn_weights"),
}


@pytest.mark.parametrize("case", ODD_CONFIGS)
def test_a_config_value_of_an_odd_type_is_one_line(case, tmp_path, monkeypatch, capsys):
    config, named = ODD_CONFIGS[case]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(out / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and named in err and "Traceback" not in err, err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["model.gguf", "model"])
def test_a_fifo_given_to_import_is_refused_without_waiting(name, tmp_path):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "pxgl.cli", "import", str(fifo), "-o", str(tmp_path / "m.pxi")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)  # it used to block for ever
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_export_replaces_a_gguf_pxgl_wrote_and_no_other(tmp_path, seed, monkeypatch, capsys):
    model = tmp_path / "model.pxi"
    write_random_transformer(model, architecture_from_meta(hf_meta("llama"), "test"), "q8", seed)
    out = tmp_path / "model.gguf"
    export = ("export", "-m", str(model), "-o", str(out))
    code, _, err = pxgl(monkeypatch, capsys, *export)
    assert code == 0, err
    ours = out.read_bytes()
    code, _, err = pxgl(monkeypatch, capsys, *export)  # pxgl's own export: replaced
    assert code == 0 and out.read_bytes() == ours, err
    theirs = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 4  # a GGUF another tool wrote
    out.write_bytes(theirs)
    code, _, err = pxgl(monkeypatch, capsys, *export)
    assert code == 2 and err.count("\n") == 1 and "--force" in err, err
    assert out.read_bytes() == theirs
    code, _, err = pxgl(monkeypatch, capsys, *export, "--force")
    assert code == 0 and out.read_bytes() == ours, err


@pytest.mark.parametrize("linked", ["config.json", "model.safetensors.index.json"])
def test_a_folder_file_linking_out_of_the_folder_is_refused(linked, tmp_path, monkeypatch, capsys):
    """As the shards and tokenizer files were: config.json and the index were read through a link anywhere."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(GPT2))
    outside = tmp_path / f"outside-{linked}"
    outside.write_text(json.dumps({"weight_map": {"wte.weight": "model.safetensors"}}))
    if linked == "config.json":
        outside.write_text((folder / linked).read_text())
        (folder / linked).unlink()
    (folder / linked).symlink_to(outside)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(out / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and f"{linked}: a link leading out of the folder" in err, err
    assert list(out.iterdir()) == []


def test_a_mistral_config_without_sliding_window_has_transformers_default_window(tmp_path, monkeypatch, capsys):
    """MistralConfig's sliding_window is 4,096 when config.json has none: read as no window, the import computed
    other logits than transformers past position 4,096."""
    mistral = QWEN2 | {"architectures": ["MistralForCausalLM"], "max_position_embeddings": 8192}
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(mistral))
    code, _, err = pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(tmp_path / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and "sliding_window 4096" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_export_hf_into_the_current_folder_is_one_line(tmp_path, seed, monkeypatch, capsys):
    """`-o .` in an empty folder ended in a traceback (OSError: rmdir of '.')."""
    model = tmp_path / "model.pxi"
    write_random_transformer(model, architecture_from_meta(hf_meta("llama"), "test"), "q8", seed)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(model), "--format", "hf", "-o", ".")
    assert code == 2 and err.count("\n") == 1 and "current folder" in err, err
    assert list(here.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "here",
        "model.meta.json",
        "model.pxi",
    ]


def test_a_padded_tokenizer_exports_to_gguf_as_llama_cpp_pads_one(tmp_path, seed, monkeypatch, capsys):
    """A tokenizer of fewer tokens than the model's vocabulary (§6.1's padding) ended export --format gguf in a
    KeyError traceback; its padding ids are written as convert_hf_to_gguf.py writes them."""
    import gguf

    from tests.text_tokenizers import write_folder

    model, folder = tmp_path / "model.pxi", tmp_path / "folder"
    tokens = write_folder("gpt2", tmp_path / "tokenizer").get_vocab_size(with_added_tokens=True)
    write_random_transformer(model, architecture_from_meta(hf_meta("qwen2", vocab=tokens + 3), "test"), "q8", seed)
    assert pxgl(monkeypatch, capsys, "export", "-m", str(model), "--format", "hf", "-o", str(folder))[0] == 0
    write_folder("gpt2", folder)
    assert pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(tmp_path / "padded.pxi"))[0] == 0
    out = tmp_path / "padded.gguf"
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(tmp_path / "padded.pxi"), "-o", str(out))
    assert code == 0, err
    fields = gguf.GGUFReader(out).fields
    assert fields["tokenizer.ggml.tokens"].contents()[tokens:] == [f"[PAD{i}]" for i in range(tokens, tokens + 3)]
    assert fields["tokenizer.ggml.token_type"].contents()[tokens:] == [5, 5, 5]
