"""Version-1 tokenizers (docs/FORMATS.md §6.1) against Hugging Face `tokenizers` on 1 MiB texts: for each real
layout (GPT-2, SmolLM2, Qwen2, TinyLlama, built and trained as the tests build them), pxgl's encode and
decode of the varied test text (many scripts, emoji, whitespace runs, code, special tokens) and of one long
word with no space (a single pre-token: the BPE's worst case), against tokenizers' own encode of the same
text in one call; the ids must be equal. Seconds are the best of `--repeats`, each on a fresh tokenizer (no
pre-token cached).

    python -m bench.text_tokenizer [--bytes 1048576] [--repeats 3]

Writes bench/results/text_tokenizer-<host>-<date>.md. Not a test: the suite runs nothing here."""

import argparse
import platform
import random
import string
import tempfile
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from pxgl.text_tokenizer.hf import tokenizer_from_hf

from tests.text_tokenizers import SPECIALS, random_text, write_folder

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("gpt2", "smollm2", "qwen2", "tinyllama")


def texts(rng: random.Random, size: int, specials: list[str]) -> dict[str, str]:
    varied = ""
    while len(varied.encode("utf-8")) < size:
        varied += random_text(rng, specials, long=True)
    return {"varied": varied, "one word": "".join(rng.choices(string.ascii_lowercase, k=size))}


def best(repeats: int, run: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def fresh_encode(folder: Path, text: str, repeats: int) -> tuple[float, list[int]]:
    """The fastest of `repeats` encodings, each by a tokenizer read anew (nothing cached), its reading untimed."""
    times, ids = [], []
    for _ in range(repeats):
        tokenizer = tokenizer_from_hf(folder)
        start = time.perf_counter()
        ids = tokenizer.encode(text)
        times.append(time.perf_counter() - start)
    return min(times), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=1 << 20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    lines = [
        f"# Version-1 tokenizers against tokenizers, {args.bytes:,}-byte texts",
        "",
        f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{date.today()}, best of {args.repeats}, seed {args.seed}. `python -m bench.text_tokenizer`",
        "",
        "| layout | text | ids | pxgl encode s | MB/s | tokenizers encode s | pxgl decode s | ids equal |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    with tempfile.TemporaryDirectory() as root:
        for name in NAMES:
            reference = write_folder(name, Path(root) / name)
            for kind, text in texts(rng, args.bytes, SPECIALS[name]).items():
                seconds, ids = fresh_encode(Path(root) / name, text, args.repeats)
                theirs, encoding = best(args.repeats, partial(reference.encode, add_special_tokens=False), text)
                decode, _ = best(args.repeats, tokenizer_from_hf(Path(root) / name).decode, ids)
                expected = encoding.ids
                size = len(text.encode("utf-8"))
                lines.append(
                    f"| {name} | {kind} | {len(ids):,} | {seconds:.2f} | {size / seconds / 1e6:.2f} | {theirs:.2f} "
                    f"| {decode:.2f} | {ids == expected} |"
                )
                print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"text_tokenizer-{platform.node()}-{date.today()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
