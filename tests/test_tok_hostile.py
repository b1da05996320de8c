"""Hostile tokenizer files (issue 28 item 6, docs/FORMATS.md §6.1 caps): a model folder's tokenizer.json and
pxgl's own version-1 file. Each is refused in one line with exit status 2, writes nothing, and the process's
peak memory stays within the file's size + 200 MB. The driver reads the folder as `pxgl import` does (through
tokenizer_from_hf) and reports as pxgl's CLI does (engine/cli's fail)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from pxgl.errors import PxglError
from pxgl.text_tokenizer import TextTokenizer
from pxgl.text_tokenizer.hf import tokenizer_from_hf
from pxgl.tokenizer import Tokenizer

DRIVER = """
import re, sys
from pathlib import Path
from pxgl.cli import fail
from pxgl.errors import PxglError

try:
    if sys.argv[1] == "hf":
        from pxgl.text_tokenizer.hf import tokenizer_from_hf
        tokenizer_from_hf(Path(sys.argv[2]))
    else:
        from pxgl.tokenizer import Tokenizer
        Tokenizer.load(sys.argv[2])
    print("read")
except PxglError as e:
    fail(str(e))
finally:
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) << 10, file=sys.stderr)
"""
MB = 1 << 20
IN_A_PROCESS = ("a million merges", "a 100 MB vocabulary", "a million pieces", "a pathological split pattern")
"""The cases whose memory or time is the point run in a process of their own (exit status, peak memory)."""


def gpt2_like(**changes) -> dict:
    """A small valid tokenizer.json (byte-level BPE), with `changes` merged into its top level or model."""
    alphabet = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab["ab"] = len(vocab)
    doc = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": len(vocab),
                "content": "<|end|>",
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            },
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["a b"], "unk_token": None, "byte_fallback": False},
    }
    for key, value in changes.items():
        if key in doc["model"]:
            doc["model"][key] = value
        else:
            doc[key] = value
    return doc


def split(pattern: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def write_big_vocab(path: Path) -> None:
    """Under the 16 MiB cap, a vocabulary of a million tiny pieces: refused before it is parsed."""
    entries = ",".join(f'"{i:x}":{i}' for i in range(1_000_000))
    path.write_text('{"model": {"type": "BPE", "merges": [], "vocab": {' + entries + "}}}")


CASES = {
    "a million merges": (
        lambda p: p.write_text(json.dumps(gpt2_like(merges=["a b"] * 1_000_000))),
        "1000000 merges for a vocabulary of 95; at most 4 a piece",
    ),
    "merges past the pieces": (lambda p: p.write_text(json.dumps(gpt2_like(merges=["a b"] * 400))), "400 merges for"),
    "a 100 MB vocabulary": (
        lambda p: (p.write_text('{"model": {"vocab": {'), _grow(p, 100 * MB)),
        "past the tokenizer file's limit",
    ),
    "a million pieces": (write_big_vocab, "JSON object keys; a tokenizer file holds at most"),
    "a pathological split pattern": (
        lambda p: p.write_text(json.dumps(gpt2_like(pre_tokenizer=split(r"(a|aa)+$")))),
        "backtracks without end",
    ),
    "a pattern that does not compile": (
        lambda p: p.write_text(json.dumps(gpt2_like(pre_tokenizer=split(r"(unclosed")))),
        "does not compile",
    ),
    "a vocabulary with a hole": (
        lambda p: p.write_text(json.dumps(gpt2_like(vocab={"a": 0, "b": 2, "ab": 3}))),
        "ids must be 0..2, each once",
    ),
    "a merge of pieces not in the vocabulary": (
        lambda p: p.write_text(json.dumps(gpt2_like(merges=["a zz"]))),
        "is not two pieces of the vocabulary",
    ),
    "a merge whose result is missing": (
        lambda p: p.write_text(json.dumps(gpt2_like(merges=["a c"]))),
        "which is not in the vocabulary",
    ),
    "a piece of 2 KiB": (
        lambda p: p.write_text(json.dumps(gpt2_like(vocab={"a": 0, "b": 1, "ab": 2, "x" * 2048: 3}, added_tokens=[]))),
        "is 2048 bytes; at most 1024",
    ),
    "an added token's id not the one tokenizers gives": (
        lambda p: p.write_text(json.dumps(gpt2_like(added_tokens=[dict(gpt2_like()["added_tokens"][0], id=200)]))),
        "is written with id 200, but tokenizers gives it 95",
    ),
    "an unknown pre-tokenizer": (
        lambda p: p.write_text(json.dumps(gpt2_like(pre_tokenizer={"type": "Whitespace"}))),
        "the pre-tokenizer 'Whitespace' is not one pxgl reads",
    ),
    "a Unigram model": (lambda p: p.write_text(json.dumps({"model": {"type": "Unigram"}})), "BPE tokenizers only"),
    "an end-of-sequence template": (
        lambda p: p.write_text(
            json.dumps(
                gpt2_like(
                    post_processor={
                        "type": "TemplateProcessing",
                        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|end|>"}}],
                    }
                )
            )
        ),
        "adds tokens after the text",
    ),
    "nesting 10,000 deep": (lambda p: p.write_text("[" * 10_000 + "]" * 10_000), "nested too deeply"),
    "not UTF-8": (lambda p: p.write_bytes(b'{"model": "\xff"}'), "as UTF-8 text"),
}


def _grow(path: Path, size: int) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)


def run_driver(kind: str, path: Path) -> tuple[subprocess.CompletedProcess, int]:
    """The driver's run (its stderr without the last line) and its peak resident bytes (that line)."""
    run = subprocess.run([sys.executable, "-c", DRIVER, kind, str(path)], capture_output=True, text=True)
    *lines, peak = run.stderr.strip().splitlines()
    run.stderr = "\n".join(lines)
    return run, int(peak)


@pytest.mark.parametrize("case", CASES)
def test_hostile_tokenizer_json_is_one_line(case: str, tmp_path: Path) -> None:
    make, message = CASES[case]
    folder = tmp_path / "model"
    folder.mkdir()
    make(folder / "tokenizer.json")
    before = sorted(tmp_path.rglob("*"))
    if case in IN_A_PROCESS:
        run, peak = run_driver("hf", folder)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run.stderr
        size = (folder / "tokenizer.json").stat().st_size
        assert peak <= min(size, 16 * MB) + 200 * MB, (case, peak / MB)
    else:
        with pytest.raises(PxglError) as caught:
            tokenizer_from_hf(folder)
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(gpt2_like()))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").symlink_to(outside)
    run, _ = run_driver("hf", folder)
    assert run.returncode == 2 and "a link leading out of the folder" in run.stderr, run.stderr
    assert len(run.stderr.splitlines()) == 1


def test_the_valid_base_reads(tmp_path: Path) -> None:
    """The cases above break a file that is otherwise read (so each refusal is the one named)."""
    (tmp_path / "tokenizer.json").write_text(json.dumps(gpt2_like()))
    run, _ = run_driver("hf", tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == "read", run.stderr


def good_v1() -> dict:
    return {
        "format": "pxgl-bpe",
        "version": 1,
        "vocab_size": 4,
        "kind": "sentencepiece",
        "vocab": ["a", "b", "ab", "<0x41>"],
        "merges": [[0, 1]],
        "unk_id": None,
        "byte_fallback": True,
        "fuse_unk": False,
        "ignore_merges": False,
        "normalizer": [],
        "pre_tokenizer": [],
        "decoder": [],
        "added_tokens": [],
        "bos_id": None,
        "eos_ids": [],
        "add_bos": False,
        "chat_template": None,
    }


V1_CASES = {
    "merges past the pieces": ({"merges": [[0, 1]] * 17}, "17 merges for 4 pieces"),
    "a repeated piece": ({"vocab": ["a", "b", "ab", "a"]}, "appears twice"),
    "a repeated merge": ({"vocab": ["a", "b", "ab", "c"], "merges": [[0, 1], [0, 1]]}, "repeats the pair"),
    "an added id past a gap": (
        {
            "added_tokens": [
                {
                    "id": 9,
                    "content": "<s>",
                    "special": True,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "single_word": False,
                }
            ]
        },
        "must run 4, 5",
    ),
    "an unknown step": ({"decoder": [{"type": "lowercase"}]}, "decoder step 0 must be an object whose type"),
    "an extra key": ({"vocab": ["a", "b", "ab", "c"], "bos": 1}, "has exactly the keys"),
    "a vocab_size below the tokens": ({"vocab_size": 3}, "vocab_size 3 must be an integer in 4..1048576"),
    "a bos past the vocabulary": ({"bos_id": 4, "add_bos": True}, "bos_id 4 is not an id in 0..3"),
    "a long split pattern": (
        {"pre_tokenizer": [{"type": "split", "pattern": "a" * 5000, "behavior": "isolated", "invert": False}]},
        "a split pattern of 5000 characters",
    ),
}


@pytest.mark.parametrize("case", V1_CASES)
def test_hostile_version_1_file_is_one_line(case: str) -> None:
    change, message = V1_CASES[case]
    with pytest.raises(PxglError) as caught:
        Tokenizer.loads(json.dumps(good_v1() | change), "t.tokenizer.json")
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_merges_by_the_hundred_thousand_in_a_version_1_file(tmp_path: Path) -> None:
    """6 MB of merges (ids past 256: a new int object each) for 4 pieces: refused within its size + 200 MB."""
    path = tmp_path / "t.tokenizer.json"
    path.write_text(json.dumps(good_v1() | {"merges": [[123456, 654321]] * 400_000}, separators=(",", ":")))
    run, peak = run_driver("pxgl", path)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1
    assert "400000 merges for 4 pieces" in run.stderr and peak <= path.stat().st_size + 200 * MB, peak / MB
    assert isinstance(Tokenizer.loads(json.dumps(good_v1()), "good"), TextTokenizer)


ODD_VALUES = [None, True, -1, 0, 2**40, 1.5, "", "x", "<|end|>", [], [1], ["a", "b"], {}, {"type": "BPE"}]


def mutate(doc, rng: random.Random):
    """doc with one value somewhere inside replaced by an odd one, or one key removed."""
    doc = json.loads(json.dumps(doc))
    node, path = doc, []
    while isinstance(node, (dict, list)) and node and rng.random() < 0.75:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append((node, key))
        node = node[key]
    if not path:
        return doc
    parent, key = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = rng.choice(ODD_VALUES)
    return doc


def test_mutated_files_are_read_or_refused_in_one_line(tmp_path: Path, seed: int) -> None:
    """Any one value of a valid tokenizer.json, or of pxgl's own file, made odd: the file is read or refused
    with a PxglError, never another exception."""
    rng = random.Random(seed)
    base = gpt2_like(
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Prepend", "prepend": "▁"}]},
        pre_tokenizer={"type": "Sequence", "pretokenizers": [split(r"\s+"), {"type": "Digits"}, {"type": "Metaspace"}]},
        decoder={"type": "Sequence", "decoders": [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    )
    ours = tokenizer_from_hf_doc(base, tmp_path / "base")
    for i in range(150):
        folder = tmp_path / str(i)
        try:
            tokenizer = tokenizer_from_hf_doc(mutate(base, rng), folder)
            tokenizer.decode(tokenizer.encode("a <|end|> b 12"))
        except PxglError as e:
            assert "\n" not in str(e)
        try:
            Tokenizer.loads(json.dumps(mutate(ours.to_json(), rng)), "t.tokenizer.json")
        except PxglError as e:
            assert "\n" not in str(e)


def tokenizer_from_hf_doc(doc, folder: Path) -> TextTokenizer:
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(doc))
    return tokenizer_from_hf(folder)
