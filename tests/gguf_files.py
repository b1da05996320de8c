"""Small GGUF files for the tests, written with llama.cpp's own `gguf` package the way its convert_hf_to_gguf.py
writes gpt2, llama and qwen2 models (gpt2's q, k, v fused into attn_qkv; llama's query/key rows permuted for
the adjacent-pair rotation), from random weights — and what they compute, as the oracle's (meta, params):
the file's own dequantized values, read back with `gguf`, under llama.cpp's rotation (`pairs` for llama,
`halves` for qwen2). Independent of engine/gguf."""

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from tests.reference import transformer as oracle

T = gguf.GGMLQuantizationType
SHAPES = {
    "gpt2": {"mlp": "gelu_tanh", "norm": "layernorm", "positions": "learned", "biases": ("qkv", "attn_out", "mlp")},
    "llama": {"mlp": "silu_gated", "norm": "rmsnorm", "positions": "rope", "biases": ()},
    "qwen2": {"mlp": "silu_gated", "norm": "rmsnorm", "positions": "rope", "biases": ("qkv",)},
}


def hf_meta(arch: str, vocab: int = 300, width: int = 64, heads: int = 4, kv_heads: int = 2, mlp: int = 128) -> dict:
    """The oracle's meta of a small model of the architecture, Hugging Face's rotation (`halves`)."""
    shape = SHAPES[arch]
    head_dim = width // heads
    positions = {"kind": "learned"}
    if shape["positions"] == "rope":
        positions = {"kind": "rope", "base": 10000.0, "rotation": "halves"}
    return {
        "vocab_size": vocab,
        "context_length": 64,
        "width": width,
        "layers": 2,
        "heads": heads,
        "kv_heads": heads if arch == "gpt2" else kv_heads,
        "head_dim": head_dim,
        "attention_scale": 1 / np.sqrt(head_dim),
        "mlp": {"kind": shape["mlp"], "width": mlp},
        "norm": {"kind": shape["norm"], "eps": 1e-5},
        "positions": positions,
        "biases": {key: key in shape["biases"] for key in ("qkv", "attn_out", "mlp", "head")},
        "tied_head": arch != "llama",
    }


def random_weights(meta: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    weights = {}
    for name, shape in oracle.tensor_shapes(meta).items():
        normal = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:
            weights[name] = (1.0 if name.endswith("norm.weight") else 0.0) + np.float32(0.1) * normal
        else:
            weights[name] = normal * np.float32(0.2 if name in ("embed", "pos") else shape[1] ** -0.5)
    return weights


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def k_quant_blocks(rows: int, width: int, kind: T, rng: np.random.Generator) -> np.ndarray:
    """Random Q4_K / Q5_K / Q6_K blocks (gguf cannot quantize to them) whose values are about N(0, 1/width): random
    bytes, the super-block scales set so."""
    block, size = gguf.GGML_QUANT_SIZES[kind]
    blocks = rng.integers(0, 256, (rows * width // block, size), dtype=np.uint8)
    count = len(blocks)
    if kind in (T.Q4_K, T.Q5_K):  # every 6-bit scale and min in 16..31, as a real tensor's are alike
        blocks[:, 4:12] = 64 + rng.integers(16, 32, (count, 8))
    else:  # Q6_K's 16 int8 scales, bytes 192..207
        blocks[:, 192:208] = rng.integers(16, 32, (count, 16))

    def set_scales(scale: float) -> None:
        if kind in (T.Q4_K, T.Q5_K):  # d, dmin: the first 4 bytes
            blocks[:, 0:4] = np.array([scale, 8 * scale], "<f2").view(np.uint8)
        else:  # Q6_K: d, the last 2 bytes
            blocks[:, -2:] = np.array([scale], "<f2").view(np.uint8)

    set_scales(1.0)
    spread = float(gguf.quants.dequantize(blocks, kind).std())
    set_scales(width**-0.5 / spread)
    return blocks.reshape(rows, -1)


def stored(values: np.ndarray, kind: T, rng: np.random.Generator) -> np.ndarray:
    """A matrix as the file stores it (what GGUFWriter.add_tensor takes)."""
    if kind == T.F32:
        return values.astype(np.float32)
    if kind == T.F16:
        return values.astype(np.float16)
    if kind in (T.Q4_K, T.Q5_K, T.Q6_K):
        return k_quant_blocks(values.shape[0], values.shape[1], kind, rng)
    return gguf.quants.quantize(values, kind)


def gguf_names(arch: str, name: str) -> str:
    table = {"embed": "token_embd", "pos": "position_embd", "final_norm": "output_norm", "head": "output"}
    block = {"attn_norm": "attn_norm", "attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v"}
    block |= {"attn.out": "attn_output", "mlp_norm": "ffn_norm", "mlp.gate": "ffn_gate", "mlp.up": "ffn_up"}
    block |= {"mlp.down": "ffn_down"}
    stem, _, part = name.rpartition(".") if name not in ("embed", "pos") else (name, "", "weight")
    if stem.startswith("block"):
        layer, _, inner = stem.partition(".")
        return f"blk.{layer[5:]}.{block[inner]}.{part}"
    return f"{table[stem]}.{part}"


def write_gguf(
    path: Path,
    arch: str,
    meta: dict,
    weights: dict[str, np.ndarray],
    kind: T,
    rng: np.random.Generator,
    keys: Callable[[gguf.GGUFWriter], None] = lambda writer: None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Write the model as convert_hf_to_gguf.py would (matrices of `kind`, vectors F32; `keys` adds more
    metadata); the oracle's (meta, params) of what the file computes."""
    writer = gguf.GGUFWriter(path, arch)
    keys(writer)
    a = arch
    writer.add_uint32(f"{a}.context_length", meta["context_length"])
    writer.add_uint32(f"{a}.embedding_length", meta["width"])
    writer.add_uint32(f"{a}.block_count", meta["layers"])
    writer.add_uint32(f"{a}.feed_forward_length", meta["mlp"]["width"])
    writer.add_uint32(f"{a}.attention.head_count", meta["heads"])
    writer.add_uint32(f"{a}.attention.head_count_kv", meta["kv_heads"])
    if arch == "gpt2":
        writer.add_float32(f"{a}.attention.layer_norm_epsilon", meta["norm"]["eps"])
    else:
        writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", meta["norm"]["eps"])
        writer.add_float32(f"{a}.rope.freq_base", meta["positions"]["base"])
        writer.add_uint32(f"{a}.rope.dimension_count", meta["head_dim"])
    files = {}
    for name, w in weights.items():
        if arch == "llama" and (".attn.q." in name or ".attn.k." in name):
            w = permute(w, meta["heads"] if ".attn.q." in name else meta["kv_heads"])
        files[gguf_names(arch, name)] = w
    if arch == "gpt2":
        for layer in range(meta["layers"]):
            for part in ("weight", "bias"):
                joined = [files.pop(f"blk.{layer}.attn_{p}.{part}") for p in ("q", "k", "v")]
                files[f"blk.{layer}.attn_qkv.{part}"] = np.concatenate(joined)
    truth = {}
    for name, w in files.items():
        data = w.astype(np.float32) if w.ndim == 1 else stored(w, kind, rng)
        raw = None if data.dtype != np.uint8 else kind
        writer.add_tensor(name, data, raw_dtype=raw)
        truth[name] = gguf.quants.dequantize(
            data, kind if raw is not None else (T.F16 if data.dtype == np.float16 else T.F32)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return computed(arch, meta, truth)


def computed(arch: str, meta: dict, truth: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """What llama.cpp computes from the file's values: gpt2's attn_qkv split, llama's rows as stored with the
    adjacent-pair rotation."""
    params = {}
    hd, kd = meta["heads"] * meta["head_dim"], meta["kv_heads"] * meta["head_dim"]
    for name in oracle.tensor_shapes(meta):
        part = next((p for p in ("q", "k", "v") if f".attn.{p}." in name), None)
        if arch == "gpt2" and part is not None:
            joined = truth[gguf_names(arch, name.replace(f".attn.{part}.", ".attn.q.")).replace("attn_q", "attn_qkv")]
            start = {"q": 0, "k": hd, "v": hd + kd}[part]
            params[name] = np.asarray(joined[start : start + (hd if part == "q" else kd)], np.float32)
        else:
            params[name] = np.asarray(truth[gguf_names(arch, name)], np.float32)
    run_meta = meta
    if arch == "llama":
        run_meta = meta | {"positions": meta["positions"] | {"rotation": "pairs"}}
    return run_meta, params
