"""GGUF files made by llama.cpp's own tools, through pxgl (docs/FORMATS.md §10.3) — a one-off, not CI: the files
are not committed. For each `<name>-<type>.gguf` of a folder (the Hugging Face folder it was converted from at
`hf/<name>/`, as the llamacpp helper's folder has them):

- `pxgl import`: seconds and peak memory (its own process);
- the error the import adds: the oracle's logits (tests/reference/transformer.py) of the imported model against
  the oracle's logits of the file's own dequantized values under llama.cpp's reading of them (gpt2's fused
  q/k/v split, llama's adjacent-pair rotation), teacher-forced on random ids;
- the tokenizer: pxgl's ids against `tokenizers` on the folder's tokenizer.json, over varied texts, and decoding;
- `pxgl export --format gguf` then import: the same weights and tokenizer; with `--llama-cpp BIN`, llama.cpp's
  `llama-quantize` loads the export and `llama-tokenize` gives the same ids on it as on the original file.

Prints a markdown table; `-o STEM` also writes STEM.json and STEM.md.

    python -m bench.gguf_files /work/wt/gguf-files --llama-cpp /work/wt/llama.cpp-src/build/bin -o STEM
"""

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np
from pxgl.tokenizer import Tokenizer
from pxgl.transformer.files import read_transformer
from tokenizers import Tokenizer as HFTokenizer

from tests.cli_process import PEAK_MEMORY
from tests.gguf_files import computed
from tests.reference import transformer as oracle
from tests.text_tokenizers import random_text

LLAMA_CPP_TEXT = "Hello world! 123 café  naïve\tdef f(x):\n    return x**2 <|im_end|> 日本語"


def pxgl(*args: str) -> tuple[float, int]:
    """Run `pxgl ARGS`; (seconds, peak resident bytes)."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", PEAK_MEMORY, *args], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"pxgl {' '.join(args)}: {run.stderr.strip()[-400:]}")
    return time.perf_counter() - start, int(run.stderr.split()[-1])


def added_error(source: Path, model: Path, rng: np.random.Generator, positions: int) -> dict:
    meta = json.loads(model.with_name(model.stem + ".meta.json").read_text())
    stream = read_transformer(model)[1]
    reader = gguf.GGUFReader(source)
    truth = {t.name: gguf.quants.dequantize(np.asarray(t.data), t.tensor_type) for t in reader.tensors}
    arch = str(reader.fields["general.architecture"].contents())
    shape = {k: v for k, v in meta.items() if k not in ("image", "images", "tensors", "files", "tokenizer", "bos")}
    run_meta, params = computed(arch, shape, {k: np.asarray(v, np.float32) for k, v in truth.items()})
    ids = rng.integers(0, meta["vocab_size"], positions)
    reference, ours = oracle.forward(run_meta, params, ids), oracle.forward(meta, oracle.dequantize(meta, stream), ids)
    delta = np.abs(reference - ours)
    quants = sorted({t["quant"] for name, t in meta["tensors"].items() if len(t["shape"]) == 2})
    return {
        "matrices": quants,
        "max_delta": float(delta.max()),
        "rms_delta_of_rms": float(np.sqrt((delta**2).mean() / (reference**2).mean())),
        "top1_equal": float((reference.argmax(1) == ours.argmax(1)).mean()),
        "max_logit": float(np.abs(reference).max()),
    }


def tokenizer_agreement(model: Path, folder: Path, texts: int, seed: int) -> dict:
    ours = Tokenizer.load(model.with_name(model.stem + ".tokenizer.json"))
    theirs = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    specials = [t.content for t in theirs.get_added_tokens_decoder().values()]
    rng, ids_equal, decoded_equal = random.Random(seed), 0, 0
    for _ in range(texts):
        text = random_text(rng, specials)
        expected = theirs.encode(text, add_special_tokens=False).ids
        ids_equal += ours.encode(text) == expected
        decoded_equal += ours.decode(expected) == theirs.decode(expected, skip_special_tokens=False)
    return {"texts": texts, "ids_equal": ids_equal, "decoded_equal": decoded_equal}


def llama_cpp_tokens(binaries: Path, file: Path) -> list[int]:
    run = subprocess.run(
        [str(binaries / "llama-tokenize"), "-m", str(file), "-p", LLAMA_CPP_TEXT, "--ids", "--log-disable"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def round_trip(source: Path, model: Path, work: Path, binaries: Path | None) -> dict:
    exported, back = work / f"{model.stem}.out.gguf", work / f"{model.stem}.back.pxi"
    pxgl("export", "-m", str(model), "--format", "gguf", "-o", str(exported), "--force")
    pxgl("import", str(exported), "-o", str(back), "--force", "--json")
    same_weights = back.read_bytes() == model.read_bytes()
    tokenizers = [p.with_name(p.stem + ".tokenizer.json") for p in (model, back)]
    record = {"same_weights": same_weights, "same_tokenizer": tokenizers[0].read_bytes() == tokenizers[1].read_bytes()}
    if binaries is not None:
        quantized = work / f"{model.stem}.llama-quantize.gguf"
        run = subprocess.run(
            [str(binaries / "llama-quantize"), str(exported), str(quantized), "Q8_0"], capture_output=True, timeout=600
        )
        record["llama_quantize_loads"] = run.returncode == 0
        record["llama_tokenize_equal"] = llama_cpp_tokens(binaries, exported) == llama_cpp_tokens(binaries, source)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--llama-cpp", type=Path, help="the folder of llama-quantize and llama-tokenize")
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261208)
    parser.add_argument("-o", "--out", help="STEM: write STEM.json and STEM.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for source in sorted(args.folder.glob("*.gguf")):
            name = source.stem.rpartition("-")[0]
            model = work / f"{source.stem}.pxi"
            seconds, peak = pxgl("import", str(source), "-o", str(model), "--json")
            row = {"file": source.name, "bytes": source.stat().st_size, "import_s": seconds, "peak_mib": peak >> 20}
            row |= added_error(source, model, np.random.default_rng(args.seed), args.positions)
            row |= tokenizer_agreement(model, args.folder / "hf" / name, args.texts, args.seed)
            row |= round_trip(source, model, work, args.llama_cpp)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    header = (
        "| file | import s | peak MiB | matrices | max Δ | RMS Δ / RMS | top-1 | tokenizer ids / decode | round trip |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        trip = "same" if r["same_weights"] and r["same_tokenizer"] else "DIFFERS"
        if "llama_quantize_loads" in r:
            trip += f"; llama.cpp loads {r['llama_quantize_loads']}, tokenizes equal {r['llama_tokenize_equal']}"
        lines.append(
            f"| {r['file']} | {r['import_s']:.1f} | {r['peak_mib']} | {', '.join(r['matrices'])} "
            f"| {r['max_delta']:.2e} | {r['rms_delta_of_rms']:.3%} | {r['top1_equal']:.3f} "
            f"| {r['ids_equal']}/{r['texts']} {r['decoded_equal']}/{r['texts']} | {trip} |"
        )
    manifest = args.folder / "MANIFEST.md"  # its first line names the llama.cpp commit that made the files
    made = manifest.read_text().splitlines()[0].lstrip("# ") + "; " if manifest.exists() else ""
    about = f"{made}{platform.node()}, Python {platform.python_version()}, seed {args.seed}, {args.positions} positions"
    table = "\n".join(lines) + f"\n\n{about}\n"
    print(table)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps({"about": about, "rows": rows}, indent=1) + "\n")
        Path(args.out + ".md").write_text(f"# GGUF files from llama.cpp's tools through pxgl\n\n{table}")


if __name__ == "__main__":
    main()
