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
            "kind": "rope", "base": 500000.0, "rotation": "pairs",
            "scaling": {"kind": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_context": 16},
        },
        "biases": {"qkv": True, "attn_out": True, "mlp": True, "head": False},
    },
    "qwen2": {
        "biases": {"qkv": True, "attn_out": False, "mlp": False, "head": False}, "tied_head": True,
        "positions": {"kind": "rope", "base": 1000000.0, "rotation": "halves"},
    },
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
    assert "(the default: q8, unless the folder's pxgl.quantization says otherwise" in result.output
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


def test_a_bfloat16_safetensors_of_pxgl_names_imports_as_its_values(rng, tmp_path):
    """§10.1: version 2's bounded reader takes BF16, its 16 bits the high half of a float32."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    spec, stream = member(rng, "qwen2")
    values = {name: torch.from_numpy(dequantized(spec, stream, name)).bfloat16() for name in spec.tensors}
    metadata = {"pxgl.architecture": json.dumps({"version": 2, **spec.architecture.to_json()})}
    save_file(values, tmp_path / "m.safetensors", metadata=metadata)
    result = CliRunner().invoke(app, ["import", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "m.pxi"),
                                      "--quant", "f16"])  # fmt: skip
    assert result.exit_code == 0, result.output
    from pxgl.transformer.files import read_transformer

    got_spec, got_stream = read_transformer(tmp_path / "m.pxi")
    for name, tensor in values.items():
        assert np.array_equal(dequantized(got_spec, got_stream, name), tensor.float().numpy()), name


def test_gpt2_names_without_the_prefix_and_old_mask_buffers_import_the_same(rng, tmp_path):
    """GPT2Model's names (no `transformer.`, as the hub's gpt2 stores them) and the causal-mask buffers older
    checkpoints saved (`attn.bias`, `attn.masked_bias`) give the same model."""
    from safetensors.numpy import load_file, save_file

    spec, stream = member(rng, "gpt2")
    export_folder(tmp_path / "hf", spec, stream, None)
    weights = tmp_path / "hf" / "model.safetensors"
    metadata = json.loads(weights.read_bytes()[8 : 8 + int.from_bytes(weights.read_bytes()[:8], "little")])
    tensors = {name.removeprefix("transformer."): values for name, values in load_file(weights).items()}
    context = spec.architecture.context_length
    for layer in range(spec.architecture.layers):
        tensors[f"h.{layer}.attn.bias"] = np.tril(np.ones((context, context), np.float32))[None, None]
        tensors[f"h.{layer}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, weights, metadata=metadata["__metadata__"])
    back = import_folder(open_folder(tmp_path / "hf", None), None)
    assert np.array_equal(back.stream, stream) and back.spec.tensors == spec.tensors


def test_a_folders_tokenizer_and_bos_travel_in_and_out(rng, tmp_path):
    """A folder's tokenizer.json (byte-level BPE trained with `tokenizers`, its post-processor adding <s>)
    becomes the model's tokenizer and bos (§10.2); the export's folder encodes alike in transformers."""
    from pxgl.tokenizer import Tokenizer
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    from tests.hf_models import build, save

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    text = ["pixels all the way down: 12 cats, 345 dogs; ünïcödé\tand  spaces", "def f(x):\n    return x * 2"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    hf.train_from_iterator(text, trainer)
    hf.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", hf.token_to_id("<s>"))])
    fast = pytest.importorskip("transformers").PreTrainedTokenizerFast(
        tokenizer_object=hf, bos_token="<s>", eos_token="</s>"
    )
    folder = save(build("tinyllama", rng, vocab_size=hf.get_vocab_size()), tmp_path / "in", "float16")
    fast.save_pretrained(folder)

    runner = CliRunner()
    result = runner.invoke(app, ["import", str(folder), "-o", str(tmp_path / "m.pxi"), "--quant", "f16"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m.meta.json").read_text())
    assert meta["bos"] == hf.token_to_id("<s>") and meta["tokenizer"] == "m.tokenizer.json"
    sample = "cats and dogs: 12345 ünï\n  x * 2</s>"
    ours = Tokenizer.load(tmp_path / "m.tokenizer.json")
    assert ours.encode(sample) == hf.encode(sample, add_special_tokens=False).ids

    result = runner.invoke(
        app, ["export", "-m", str(tmp_path / "m.pxi"), "--format", "hf", "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    again = pytest.importorskip("transformers").AutoTokenizer.from_pretrained(tmp_path / "out")
    assert again.encode(sample, add_special_tokens=False) == ours.encode(sample)
    back = import_folder(open_folder(tmp_path / "out", None), None)
    assert (
        back.spec.bos == meta["bos"]
        and back.tokenizer is not None
        and back.tokenizer.encode(sample) == ours.encode(sample)
    )
