"""Issue 27's large members on a GPU machine: a GPT-2-124M-shaped model at f16 (its weights span two images,
FORMATS §14.7) and a TinyLlama-1.1B-shaped q8 model (22 layers of width 2,048, 32/4 heads, vocabulary 32,000:
six images).
Each is written as its file set, read back through the bounded reader (the load time), uploaded to each GPU
executor (the upload time and the GPU memory it took, from nvidia-smi where there is one), and generates 32
greedy tokens after a 16-token prompt, checked against the independent oracle's teacher-forced replay
(tests/reference/transformer.py over the generated sequence: each token the oracle's argmax, or a near-tie).
Random weights: no pretrained transformer can be fetched on these machines. Prints and writes one JSON object.

    python -m bench.transformer_large [--members gpt2-124m-f16 tinyllama-1.1b-q8] [--out FILE.json]
"""

import argparse
import datetime
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from pxgl.gl import GLBackend
from pxgl.transformer import TransformerArchitecture, read_transformer, save_transformer
from pxgl.transformer.files import random_layout
from pxgl.transformer.fused import FusedTransformer
from pxgl.transformer.gpu import PassesTransformer
from pxgl.transformer.meta import Rope

from bench.transformer_passes import SHAPES
from tests.reference import transformer as oracle

HEAD_GAIN = 4.0
"""The output head's scale (as the agreement tests): margins wide against the tolerance."""
TINYLLAMA = {"norm_kind": "rmsnorm", "norm_eps": 1e-5, "rope": Rope(10000.0, "halves"), "tied_head": False}
TINYLLAMA |= {"mlp_kind": "silu_gated", "biases": frozenset(), "vocab_size": 32000, "context_length": 2048}
TINYLLAMA |= {"width": 2048, "layers": 22, "heads": 32, "kv_heads": 4, "head_dim": 64, "attention_scale": 0.125}
TINYLLAMA |= {"mlp_width": 5632}
MEMBERS = {
    "gpt2-124m-f16": (SHAPES["gpt2-124m"], "f16"),
    "tinyllama-1.1b-q8": (TINYLLAMA, "q8"),
}
EXECUTORS = {"passes": PassesTransformer, "fused": FusedTransformer}
PROMPT, STEPS = 16, 32


def gpu_memory_mib() -> int | None:
    """Memory in use on GPU 0 (every process), or None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"]
    return int(subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()[0])


def run_member(name: str, gpu: GLBackend, folder: Path, seed: int) -> dict:
    shape, quant = MEMBERS[name]
    architecture = TransformerArchitecture(**shape)
    began = time.perf_counter()
    spec, stream = random_layout(architecture, quant, seed, head_gain=HEAD_GAIN)
    path = folder / f"{name}.pxi"
    save_transformer(path, spec, stream)
    written = time.perf_counter() - began
    del stream
    began = time.perf_counter()
    spec, stream = read_transformer(path)
    loaded = time.perf_counter() - began
    record = {"quant": quant, "images": len(spec.images), "weight_bytes": int(stream.size)}
    record |= {"write_s": round(written, 1), "load_s": round(loaded, 1)}
    prompt = np.random.default_rng(seed).integers(0, architecture.vocab_size, PROMPT)
    meta = json.loads(json.dumps(spec.to_meta()))
    params = oracle.dequantize(meta, stream)
    for executor, build in EXECUTORS.items():
        before = gpu_memory_mib()
        began = time.perf_counter()
        model = build(gpu, spec, stream)
        gpu.wait_for_gpu()
        uploaded = time.perf_counter() - began
        after = gpu_memory_mib()
        try:
            began = time.perf_counter()
            generated = np.asarray(model.generate(prompt, STEPS))
            generated_s = time.perf_counter() - began
            cache_bytes = model.cache_bytes
        finally:
            model.close()
        theirs = oracle.forward(meta, params, np.concatenate([prompt, generated[:-1]]))[PROMPT - 1 :]
        ties = oracle.near_tie(theirs)
        differ = np.flatnonzero((generated != theirs.argmax(axis=1)) & ~ties)
        record[executor] = {
            "upload_s": round(uploaded, 2),
            "gpu_memory_mib": None if before is None or after is None else after - before,
            "kv_cache_bytes": cache_bytes,
            "generate_s": round(generated_s, 2),
            "tokens": generated.tolist(),
            "near_ties": int(ties.sum()),
            "oracle_agrees": not len(differ),
            "first_difference": None if not len(differ) else int(differ[0]),
        }
        print(name, executor, record[executor], flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", choices=MEMBERS, default=list(MEMBERS))
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gpu = GLBackend()
    result = {"device": gpu.renderer, "date": datetime.date.today().isoformat(), "seed": args.seed}
    result |= {"prompt": PROMPT, "steps": STEPS}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.members:
            result[name] = run_member(name, gpu, Path(folder), args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
