"""A new user's first steps with a model from elsewhere (docs/FORMATS.md §10): a path that is not there, and a
.gguf or Hugging Face folder handed to a command that runs pixel models, each answered in one line saying what
to do."""

import pytest

from tests.cartridges import pxgl


def test_import_of_a_missing_path_says_it_is_missing(tmp_path, monkeypatch, capsys):
    code, out, err = pxgl(monkeypatch, capsys, "import", str(tmp_path / "smollm2"), "-o", str(tmp_path / "m.pxi"))
    assert code == 2 and out == "" and err == f"error: {tmp_path / 'smollm2'}: no such file or folder\n", err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["gguf", "folder"])
def test_running_a_gguf_or_a_folder_says_to_import_it_first(kind, tmp_path, monkeypatch, capsys):
    source = tmp_path / ("model.gguf" if kind == "gguf" else "model")
    if kind == "gguf":
        source.write_bytes(b"GGUF" + bytes(60))
    else:
        source.mkdir()
        (source / "config.json").write_text("{}")
    code, _, err = pxgl(monkeypatch, capsys, "generate", "-m", str(source), "hello")
    assert code == 2 and err.count("\n") == 1, err
    assert err.endswith(f"; import it first: pxgl import {source} -o NAME.pxi\n"), err


def test_export_to_a_name_without_a_suffix_names_every_form(tmp_path, monkeypatch, capsys):
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", "pixellm_v0", "-o", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and "or a Hugging Face folder with --format hf" in err, err
    assert list(tmp_path.iterdir()) == []
