"""Version-1 tokenizers (docs/FORMATS.md §6.1) on real vocabularies: llama.cpp's `models/ggml-vocab-*.gguf`
(the vocabularies and merges of GPT-2, Llama 3, Qwen2, Qwen3.5, StarCoder/SmolLM; Llama 2's and Phi-3's
SentencePiece pieces and scores) with their `.gguf.inp` texts and `.gguf.out` ids, which llama.cpp's
convert_hf_to_gguf_update.py wrote with transformers' `tokenizer.encode(text, add_special_tokens=False)`.
Each vocabulary is built into a TextTokenizer with the normalizer, pre-tokenizer and decoder of its model's
tokenizer.json (the table below; a SentencePiece model's merges made from its scores as transformers'
converter makes them), and every text's ids must be the file's.

    python -m bench.text_tokenizer_vocabs --models LLAMA_CPP_CHECKOUT/models

Writes bench/results/text_tokenizer_vocabs-<host>-<date>.md. Not a test (the files are not pxgl's)."""

import argparse
import platform
from datetime import date
from pathlib import Path
from typing import Any

from gguf import GGUFReader
from pxgl.text_tokenizer import AddedToken, TextTokenizer

RESULTS = Path(__file__).resolve().parent / "results"
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN35 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BYTE_LEVEL = {"type": "byte_level", "add_prefix_space": False, "use_regex": True}
BYTES_ONLY = {"type": "byte_level", "add_prefix_space": False, "use_regex": False}
NFC = {"type": "nfc"}


def split(pattern: str) -> dict[str, Any]:
    return {"type": "split", "pattern": pattern, "behavior": "isolated", "invert": False}


BYTE_LEVEL_LAYOUTS = {  # vocabulary: (normalizer, pre-tokenizer, ignore_merges), as each model's tokenizer.json
    "gpt-2": ([], [BYTE_LEVEL], False),
    "llama-bpe": ([], [split(LLAMA3), BYTES_ONLY], True),
    "qwen2": ([NFC], [split(QWEN2), BYTES_ONLY], False),
    "qwen35": ([], [split(QWEN35), BYTES_ONLY], False),
    "starcoder": ([], [{"type": "digits", "individual": True}, BYTE_LEVEL], False),
}
SENTENCEPIECE = ("llama-spm", "phi-3")
CONTROL, USER_DEFINED, UNKNOWN = 3, 4, 2


def field(reader: GGUFReader, name: str) -> list[Any]:
    f = reader.fields[name]
    if f.types[-1].name == "STRING":
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return [f.parts[i][0].item() for i in f.data]


def byte_level(path: Path, layout: tuple[list, list, bool]) -> TextTokenizer:
    reader = GGUFReader(path)
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    ids = {t: i for i, t in enumerate(tokens)}
    pieces = len(tokens)
    while pieces and types[pieces - 1] in (CONTROL, USER_DEFINED):  # the added tokens past the model's pieces
        pieces -= 1
    added = [
        AddedToken(i, t, special=k == CONTROL)
        for i, (t, k) in enumerate(zip(tokens, types, strict=True))
        if k in (CONTROL, USER_DEFINED)
    ]
    merges = [tuple(ids[p] for p in m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    normalizer, pre_tokenizer, ignore_merges = layout
    return TextTokenizer(
        "byte-level",
        tokens[:pieces],
        merges,
        ignore_merges=ignore_merges,
        normalizer=normalizer,
        pre_tokenizer=pre_tokenizer,
        decoder=[{"type": "byte_level"}],
        added_tokens=added,
        where=str(path),
    )


def sentencepiece(path: Path) -> TextTokenizer:
    """Llama 2's tokenizer.json layout; merges from the pieces' scores as transformers' SentencePiece
    converter makes them (every split of a piece into two pieces, by score, then by the halves' lengths)."""
    reader = GGUFReader(path)
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    scores = field(reader, "tokenizer.ggml.scores")
    ids = {t: i for i, t in enumerate(tokens)}
    merges: list[tuple[str, str, float]] = []
    for piece, score in zip(tokens, scores, strict=True):
        halves = [(piece[:k], piece[k:], score) for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]
        merges.extend(sorted(halves, key=lambda h: (ids[h[0]], ids[h[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    added = [
        AddedToken(i, t, special=True)
        for i, (t, k) in enumerate(zip(tokens, types, strict=True))
        if k in (UNKNOWN, CONTROL)
    ]
    return TextTokenizer(
        "sentencepiece",
        tokens,
        [(ids[a], ids[b]) for a, b, _ in merges],
        unk_id=ids["<unk>"],
        byte_fallback=True,
        fuse_unk=True,
        normalizer=[{"type": "prepend", "content": "▁"}, {"type": "replace", "pattern": " ", "content": "▁"}],
        decoder=[
            {"type": "replace", "pattern": "▁", "content": " "},
            {"type": "byte_fallback"},
            {"type": "fuse"},
            {"type": "strip", "content": " ", "start": 1, "stop": 0},
        ],
        added_tokens=added,
        where=str(path),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="llama.cpp's models/ folder")
    args = parser.parse_args()
    lines = [
        "# Version-1 tokenizers on llama.cpp's real vocabularies",
        "",
        f"{platform.node()}, Python {platform.python_version()}, {date.today()}. "
        "`python -m bench.text_tokenizer_vocabs --models LLAMA_CPP/models`",
        "",
        "| vocabulary | kind | ids | merges | added | texts with transformers' ids |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name in [*BYTE_LEVEL_LAYOUTS, *SENTENCEPIECE]:
        path = args.models / f"ggml-vocab-{name}.gguf"
        tokenizer = sentencepiece(path) if name in SENTENCEPIECE else byte_level(path, BYTE_LEVEL_LAYOUTS[name])
        texts = path.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
        expected = path.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
        equal = 0
        for text, line in zip(texts, expected, strict=False):
            ids = tokenizer.encode(text)
            if ids == [int(x) for x in line.split()]:
                equal += 1
            else:
                print(f"{name}: {text[:40]!r} gave {ids[:10]}, transformers {line[:60]}")
        lines.append(
            f"| {name} | {tokenizer.kind} | {tokenizer.vocab_size:,} | {len(tokenizer.merges):,} "
            f"| {len(tokenizer.added_tokens)} | {equal}/{len(texts)} |"
        )
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"text_tokenizer_vocabs-{platform.node()}-{date.today()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
