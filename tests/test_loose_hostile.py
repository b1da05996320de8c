"""Loose ends of issue 28's import paths (docs/FORMATS.md §10.2, §10.3, §6.1): a Hugging Face cache snapshot
imports as it is, its links followed only inside its repository; GGUF token types outside llama.cpp's and
convert_hf_to_gguf.py's [PAD<id>] padding; tokenizer_config.json that is not an object. Each refusal is one
line, exit status 2, nothing written."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxgl.tokenizer import Tokenizer
from pxgl.transformer.files import write_random_transformer
from pxgl.transformer.meta import architecture_from_meta

from tests import text_tokenizers
from tests.cartridges import pxgl
from tests.cli_process import PEAK_MEMORY
from tests.gguf_files import T, hf_meta, random_weights, write_gguf

torch = pytest.importorskip("torch", reason="the reference extra: pip install -e '.[reference]'")
transformers = pytest.importorskip("transformers", reason="the reference extra: pip install -e '.[reference]'")

VOCAB = 1600
"""The model's rows: more than the GPT-2-layout tokenizer's 1,500 tokens (the rest padding)."""
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
REVISION = "0123456789abcdef0123456789abcdef01234567"
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
MB = 1 << 20


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """What save_pretrained writes for a small sharded Llama and its tokenizer (tokenizer.json,
    tokenizer_config.json, chat_template.jinja)."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, max_position_embeddings=32, hidden_size=32,
                                      intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1)  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="100KB")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=text_tokenizers.gpt2(), eos_token="<|endoftext|>", chat_template=TEMPLATE
    )
    tokenizer.save_pretrained(folder)
    return folder


def hub_snapshot(saved: Path, hub: Path, repository: str = "models--org--tiny") -> Path:
    """The layout `huggingface-cli download` leaves without --local-dir: each file moved to blobs/<its sha256>,
    snapshots/<revision>/<name> a link to ../../blobs/<sha256>."""
    repo = hub / repository
    snapshot = repo / "snapshots" / REVISION
    for folder in (repo / "blobs", repo / "refs", snapshot):
        folder.mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    for file in sorted(saved.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / digest)
        (snapshot / file.name).symlink_to(Path("../../blobs") / digest)
    return snapshot


def written(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_hub_cache_snapshot_imports_as_its_copied_folder(saved, tmp_path, monkeypatch, capsys):
    """Refused before (its files link out of the snapshot folder, to ../../blobs): it now imports, and as the
    folder `cp -rL` makes of it."""
    snapshot = hub_snapshot(saved, tmp_path / "hub")
    assert all(path.is_symlink() for path in snapshot.iterdir())
    copied = Path(shutil.copytree(snapshot, tmp_path / "copied"))  # links followed: cp -rL
    for source, out in ((snapshot, "from_snapshot"), (copied, "from_copy")):
        (tmp_path / out).mkdir()
        code, _, err = pxgl(monkeypatch, capsys, "import", str(source), "-o", str(tmp_path / out / "m.pxi"))
        assert code == 0, err
    imported = written(tmp_path / "from_snapshot")
    assert sorted(imported) == ["m.meta.json", "m.pxi", "m.tokenizer.json"]
    assert imported == written(tmp_path / "from_copy")
    assert Tokenizer.load(tmp_path / "from_snapshot" / "m.tokenizer.json").chat_template == TEMPLATE


def _other_repository(snapshot: Path, name: str) -> Path:
    """A blob of another repository of the same cache, holding the shard's bytes."""
    other = snapshot.parents[2] / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    shutil.copy(snapshot / name, other / "shard")
    return Path("../../../models--org--other/blobs/shard")


def _chain_leaving(snapshot: Path, name: str) -> Path:
    """A link outside the repository leading back to the file's own blob."""
    hop = snapshot.parents[3] / "hop"
    hop.symlink_to((snapshot / name).resolve())
    return hop


def _blob_leaving(snapshot: Path, name: str) -> Path:
    """The file's blob is itself a link to a copy outside the repository."""
    blob = (snapshot / name).resolve()
    outside = snapshot.parents[3] / "outside.json"
    shutil.copy(blob, outside)
    blob.unlink()
    blob.symlink_to(outside)
    return Path(os.readlink(snapshot / name))


def _fifo(snapshot: Path, name: str) -> Path:
    os.mkfifo(snapshot.parents[1] / "blobs" / "fifo")
    return Path("../../blobs/fifo")


def _loop(snapshot: Path, name: str) -> Path:
    blobs = snapshot.parents[1] / "blobs"
    (blobs / "a").symlink_to("b")
    (blobs / "b").symlink_to("a")
    return Path("../../blobs/a")


SHARD = "the first shard"
HOSTILE_LINKS = {
    # case → (file relinked, its new target made by the function, what the one line says)
    "a link to /etc/passwd": ("config.json", lambda s, n: Path("/etc/passwd"), "out of its Hugging Face cache"),
    "a link to another repository": (SHARD, _other_repository, "out of its Hugging Face cache repository"),
    "a chain passing outside": ("tokenizer.json", _chain_leaving, "out of its Hugging Face cache repository"),
    "a blob linking outside": ("tokenizer_config.json", _blob_leaving, "out of its Hugging Face cache repository"),
    "a link to a FIFO": ("tokenizer.json", _fifo, "is a FIFO"),
    "a link to a folder": ("config.json", lambda s, n: Path("../../blobs"), "is a folder"),
    "a loop of links": ("model.safetensors.index.json", _loop, "a chain of more than 40 links"),
    # a blob not (yet) downloaded: refused, not imported as a folder without a tokenizer (exists() is false)
    "a dangling link": ("tokenizer.json", lambda s, n: Path("../../blobs/missing"), "no such tokenizer file"),
}


@pytest.mark.parametrize("case", HOSTILE_LINKS)
def test_a_snapshot_link_leading_anywhere_else_is_one_line(case, saved, tmp_path, monkeypatch, capsys):
    name, target, message = HOSTILE_LINKS[case]
    snapshot = hub_snapshot(saved, tmp_path / "hub")
    if name == SHARD:
        name = sorted(snapshot.glob("model-*.safetensors"))[0].name
    link = target(snapshot, name)
    (snapshot / name).unlink()
    (snapshot / name).symlink_to(link)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = pxgl(monkeypatch, capsys, "import", str(snapshot), "-o", str(out / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and f"{name}: " in err and message in err, err
    assert list(out.iterdir()) == []


def test_a_snapshot_outside_a_models_repository_is_a_plain_folder(saved, tmp_path, monkeypatch, capsys):
    """The layout is recognised by its repository's name and blobs/: another cache's links stay refused."""
    snapshot = hub_snapshot(saved, tmp_path / "hub", repository="datasets--org--tiny")
    code, _, err = pxgl(monkeypatch, capsys, "import", str(snapshot), "-o", str(tmp_path / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and "a link leading out of the folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]


def test_a_chain_leaving_a_plain_folder_on_its_way_back_is_refused(saved, tmp_path, monkeypatch, capsys):
    """Accepted before (only where the chain ended was checked): every hop must stay inside the folder."""
    folder = Path(shutil.copytree(saved, tmp_path / "folder"))
    (folder / "tokenizer.json").rename(folder / "real.json")
    (tmp_path / "hop").symlink_to(folder / "real.json")
    (folder / "tokenizer.json").symlink_to(tmp_path / "hop")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(out / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and "tokenizer.json: a link leading out of the folder" in err, err
    assert list(out.iterdir()) == []


def test_a_link_is_bounded_by_its_targets_size(saved, tmp_path):
    """config.json, a link of 76 bytes, to a 17 MiB blob (sparse): refused by the config's 16 MiB cap, without
    reading it, in a process of its own whose peak memory is measured."""
    snapshot = hub_snapshot(saved, tmp_path / "hub")
    blob = (snapshot / "config.json").resolve()
    with blob.open("r+b") as handle:
        handle.truncate(17 * MB)
    command = [sys.executable, "-c", PEAK_MEMORY, "import", str(snapshot), "-o", str(tmp_path / "m.pxi")]
    run = subprocess.run(command, capture_output=True, text=True)
    *lines, peak = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "past the model config's limit" in lines[0], run.stderr
    assert int(peak) <= 17 * MB + 200 * MB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]


def convert_keys(hf_json: dict, vocab_size: int, pre: str, eos: int, types_at: dict[int, int] | None = None):
    """The tokenizer keys convert_hf_to_gguf.py's get_vocab_base writes for a byte-level tokenizer.json of fewer
    tokens than the model's rows: an id the tokenizer lacks is [PAD<id>] of type unused (5); `types_at`
    overrides types."""
    added = {t["id"]: t for t in hf_json["added_tokens"]}
    pieces = {i: piece for piece, i in hf_json["model"]["vocab"].items()} | {i: t["content"] for i, t in added.items()}
    tokens = [pieces.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [
        UNUSED if i not in pieces else (CONTROL if added[i]["special"] else USER_DEFINED) if i in added else NORMAL
        for i in range(vocab_size)
    ]
    for i, kind in (types_at or {}).items():
        types[i] = kind
    merges = [m if isinstance(m, str) else " ".join(m) for m in hf_json["model"]["merges"]]

    def write(writer) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_eos_token_id(eos)
        writer.add_chat_template("{{ messages }}")

    return write


def test_a_qwen2_gguf_and_its_folder_give_the_same_tokenizer(tmp_path, seed, monkeypatch, capsys):
    """Qwen2's vocabulary has more rows than tokens; convert_hf_to_gguf.py writes each missing id as [PAD<id>] of
    type unused, which llama.cpp decodes to nothing (llama-vocab.cpp's token_to_piece). They were read as pieces
    that decode to "[PAD<id>]"; now as §6.1's padding, as the folder's import pads."""
    hf = text_tokenizers.qwen2()
    tokens = hf.get_vocab_size(with_added_tokens=True)
    meta = hf_meta("qwen2", vocab=tokens + 37)
    folder, model = tmp_path / "folder", tmp_path / "random.pxi"
    write_random_transformer(model, architecture_from_meta(meta, "test"), "q8", seed)
    assert pxgl(monkeypatch, capsys, "export", "-m", str(model), "--format", "hf", "-o", str(folder))[0] == 0
    text_tokenizers.write_folder("qwen2", folder)
    (folder / "generation_config.json").unlink()
    code, _, err = pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(tmp_path / "from_folder.pxi"))
    assert code == 0, err
    eos = hf.token_to_id("<|im_end|>")
    rng = np.random.default_rng(seed)
    keys = convert_keys(json.loads(hf.to_str()), tokens + 37, "qwen2", eos)
    write_gguf(tmp_path / "model.gguf", "qwen2", meta, random_weights(meta, rng), T.Q8_0, rng, keys)
    code, _, err = pxgl(monkeypatch, capsys, "import", str(tmp_path / "model.gguf"), "-o", str(tmp_path / "g.pxi"))
    assert code == 0, err
    ours = Tokenizer.load(tmp_path / "from_folder.tokenizer.json")
    theirs = Tokenizer.load(tmp_path / "g.tokenizer.json")
    assert (theirs.vocab_size, theirs.eos_ids, theirs.bos_id, theirs.add_bos, theirs.chat_template) == (
        ours.vocab_size, ours.eos_ids, ours.bos_id, ours.add_bos, ours.chat_template)  # fmt: skip
    assert ours.vocab_size == tokens + 37
    for i in range(ours.vocab_size):
        assert theirs.decode([i]) == ours.decode([i]) and theirs.token_bytes(i) == ours.token_bytes(i), i
    assert theirs.decode(range(tokens, tokens + 37)) == ""
    specials = [t.content for t in hf.get_added_tokens_decoder().values()] + ["[PAD1510]"]
    texts = random.Random(seed)
    for _ in range(100):
        text = text_tokenizers.random_text(texts, specials)
        assert theirs.encode(text) == ours.encode(text) == hf.encode(text, add_special_tokens=False).ids, text
    back = tmp_path / "back.gguf"  # pxgl's export pads as convert_hf_to_gguf.py does; it reads back the same
    assert pxgl(monkeypatch, capsys, "export", "-m", str(tmp_path / "g.pxi"), "-o", str(back))[0] == 0
    assert pxgl(monkeypatch, capsys, "import", str(back), "-o", str(tmp_path / "again.pxi"))[0] == 0
    assert (tmp_path / "again.tokenizer.json").read_bytes() == (tmp_path / "g.tokenizer.json").read_bytes()


@pytest.mark.parametrize(
    "types_at, message",
    [
        ({7: 0}, "token_type[7] is 0; llama.cpp's types are 1 (normal)"),
        ({7: 7}, "token_type[7] is 7; llama.cpp's types are 1 (normal)"),
        ({7: -1}, "token_type[7] is -1; llama.cpp's types are 1 (normal)"),
        ({7: UNUSED}, "token_type[7] is 5 (unused) but id 1504 after it is used"),
    ],
)
def test_a_gguf_token_type_pxgl_cannot_read_is_one_line(types_at, message, tmp_path, seed, monkeypatch, capsys):
    """A type outside llama.cpp's 1..6 was read as a normal piece; an unused id among used ones has no pxgl form
    (§6.1's padding follows the last token)."""
    hf = text_tokenizers.qwen2()
    tokens = hf.get_vocab_size(with_added_tokens=True)
    meta = hf_meta("qwen2", vocab=tokens + 3)
    rng = np.random.default_rng(seed)
    keys = convert_keys(json.loads(hf.to_str()), tokens + 3, "qwen2", 0, types_at)
    write_gguf(tmp_path / "model.gguf", "qwen2", meta, random_weights(meta, rng), T.Q8_0, rng, keys)
    code, _, err = pxgl(monkeypatch, capsys, "import", str(tmp_path / "model.gguf"), "-o", str(tmp_path / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


@pytest.mark.parametrize(
    "name, with_tokenizer",
    [("tokenizer_config.json", True), ("tokenizer_config.json", False), ("generation_config.json", True)],
)
def test_settings_that_are_not_an_object_are_one_line(name, with_tokenizer, saved, tmp_path, monkeypatch, capsys):
    """A tokenizer_config.json (or generation_config.json) of `[]` was read as no settings: its add_bos_token,
    bos and eos lost without a word."""
    folder = Path(shutil.copytree(saved, tmp_path / "folder"))
    (folder / name).write_text("[]")
    if not with_tokenizer:
        (folder / "tokenizer.json").unlink()
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = pxgl(monkeypatch, capsys, "import", str(folder), "-o", str(out / "m.pxi"))
    assert code == 2 and err.count("\n") == 1 and f"{name}: not a JSON object" in err, err
    assert list(out.iterdir()) == []
