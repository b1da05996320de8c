"""`pxgl export --format hf` (docs/FORMATS.md §10.2): transformers loads the folder and computes pxgl's logits
(the passes executor's) within f16's bound — its KV cache is float16, transformers' float32 — and importing
the export gives the same tensor bytes and meta back. Members are random (tests/reference/transformer.py's
random_architecture at small vocabularies) in each architecture export writes: GPT-2, Llama (RoPE `pairs`
rows permuted back to `halves`, llama3 scaling, biases), Qwen2."""

import json

import numpy as np
import pytest
from pxgl.cli import app
from pxgl.errors import PxglError
from pxgl.hf.export import export_folder, halves_rows
from pxgl.hf.importer import import_folder, open_folder
from pxgl.transformer.files import lay_out, save_transformer
from pxgl.transformer.gpu import PassesTransformer
from pxgl.transformer.interchange import dequantized
from pxgl.transformer.meta import architecture_from_meta
from typer.testing import CliRunner

from tests.hf_models import logits, reference
from tests.test_hf_import import pxgl_logits
from tests.test_transformer_reference import random_architecture, random_weights

SHAPES = {
    "gpt2": {},
    "llama_pairs": {
        "positions": {
            "kind": "rope", "base": 10000.0, "rotation": "pairs",
            "scaling": {"kind": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_context": 16},
        },
        "biases": {"qkv": True, "attn_out": True, "mlp": True, "head": False},
    },
    "qwen2": {"biases": {"qkv": True, "attn_out": False, "mlp": False, "head": False}, "tied_head": True},
}  # fmt: skip


def member(rng: np.random.Generator, shape: str):
    """A random member, every matrix of a kind drawn from q8, q4, u8, f16 (random_weights' turn)."""
    family = "gpt2" if shape == "gpt2" else "llama"
    document = random_architecture(rng, family, **SHAPES[shape])
    weights, quants = random_weights(rng, document)
    gain = 0.5 * document["width"] ** -0.5  # logits of ~0.5 standard deviation: f16's bound holds at 1e-2
    weights |= {name: weights[name] * gain for name in ("embed", "head.weight") if name in weights}
    architecture = architecture_from_meta(document, "member")
    bos = int(rng.integers(architecture.vocab_size)) if rng.random() < 0.5 else None
    return lay_out(architecture, weights, quants, bos)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_transformers_computes_the_exported_folder_as_pxgl(shape, gpu, rng, tmp_path):
    spec, stream = member(rng, shape)
    out = tmp_path / "hf"
    export_folder(out, spec, stream, None)
    config = json.loads((out / "config.json").read_text())
    written = {"gpt2": "GPT2LMHeadModel", "qwen2": "Qwen2ForCausalLM", "llama_pairs": "LlamaForCausalLM"}[shape]
    assert config["architectures"] == [written]
    model = reference(out)
    window = rng.integers(0, spec.architecture.vocab_size, spec.architecture.context_length)
    executor = PassesTransformer(gpu, spec, stream)
    try:
        ours = pxgl_logits(executor, window)
    finally:
        executor.close()
    theirs = logits(model, window)
    assert np.abs(ours - theirs).max() <= 1e-2, (np.abs(ours - theirs).max(), np.abs(theirs).max())

    back = import_folder(open_folder(out, None), None)
    assert back.spec.bos == spec.bos and back.spec.tensors == spec.tensors
    if shape != "llama_pairs":
        assert np.array_equal(back.stream, stream) and back.spec.architecture == spec.architecture
        return
    assert back.spec.architecture.rope.rotation == "halves"  # the same model, its q/k rows permuted (§14.4)
    for name in spec.tensors:
        expected = dequantized(spec, stream, name)
        if ".attn.q." in name or ".attn.k." in name:
            expected = halves_rows(expected, spec.architecture.head_dim)
        assert np.array_equal(dequantized(back.spec, back.stream, name), expected), name


def test_the_cli_exports_and_reimports_the_same_bytes(rng, tmp_path):
    spec, stream = member(rng, "gpt2")
    save_transformer(tmp_path / "m.pxi", spec, stream)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "-m", str(tmp_path / "m.pxi"), "--format", "hf", "-o", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["import", str(tmp_path / "hf"), "-o", str(tmp_path / "back.pxa")])
    assert result.exit_code == 0, result.output
    from pxgl.transformer.cartridge import open_transformer_cartridge

    cartridge = open_transformer_cartridge(tmp_path / "back.pxa")
    assert np.array_equal(cartridge.stream[: len(stream)], stream) and cartridge.spec.tensors == spec.tensors


def test_export_refuses_a_model_no_architecture_expresses_and_a_folder_with_files(rng, tmp_path):
    spec, stream = member(rng, "gpt2")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(PxglError, match="not empty"):
        export_folder(tmp_path / "full", spec, stream, None)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]
    document = random_architecture(rng, "llama", mlp={"kind": "gelu", "width": 64})
    architecture = architecture_from_meta(document, "member")
    weights, _ = random_weights(rng, document)
    spec, stream = lay_out(architecture, weights, "f16")
    with pytest.raises(PxglError, match=r"--format hf: no Hugging Face architecture .* gated SiLU"):
        export_folder(tmp_path / "new", spec, stream, None)
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["full"]
