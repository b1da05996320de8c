"""Tokenizing cost against the text's length (docs/FORMATS.md §6): one word of random letters with no space
(a single chunk, the encoder's worst case: nothing to cache, every merge inside one list) and ordinary
words, from 64 KiB to 4 MiB, doubling. For each length: seconds (best of `--repeats`), µs a byte and
seconds / (n log2 n), and the ratio to the half length's time — about 2 (a little over, the log) when
encoding is n log n, about 4 when it is quadratic. Each encoding must decode back to its text.

    python -m bench.tokenize                       # pixellm_v1's tokenizer, 64 KiB .. 4 MiB
    python -m bench.tokenize --model pixellm_v0 --largest 1048576

Writes bench/results/tokenize-<host>-<date>.md. Not a test: the suite runs nothing here."""

import argparse
import math
import platform
import string
import time
from datetime import date
from pathlib import Path

import numpy as np
from pxgl.resources import resource_dir
from pxgl.tokenizer import Tokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def texts(rng: np.random.Generator, length: int) -> dict[str, str]:
    letters = np.array(list(string.ascii_lowercase))
    word = "".join(rng.choice(letters, length))
    spaced = np.array(list(word))
    spaced[rng.random(length) < 1 / 6] = " "  # words of about 5 letters
    return {"one word": word, "words": "".join(spaced)}


def best_seconds(tokenizer: Tokenizer, text: str, repeats: int) -> float:
    """The fastest of `repeats` encodings, each on a fresh tokenizer (no chunk cached from the last)."""
    times = []
    for _ in range(repeats):
        fresh = Tokenizer(tokenizer.merges)
        start = time.perf_counter()
        ids = fresh.encode(text)
        times.append(time.perf_counter() - start)
        if fresh.decode(ids) != text:
            raise SystemExit("the encoding does not decode back to its text")
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pixellm_v1", help="a bundled model whose tokenizer is timed")
    parser.add_argument("--smallest", type=int, default=1 << 16)
    parser.add_argument("--largest", type=int, default=1 << 22)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tokenizer = Tokenizer.load(resource_dir("assets") / f"{args.model}.tokenizer.json")
    rng = np.random.default_rng(args.seed)
    lines = [
        f"# Tokenizing time against length ({args.model}'s tokenizer, {tokenizer.vocab_size} tokens)",
        "",
        f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{date.today()}, best of {args.repeats}, seed {args.seed}. `python -m bench.tokenize`",
        "",
        "| text | bytes | seconds | µs a byte | ns / (n log2 n) | time / the half length's |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    previous: dict[str, float] = {}
    length = args.smallest
    while length <= args.largest:
        for kind, text in texts(rng, length).items():
            seconds = best_seconds(tokenizer, text, args.repeats)
            growth = f"{seconds / previous[kind]:.2f}" if kind in previous else "—"
            per_n_log_n = seconds / (length * math.log2(length)) * 1e9
            lines.append(
                f"| {kind} | {length:,} | {seconds:.3f} | {seconds / length * 1e6:.2f} | {per_n_log_n:.1f} | {growth} |"
            )
            print(lines[-1], flush=True)
            previous[kind] = seconds
        length *= 2
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"tokenize-{platform.node()}-{date.today()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
