"""pxgl import / export of GGUF files (docs/FORMATS.md §10.3), on small files written by llama.cpp's own `gguf`
package as convert_hf_to_gguf.py writes them (tests/gguf_files.py): the imported model computes, under the
independent oracle (tests/reference/transformer.py), what the file computes under llama.cpp's reading of it;
Q8_0/Q4_0 blocks are kept byte for byte; K-quants come back within half a q8 step; export then import gives
the same bytes."""

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
from pxgl.transformer.files import read_transformer, write_random_transformer
from pxgl.transformer.meta import architecture_from_meta

from tests.cartridges import pxgl
from tests.gguf_files import T, hf_meta, permute, random_weights, write_gguf
from tests.reference import transformer as oracle

KINDS = (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q5_0, T.Q4_K, T.Q5_K, T.Q6_K)
REQUANTIZED = (T.Q5_0, T.Q4_K, T.Q5_K, T.Q6_K)
"""Types no pxgl kind holds: dequantized by gguf, then q8."""
KEPT = {T.Q8_0: "q8", T.Q4_0: "q4"}


def imported(monkeypatch, capsys, source: Path, *options: str) -> tuple[dict, np.ndarray]:
    out = source.with_suffix(".pxi")
    code, _, err = pxgl(monkeypatch, capsys, "import", str(source), "-o", str(out), "--json", *options)
    assert code == 0, err
    meta = json.loads(out.with_name(out.stem + ".meta.json").read_text())
    return meta, read_transformer(out)[1]


def logits_pair(run_meta, params, meta, stream, rng) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(0, meta["vocab_size"], 40)
    return oracle.forward(run_meta, params, tokens), oracle.forward(meta, oracle.dequantize(meta, stream), tokens)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_the_import_computes_what_the_file_computes(arch, kind, tmp_path, rng, monkeypatch, capsys):
    k_quant = kind in (T.Q4_K, T.Q5_K, T.Q6_K)
    meta = hf_meta(arch, width=256, mlp=512) if k_quant else hf_meta(arch)  # a K-quant's rows are 256s
    source = tmp_path / f"{arch}.gguf"
    run_meta, truth = write_gguf(source, arch, meta, random_weights(meta, rng), kind, rng)
    got_meta, stream = imported(monkeypatch, capsys, source)
    rotation = got_meta["positions"].get("rotation")
    assert rotation == (None if arch == "gpt2" else "halves")
    matrices = {name for name, shape in oracle.tensor_shapes(meta).items() if len(shape) == 2}
    expected_kind = KEPT.get(kind, "q8" if kind in REQUANTIZED else "f16")
    assert {got_meta["tensors"][name]["quant"] for name in matrices} == {expected_kind}
    reference, ours = logits_pair(run_meta, truth, got_meta, stream, rng)
    delta = np.abs(reference - ours)
    if kind in REQUANTIZED:
        values = oracle.dequantize(got_meta, stream)
        for name in matrices:  # within half a q8 step of its block, plus d's float16 rounding: 127 · 2^-11 steps
            blocks = in_pxgl_order(truth, name, arch, meta).reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127
            assert (np.abs(values[name].reshape(-1, 32) - blocks) <= step * (0.5 + 127 * 2**-11) + 1e-9).all(), name
        rms = float(np.sqrt((delta**2).mean()) / np.sqrt((reference**2).mean()))
        assert rms <= 0.03, f"RMS Δ logit {rms:.2%} of the logits' RMS"  # measured ≤ 2.1% (2 random layers)
        return
    if kind in KEPT:  # the file's blocks themselves, llama's query/key rows un-permuted
        for name in matrices:
            t = got_meta["tensors"][name]
            rows = stream[t["offset"] : t["offset"] + oracle.tensor_bytes(tuple(t["shape"]), t["quant"])]
            rows = rows.reshape(t["shape"][0], -1)
            if arch == "llama" and name in query_key(meta):
                rows = permute(rows, meta["heads"] if ".attn.q." in name else meta["kv_heads"])
            assert np.array_equal(gguf.quants.dequantize(rows, kind), truth[name]), name
    # f16 matrices, f16 norms and biases (§14.2): float16 rounding of what the file holds
    bound = 2e-3 * (1 + float(np.abs(reference).max()))
    assert float(delta.max()) <= bound, f"max Δ logit {delta.max():.2e} past {bound:.2e}"
    top = np.sort(reference, axis=1)
    clear = top[:, -1] - top[:, -2] > 2 * bound
    assert (reference.argmax(1) == ours.argmax(1))[clear].all()


def query_key(meta: dict) -> set[str]:
    return {f"block{layer}.attn.{p}.weight" for layer in range(meta["layers"]) for p in ("q", "k")}


def in_pxgl_order(truth: dict, name: str, arch: str, meta: dict) -> np.ndarray:
    """The file's values of a matrix in Hugging Face's row order (llama's query/key rows un-permuted)."""
    if arch != "llama" or name not in query_key(meta):
        return truth[name]
    order = permute(np.arange(truth[name].shape[0]), meta["heads"] if ".attn.q." in name else meta["kv_heads"])
    return truth[name][np.argsort(order)]


ROUND_TRIPS = {
    "gpt2-q8-u8": ("gpt2", {}, {"embed": "u8", "pos": "f16"}, "q8"),
    "llama-halves-q4-f16": ("llama", {}, {"head.weight": "f16"}, "q4"),
    "llama-pairs-llama3-u8": (
        "llama",
        {
            "positions": {
                "kind": "rope",
                "base": 500000.0,
                "rotation": "pairs",
                "scaling": {
                    "kind": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_context": 8192,
                },
            }
        },
        {"block0.attn.q.weight": "u8"},
        "q8",
    ),
    "qwen2-linear-f16": (
        "qwen2",
        {
            "positions": {
                "kind": "rope",
                "base": 1e6,
                "rotation": "halves",
                "scaling": {"kind": "linear", "factor": 4.0},
            }
        },
        {},
        "f16",
    ),
}


@pytest.mark.parametrize("case", ROUND_TRIPS)
def test_export_then_import_gives_the_same_bytes(case, tmp_path, seed, monkeypatch, capsys):
    arch, changes, some, rest = ROUND_TRIPS[case]
    architecture = architecture_from_meta(hf_meta(arch) | changes, "test")
    quants = {name: some.get(name, rest) for name in architecture.shapes()}
    model = tmp_path / "model.pxi"
    write_random_transformer(model, architecture, quants, seed)
    meta, stream = json.loads((tmp_path / "model.meta.json").read_text()), read_transformer(model)[1]
    exported = tmp_path / "exported.gguf"  # imported() writes beside it: exported.pxi, not over model.pxi
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(model), "--format", "gguf", "-o", str(exported))
    assert code == 0, err
    reader = gguf.GGUFReader(exported)  # llama.cpp's reader loads it, with the types §10.3 names
    assert reader.fields["general.architecture"].contents() == arch
    types = {t.name: t.tensor_type for t in reader.tensors}
    expected = {"q8": T.Q8_0, "q4": T.Q4_0, "f16": T.F16, "u8": T.F32}
    assert types["token_embd.weight"] == expected[quants["embed"]]
    assert types["blk.1.ffn_down.weight"] == expected[rest]
    assert types["output_norm.weight"] == T.F32
    back_meta, back_stream = imported(monkeypatch, capsys, exported)
    assert {k: v for k, v in back_meta.items() if k != "files"} == {k: v for k, v in meta.items() if k != "files"}
    assert np.array_equal(back_stream, stream)


def test_a_model_no_gguf_architecture_computes_is_refused(tmp_path, seed, monkeypatch, capsys):
    architecture = architecture_from_meta(hf_meta("gpt2") | {"mlp": {"kind": "gelu", "width": 128}}, "test")
    model = tmp_path / "model.pxi"
    write_random_transformer(model, architecture, "q8", seed)
    out = tmp_path / "never.gguf"
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(model), "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "no GGUF architecture" in err, err
    assert not out.exists()


def test_llama3_rope_freqs_become_the_llama3_scaling(tmp_path, rng, monkeypatch, capsys):
    """convert_hf_to_gguf.py writes Llama 3's scaling as a rope_freqs tensor of divisors (its formula, here)."""
    meta = hf_meta("llama") | {"positions": {"kind": "rope", "base": 500000.0, "rotation": "halves"}}
    source = tmp_path / "llama3.gguf"
    run_meta, truth = write_gguf(source, "llama", meta, random_weights(meta, rng), T.Q8_0, rng)
    factor, dim = 32.0, meta["head_dim"]
    divisors = []
    for freq in 1.0 / (500000.0 ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelength = 2 * math.pi / freq
        smooth = (8192 / wavelength - 1) / (4 - 1)
        divisors.append(
            1 if wavelength < 8192 / 4 else factor if wavelength > 8192 else 1 / ((1 - smooth) / factor + smooth)
        )
    with_freqs = tmp_path / "with_freqs.gguf"
    original = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(with_freqs, "llama")
    for field in original.fields.values():
        if not field.name.startswith(("GGUF.", "general.architecture")):
            writer.add_key_value(field.name, field.contents(), field.types[0])
    for t in original.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.add_tensor("rope_freqs.weight", np.array(divisors, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    got_meta, stream = imported(monkeypatch, capsys, with_freqs)
    scaling = {"kind": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    assert got_meta["positions"]["scaling"] == scaling | {"original_context": 8192}
    run_meta = run_meta | {"positions": run_meta["positions"] | {"scaling": scaling | {"original_context": 8192}}}
    reference, ours = logits_pair(run_meta, truth, got_meta, stream, rng)
    assert float(np.abs(reference - ours).max()) <= 2e-3 * (1 + float(np.abs(reference).max()))


def test_an_import_into_a_cartridge_holds_the_same_model_and_exports_again(tmp_path, rng, monkeypatch, capsys):
    from pxgl.transformer.cartridge import open_transformer_cartridge

    meta = hf_meta("qwen2")
    source = tmp_path / "qwen2.gguf"
    write_gguf(source, "qwen2", meta, random_weights(meta, rng), T.Q4_0, rng)
    got_meta, stream = imported(monkeypatch, capsys, source)
    code, _, err = pxgl(monkeypatch, capsys, "import", str(source), "-o", str(tmp_path / "qwen2.pxa"))
    assert code == 0, err
    cartridge = open_transformer_cartridge(tmp_path / "qwen2.pxa")
    assert cartridge.spec.to_meta() == {k: v for k, v in got_meta.items() if k != "files"}
    assert np.array_equal(cartridge.stream, stream)
    inspected = []  # inspect tells the cartridge's model in the words it uses for the .pxi's, not Python dicts
    for path in ("qwen2.pxi", "qwen2.pxa"):
        code, out, err = pxgl(monkeypatch, capsys, "inspect", str(tmp_path / path), "--json")
        assert code == 0, err
        inspected.append(json.loads(out)["model"])
    assert inspected[0] == inspected[1] and inspected[0]["norm"] == "rmsnorm eps 1e-05", inspected
    exported = tmp_path / "from_cartridge.gguf"  # and a cartridge exports as its .pxi set does
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(tmp_path / "qwen2.pxa"), "-o", str(exported))
    assert code == 0, err
    assert imported(monkeypatch, capsys, exported)[1].tobytes() == stream.tobytes()


def test_a_gguf_named_file_without_the_magic_is_refused(tmp_path, monkeypatch, capsys):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGML" + bytes(100))
    code, _, err = pxgl(monkeypatch, capsys, "import", str(source), "-o", str(tmp_path / "never.pxi"))
    assert code == 2 and "does not begin with GGUF's magic bytes" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("kind", "quant"), [(T.Q8_0, "q4"), (T.F16, "q8"), (T.Q4_0, "u8")])
def test_quant_requantizes_every_matrix(kind, quant, tmp_path, rng, monkeypatch, capsys):
    """--quant K: every matrix dequantized from the file and quantized to K (§14.3's rule, the oracle's here)."""
    meta = hf_meta("llama")
    source = tmp_path / "llama.gguf"
    _, truth = write_gguf(source, "llama", meta, random_weights(meta, rng), kind, rng)
    got_meta, stream = imported(monkeypatch, capsys, source, "--quant", quant)
    values = oracle.dequantize(got_meta, stream)
    for name, shape in oracle.tensor_shapes(meta).items():
        if len(shape) == 2:
            expected, entry = oracle.quantize(in_pxgl_order(truth, name, "llama", meta), quant)
            assert got_meta["tensors"][name]["quant"] == quant
            t = got_meta["tensors"][name]
            assert stream[t["offset"] : t["offset"] + len(expected)].tobytes() == expected, name
            assert {key: t[key] for key in entry} == pytest.approx(entry)  # u8's grid
    assert all(np.isfinite(v).all() for v in values.values())


def test_a_u8_grid_the_values_do_not_lie_on_is_not_kept(tmp_path, seed, monkeypatch, capsys):
    """§10.1's rule: pxgl.quantization's u8 grid is kept only where every value lies on it."""
    architecture = architecture_from_meta(hf_meta("llama"), "test")
    model = tmp_path / "model.pxi"
    write_random_transformer(model, architecture, "u8", seed)
    exported = tmp_path / "model.gguf"
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(model), "-o", str(exported))
    assert code == 0, err
    reader = gguf.GGUFReader(exported)
    quantization = json.loads(reader.fields["pxgl.quantization"].contents())
    quantization["block0.mlp.up.weight"]["scale"] *= 3.5  # a grid the values do not lie on
    lying = tmp_path / "lying.gguf"
    writer = gguf.GGUFWriter(lying, "llama")
    for field in reader.fields.values():
        if not field.name.startswith(("GGUF.", "general.architecture")):
            value = json.dumps(quantization) if field.name == "pxgl.quantization" else field.contents()
            writer.add_key_value(field.name, value, field.types[0])
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    got_meta, stream = imported(monkeypatch, capsys, lying)
    original = json.loads((tmp_path / "model.meta.json").read_text())["tensors"]
    assert got_meta["tensors"]["block0.mlp.down.weight"] == original["block0.mlp.down.weight"]  # on its grid: kept
    entry = got_meta["tensors"]["block0.mlp.up.weight"]
    assert entry["scale"] != quantization["block0.mlp.up.weight"]["scale"]  # the lying grid is not used
    values = oracle.dequantize(got_meta, stream)["block0.mlp.up.weight"]
    file_values = gguf.quants.dequantize(
        np.asarray(next(t.data for t in reader.tensors if t.name == "blk.0.ffn_up.weight")), T.F32
    )
    within = np.abs(values - file_values) <= entry["scale"] / 2 * 1.001 + 1e-7  # all but §10's clipped tails
    assert within.mean() >= 0.999


def test_a_tokenizer_with_no_gguf_form_is_left_out_and_said(tmp_path, seed, monkeypatch, capsys):
    """A version-0 tokenizer (§6's own pre-tokenizer, in no llama.cpp table) is not written; stderr says so."""
    from pxgl.tokenizer import Tokenizer
    from pxgl.transformer.members import write_random_model

    tokenizer = Tokenizer.train("the cat sat on the mat, the dog sat on the log " * 20, 300)
    architecture = architecture_from_meta(hf_meta("gpt2", vocab=tokenizer.vocab_size), "test")
    model = tmp_path / "model.pxi"
    write_random_model(model, architecture, "q8", seed, tokenizer)
    out = tmp_path / "model.gguf"
    code, _, err = pxgl(monkeypatch, capsys, "export", "-m", str(model), "-o", str(out))
    assert code == 0 and "has no GGUF form" in err, err
    assert not any(name.startswith("tokenizer.") for name in gguf.GGUFReader(out).fields)
