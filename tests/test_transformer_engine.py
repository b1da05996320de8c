"""The engine's model of version 2 (engine/transformer/, docs/FORMATS.md §14) against the independent oracle
(tests/reference/transformer.py, itself checked against transformers and gguf): the meta reader's checks,
q8/q4/u8/f16 bytes, the list of operations, and the numpy executor walking it — on random members written to
files by the engine's writer and read back by the oracle through Pillow and json alone."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxgl.errors import PxglError
from pxgl.transformer import (
    OPERATION_KINDS,
    NumpyTransformer,
    TransformerArchitecture,
    lay_out,
    operations,
    random_values,
    read_transformer,
    save_transformer,
    transformer_spec_from_meta,
    write_random_transformer,
)
from pxgl.transformer import quant as engine_quant
from pxgl.transformer.meta import Rope, RopeScaling
from pxgl.transformer.numpy_executor import KERNELS

from tests.reference import transformer as oracle

QUANTS = ("q8", "q4", "u8", "f16")
SCALINGS = (None, RopeScaling("linear", 4.0), RopeScaling("llama3", 8.0, 1.0, 4.0, 32))


def random_architecture(rng: np.random.Generator, **choices) -> TransformerArchitecture:
    """A CI-sized member (≤ 2 layers, width ≤ 128) with every feature drawn: MLP, norm, positions (learned or
    RoPE in either rotation, scaled or not), multi-head / grouped / multi-query attention, biases, head."""
    width = 32 * int(rng.integers(1, 5))
    heads = int(rng.choice([2, 4]))
    positions = int(rng.integers(3))
    rope = None if positions == 0 else Rope(10000.0, ("halves", "pairs")[positions - 1], SCALINGS[rng.integers(3)])
    fields = {
        "vocab_size": int(rng.integers(300, 800)),
        "context_length": 48,
        "width": width,
        "layers": int(rng.integers(1, 3)),
        "heads": heads,
        "kv_heads": int(rng.choice([k for k in (1, 2, 4) if heads % k == 0 and k <= heads])),
        "head_dim": width // heads,
        "attention_scale": (width // heads) ** -0.5,
        "mlp_kind": str(rng.choice(["gelu_tanh", "gelu", "silu_gated"])),
        "mlp_width": 32 * int(rng.integers(1, 5)),
        "norm_kind": str(rng.choice(["layernorm", "rmsnorm"])),
        "norm_eps": 1e-5,
        "rope": rope,
        "biases": frozenset(k for k in ("qkv", "attn_out", "mlp", "head") if rng.random() < 0.5),
        "tied_head": bool(rng.random() < 0.5),
    }
    return TransformerArchitecture(**(fields | choices))


def oracle_reads(path: Path) -> tuple[dict, dict]:
    """The meta and float32 tensors as the oracle reads them: json and Pillow, nothing of the engine."""
    meta = json.loads(path.with_name(path.name.removesuffix(".pxi") + ".meta.json").read_text())
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return meta, oracle.dequantize(meta, pixels)


def assert_logits_agree(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """§14.4's agreement: the same maths in another summation order, where a k or v landing on the other side
    of a float16 rounding midpoint moves logits by up to ~1e-3 (measured: prefill against decode), so logits
    within τ at the largest logit and the same prediction pixels except at a near-tie."""
    gap = float(np.abs(ours - theirs).max())
    assert gap <= oracle.AGREEMENT * (1 + float(np.abs(theirs).max())), f"{what}: logits differ by {gap:.3g}"
    ids, confidence = oracle.read_predictions(oracle.prediction_pixels(ours))
    expected_ids, expected_confidence = oracle.read_predictions(oracle.prediction_pixels(theirs))
    same = ids == expected_ids
    assert (same | oracle.near_tie(theirs)).all(), f"{what}: predicted ids differ at {np.flatnonzero(~same)}"
    confidence_gap = np.abs(confidence[same] - expected_confidence[same]).max(initial=0)
    assert confidence_gap <= 1, f"{what}: confidence bytes differ by {confidence_gap}"


@pytest.mark.parametrize("quant", [*QUANTS, "mixed"])
def test_numpy_executor_equals_the_oracle_on_random_members(tmp_path, rng, quant):
    architecture = random_architecture(rng)
    quants = quant
    if quant == "mixed":
        quants = {name: str(rng.choice(QUANTS)) for name in architecture.shapes()}
    path = tmp_path / "member.pxi"
    write_random_transformer(path, architecture, quants, seed=int(rng.integers(1 << 32)), head_gain=2.0)
    spec, pixels = read_transformer(path)
    meta, params = oracle_reads(path)
    assert meta["version"] == 2 and set(meta["tensors"]) == set(spec.tensors)
    tokens = rng.integers(0, architecture.vocab_size, int(rng.integers(1, architecture.context_length + 1)))
    model = NumpyTransformer(spec, pixels)
    assert_logits_agree(model.run(tokens), oracle.forward(meta, params, tokens), f"{architecture} {quant}")


def test_a_vocabulary_past_65536_runs_and_predicts_in_two_pixels(tmp_path, rng):
    architecture = random_architecture(rng, vocab_size=int(rng.integers(65537, 70000)), width=32, heads=2)
    architecture = TransformerArchitecture(**(vars(architecture) | {"head_dim": 16, "kv_heads": 1, "layers": 1}))
    path = tmp_path / "wide.pxi"
    write_random_transformer(path, architecture, "q8", seed=int(rng.integers(1 << 32)), head_gain=3.0)
    meta, params = oracle_reads(path)
    tokens = rng.integers(65536, architecture.vocab_size, 5)  # ids that need the third byte
    ours = NumpyTransformer(*read_transformer(path)).run(tokens)
    theirs = oracle.forward(meta, params, tokens)
    assert_logits_agree(ours, theirs, "wide vocabulary")
    assert oracle.prediction_pixels(ours).shape == (5, 2, 3)
    np.testing.assert_array_equal(oracle.token_ids(oracle.token_pixels(tokens)), tokens)


def test_prefill_then_decode_through_the_cache_equals_one_pass(rng):
    """§14.4: a position reads its own k, v through the float16 cache, so a prompt at once and a token at a
    time are the same arithmetic; and the context is never exceeded silently."""
    architecture = random_architecture(rng)
    spec, weight_bytes = lay_out(architecture, random_values(architecture, rng), "q8")
    model = NumpyTransformer(spec, weight_bytes)
    n = architecture.context_length
    tokens = rng.integers(0, architecture.vocab_size, n)
    whole = model.run(tokens)
    cache = model.new_cache()
    split = int(rng.integers(1, n))
    stepped = [model.run(tokens[:split], cache)] + [model.run(tokens[i : i + 1], cache) for i in range(split, n)]
    assert_logits_agree(np.concatenate(stepped), whole, f"prefill {split}, then decode")
    with pytest.raises(PxglError, match="the context holds"):
        model.run(tokens[:1], cache)
    with pytest.raises(PxglError, match="the context holds"):
        model.run(np.zeros(n + 1, np.int64))


def test_the_operation_list_reads_every_tensor_and_each_kind_has_a_numpy_kernel(rng):
    assert KERNELS.keys() == OPERATION_KINDS.keys()
    for _ in range(20):
        architecture = random_architecture(rng)
        ops = operations(architecture)
        named = [t for op in ops for t in op.tensors]
        assert set(named) == set(architecture.shapes()), "every tensor is read, and only tensors that exist"
        assert [op.kind for op in ops].count("attend") == architecture.layers
        assert ops[0].kind == "embed" and ops[-1].kind == "logits"
        assert all(op.kind in OPERATION_KINDS for op in ops)


def gguf_edge_rows(rng: np.random.Generator) -> np.ndarray:
    """Blocks at the rules' edges (zeros, ±amax ties, products at .5 and just under, tiny scales) among
    random ones: 16 blocks, 4 rows of 128."""
    under_half = (0.5 - 2.0**-25) * 2.0**-4 * rng.choice([-1.0, 1.0], 31)
    edges = [np.zeros(32), np.r_[3.0, -3.0, rng.uniform(-3, 3, 30)], np.r_[127 * 2.0**-4, under_half]]
    edges.append(np.r_[2.0, (rng.integers(-127, 127, 31) + 0.5) * 2.0 / 127])
    edges.append(rng.standard_normal(32) * 1e-6)
    blocks = edges + list(rng.standard_normal((11, 32)) * rng.uniform(0.01, 10, (11, 1)))
    return np.concatenate(blocks).astype(np.float32).reshape(4, 128)


@pytest.mark.parametrize("quant", QUANTS)
def test_engine_tensor_bytes_equal_the_oracles(rng, quant):
    rows = gguf_edge_rows(rng)
    ours, scale, zero_point = engine_quant.quantize(rows, quant, "probe")
    theirs, extra = oracle.quantize(rows, quant)
    assert ours.tobytes() == theirs
    entry = {"offset": 0, "shape": [4, 128], "quant": quant} | extra
    assert (scale, zero_point) == (extra.get("scale", 0.0), extra.get("zero_point", 0))
    back = engine_quant.dequantize(ours, (4, 128), quant, scale, zero_point)
    np.testing.assert_array_equal(back, oracle.dequantize_tensor(np.frombuffer(theirs, np.uint8), entry))


def test_the_writer_refuses_what_its_format_cannot_hold(rng):
    architecture = random_architecture(rng)
    values = random_values(architecture, rng)
    for name, bad, quant, why in [
        ("embed", np.inf, "q8", "finite"),
        ("embed", 1e5, "f16", "not a float16"),
        ("embed", 1e8, "q4", "no float16 q4 scale"),
    ]:
        broken = dict(values) | {name: values[name].copy()}
        broken[name][0, 0] = bad
        with pytest.raises(PxglError, match=why):
            lay_out(architecture, broken, quant)
    odd = TransformerArchitecture(**(vars(architecture) | {"width": 48, "head_dim": 48 // architecture.heads}))
    with pytest.raises(PxglError, match="multiple of 32"):
        lay_out(odd, random_values(odd, rng), "q4")


def test_a_non_finite_float16_in_the_weights_is_refused_naming_its_tensor(tmp_path, rng):
    architecture = random_architecture(rng)
    spec, weight_bytes = lay_out(architecture, random_values(architecture, rng), "q8")
    target = spec.tensors["final_norm.weight"]
    damaged = bytearray(weight_bytes)
    damaged[target.offset + 2 : target.offset + 4] = np.float16(np.inf).tobytes()
    save_transformer(tmp_path / "bad.pxi", spec, bytes(damaged))
    with pytest.raises(PxglError, match=r"'final_norm\.weight' holds a float16 that is not finite"):
        read_transformer(tmp_path / "bad.pxi")


def valid_meta(rng: np.random.Generator) -> dict:
    architecture = random_architecture(rng, rope=Rope(10000.0, "halves", SCALINGS[2]))
    spec, _ = lay_out(architecture, random_values(architecture, rng), "u8", bos=1)
    return spec.to_meta()


BROKEN = [
    (lambda m: m.pop("heads"), "missing key"),
    (lambda m: m.update(version=3), "version-2 meta"),
    (lambda m: m.update(vocab_size=255 * 65536 + 1), "'vocab_size'"),
    (lambda m: m.update(kv_heads=3, heads=4), "not a multiple of 'kv_heads'"),
    (lambda m: m.update(attention_scale=float("nan")), "'attention_scale' must be a finite number"),
    (lambda m: m.update(attention_scale=True), "'attention_scale' must be a finite number"),
    (lambda m: m["mlp"].update(kind="relu"), "mlp: 'kind' must be one of"),
    (lambda m: m["mlp"].update(extra=1), "mlp must be an object with exactly"),
    (lambda m: m["norm"].update(eps=0), "'eps' = 0 is outside"),
    (lambda m: m["positions"].update(rotation="interleaved"), "'rotation' must be one of"),
    (lambda m: m["positions"].update(base=1), "'base' = 1 is outside"),
    (lambda m: m["positions"]["scaling"].update(high_freq_factor=0.5), "'high_freq_factor' = 0.5 is outside"),
    (lambda m: m["positions"]["scaling"].pop("original_context"), "scaling must be an object with exactly"),
    (lambda m: m["positions"]["scaling"].update(kind=[]), "scaling: 'kind' must be one of linear, llama3"),
    (lambda m: m["biases"].update(qkv="yes"), "'qkv' must be true or false"),
    (lambda m: m.update(bos=m["vocab_size"]), "'bos'"),
    (lambda m: m.update(tokenizer="../t.json"), "plain file name"),
    (lambda m: m.update(images=[]), "several images"),
    (lambda m: m["tensors"].pop("embed"), "missing \\['embed'\\]"),
    (lambda m: m["tensors"]["embed"].update(quant="q2"), "'quant' must be one of q8, q4, u8, f16"),
    (lambda m: m["tensors"]["final_norm.weight"].update(quant="q8"), "'quant' must be one of f16"),
    (lambda m: m["tensors"]["embed"].update(offset=2), "not a multiple of 4"),
    (lambda m: m["tensors"]["embed"].update(shape=[1, 2]), "does not match"),
    (lambda m: m["tensors"]["embed"].update(scale=0.0), "scale must be a positive number"),
    (lambda m: m["tensors"]["embed"].pop("zero_point"), "must be an object with exactly"),
    (lambda m: m["tensors"]["block0.attn.q.weight"].update(offset=m["tensors"]["embed"]["offset"]), "overlap"),
    (lambda m: m["image"].update(width=1), "run past the image"),
]


@pytest.mark.parametrize(("damage", "message"), BROKEN)
def test_each_meta_check_is_one_line_naming_the_key(rng, damage, message):
    meta = valid_meta(rng)
    transformer_spec_from_meta(copy.deepcopy(meta))  # the undamaged meta reads
    damage(meta)
    with pytest.raises(PxglError, match=message) as refused:
        transformer_spec_from_meta(meta, "m.meta.json")
    assert "\n" not in str(refused.value) and str(refused.value).startswith("m.meta.json")


def test_random_damage_to_a_meta_is_read_or_refused_as_one_pxgl_error(rng):
    """Any key replaced by a value of another type or size: the reader answers PxglError or a spec, never
    another exception."""
    odd_values = [None, True, -1, 0, 2**70, 1.5, float("inf"), "x", [], [1, 2], {}, {"kind": "rope"}]
    metas = [valid_meta(rng) for _ in range(10)]
    refused = 0
    for trial in range(300):
        damaged = copy.deepcopy(metas[trial % len(metas)])
        holder = damaged
        path = [str(rng.choice(sorted(damaged)))]
        while isinstance(holder[path[-1]], dict) and holder[path[-1]] and rng.random() < 0.6:
            holder = holder[path[-1]]
            path.append(str(rng.choice(sorted(holder))))
        holder[path[-1]] = odd_values[rng.integers(len(odd_values))]
        try:
            transformer_spec_from_meta(damaged)
        except PxglError:
            refused += 1
    assert refused > 200, f"only {refused} of 300 damaged metas refused"
