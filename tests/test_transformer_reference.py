"""The version-2 oracle (tests/reference/transformer.py, docs/FORMATS.md §14) checked against the implementations
the spec names: Hugging Face transformers' GPT2LMHeadModel and LlamaForCausalLM give the oracle's logits on the
same random weights (read back from the quantized bytes), and q8/q4 blocks are byte for byte llama.cpp's
Q8_0/Q4_0 as its gguf package writes them. So the oracle and the engine cannot share a misreading of RoPE,
GELU, grouped-query attention or the block layouts. Needs the test extra `pip install -e '.[reference]'`."""

import numpy as np
import pytest

from tests.reference import transformer as oracle

torch = pytest.importorskip("torch", reason="the reference extra: pip install -e '.[reference]'")
transformers = pytest.importorskip("transformers", reason="the reference extra: pip install -e '.[reference]'")
gguf_quants = pytest.importorskip("gguf.quants", reason="the reference extra: pip install -e '.[reference]'")
from gguf import GGMLQuantizationType  # noqa: E402

HF_TOLERANCE = 1e-5
"""|oracle - transformers| ≤ HF_TOLERANCE · (1 + max |logit|), the oracle keeping its cache in float32 as
transformers does: both are float32 maths, differing in summation order, float64 RoPE angles and erf (measured:
at most 8e-7 on 12 members)."""
MATRIX_QUANTS = ("q8", "q4", "u8", "f16")


def random_architecture(rng: np.random.Generator, family: str, **choices) -> dict:
    """A CI-sized member (2 layers, width ≤ 128, heads 4) of the family's shape; `choices` override."""
    width = int(rng.choice([64, 96, 128]))
    heads = 4
    architecture = {
        "vocab_size": int(rng.integers(300, 700)),
        "context_length": 64,
        "width": width,
        "layers": 2,
        "heads": heads,
        "kv_heads": heads,
        "head_dim": width // heads,
        "attention_scale": (width // heads) ** -0.5,
        "mlp": {"kind": "gelu_tanh", "width": 32 * int(rng.integers(2, 9))},
        "norm": {"kind": "layernorm", "eps": 1e-5},
        "positions": {"kind": "learned"},
        "biases": {"qkv": True, "attn_out": True, "mlp": True, "head": False},
        "tied_head": True,
    }
    if family == "llama":
        architecture |= {
            "kv_heads": 2,
            "mlp": {"kind": "silu_gated", "width": architecture["mlp"]["width"]},
            "norm": {"kind": "rmsnorm", "eps": 1e-6},
            "positions": {"kind": "rope", "base": 10000.0, "rotation": "halves"},
            "biases": {"qkv": False, "attn_out": False, "mlp": False, "head": False},
            "tied_head": False,
        }
    return architecture | choices


def random_weights(rng: np.random.Generator, architecture: dict) -> tuple[dict, dict]:
    """Float weights whose activations stay O(1) through the blocks and whose logits spread over several
    units, and each matrix's quantization: the four kinds in turn from a random start, so every member
    reads all four from bytes."""
    weights, quants = {}, {}
    start = int(rng.integers(len(MATRIX_QUANTS)))
    matrices = 0
    for name, shape in oracle.tensor_shapes(architecture).items():
        if len(shape) == 1:
            centre = 1.0 if name.endswith("norm.weight") else 0.0
            weights[name] = centre + 0.2 * rng.standard_normal(shape)
            quants[name] = "f16"
            continue
        spread = 1.0 if name in ("embed", "head.weight") else 0.5 if name == "pos" else shape[1] ** -0.5
        weights[name] = spread * rng.standard_normal(shape)
        quants[name] = MATRIX_QUANTS[(start + matrices) % len(MATRIX_QUANTS)]
        matrices += 1
    return {k: v.astype(np.float32) for k, v in weights.items()}, quants


def to_torch(values: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def gpt2_model(architecture: dict, params: dict, activation: str):
    e, f = architecture["width"], architecture["mlp"]["width"]
    config = transformers.GPT2Config(
        vocab_size=architecture["vocab_size"],
        n_positions=architecture["context_length"],
        n_embd=e,
        n_layer=architecture["layers"],
        n_head=architecture["heads"],
        n_inner=f,
        activation_function=activation,
        layer_norm_epsilon=architecture["norm"]["eps"],
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=architecture["tied_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    state = {"transformer.wte.weight": params["embed"], "transformer.wpe.weight": params["pos"]}
    for layer in range(architecture["layers"]):
        b, h = f"block{layer}", f"transformer.h.{layer}"
        qkv = [params[f"{b}.attn.{p}.weight"] for p in "qkv"]
        state |= {  # GPT-2's Conv1D holds [in, out]: §14.2's [out, in] transposed, c_attn = q, k, v side by side
            f"{h}.ln_1.weight": params[f"{b}.attn_norm.weight"],
            f"{h}.ln_1.bias": params[f"{b}.attn_norm.bias"],
            f"{h}.attn.c_attn.weight": np.concatenate(qkv, axis=0).T,
            f"{h}.attn.c_attn.bias": np.concatenate([params[f"{b}.attn.{p}.bias"] for p in "qkv"]),
            f"{h}.attn.c_proj.weight": params[f"{b}.attn.out.weight"].T,
            f"{h}.attn.c_proj.bias": params[f"{b}.attn.out.bias"],
            f"{h}.ln_2.weight": params[f"{b}.mlp_norm.weight"],
            f"{h}.ln_2.bias": params[f"{b}.mlp_norm.bias"],
            f"{h}.mlp.c_fc.weight": params[f"{b}.mlp.up.weight"].T,
            f"{h}.mlp.c_fc.bias": params[f"{b}.mlp.up.bias"],
            f"{h}.mlp.c_proj.weight": params[f"{b}.mlp.down.weight"].T,
            f"{h}.mlp.c_proj.bias": params[f"{b}.mlp.down.bias"],
        }
    state |= {
        "transformer.ln_f.weight": params["final_norm.weight"],
        "transformer.ln_f.bias": params["final_norm.bias"],
    }
    state["lm_head.weight"] = params["embed"] if architecture["tied_head"] else params["head.weight"]
    return loaded(transformers.GPT2LMHeadModel(config), state)


def llama_model(architecture: dict, params: dict):
    positions = architecture["positions"]
    rope = {"rope_type": "default", "rope_theta": positions["base"]}
    scaling = positions.get("scaling")
    if scaling and scaling["kind"] == "linear":
        rope |= {"rope_type": "linear", "factor": scaling["factor"]}
    elif scaling:
        rope |= {
            "rope_type": "llama3",
            "factor": scaling["factor"],
            "low_freq_factor": scaling["low_freq_factor"],
            "high_freq_factor": scaling["high_freq_factor"],
            "original_max_position_embeddings": scaling["original_context"],
        }
    biases = architecture["biases"]
    assert biases["qkv"] == biases["attn_out"], "Llama's attention_bias is one switch"
    config = transformers.LlamaConfig(
        vocab_size=architecture["vocab_size"],
        hidden_size=architecture["width"],
        intermediate_size=architecture["mlp"]["width"],
        num_hidden_layers=architecture["layers"],
        num_attention_heads=architecture["heads"],
        num_key_value_heads=architecture["kv_heads"],
        head_dim=architecture["head_dim"],
        max_position_embeddings=architecture["context_length"],
        rms_norm_eps=architecture["norm"]["eps"],
        rope_parameters=rope,
        tie_word_embeddings=architecture["tied_head"],
        attention_bias=biases["qkv"],
        bos_token_id=None,
        eos_token_id=None,
        mlp_bias=biases["mlp"],
    )
    names = {
        "attn_norm.weight": "input_layernorm.weight",
        "mlp_norm.weight": "post_attention_layernorm.weight",
        **{f"attn.{p}.{kind}": f"self_attn.{p}_proj.{kind}" for p in "qkv" for kind in ("weight", "bias")},
        **{f"attn.out.{kind}": f"self_attn.o_proj.{kind}" for kind in ("weight", "bias")},
        **{f"mlp.{p}.{kind}": f"mlp.{p}_proj.{kind}" for p in ("gate", "up", "down") for kind in ("weight", "bias")},
    }
    state = {"model.embed_tokens.weight": params["embed"], "model.norm.weight": params["final_norm.weight"]}
    for name, values in params.items():
        if name.startswith("block"):
            layer, rest = name.removeprefix("block").split(".", 1)
            state[f"model.layers.{layer}.{names[rest]}"] = values
    state["lm_head.weight"] = params["embed"] if architecture["tied_head"] else params["head.weight"]
    return loaded(transformers.LlamaForCausalLM(config), state)


def loaded(model, state: dict):
    """The model with exactly these values in every parameter (none left at its random init)."""
    parameters = dict(model.named_parameters(remove_duplicate=False))
    assert set(parameters) == set(state), f"unmapped: {set(parameters) ^ set(state)}"
    with torch.no_grad():
        for name, values in state.items():
            assert tuple(parameters[name].shape) == values.shape, name
            parameters[name].copy_(to_torch(values))
    return model.eval()


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        return model(torch.from_numpy(tokens[None, :])).logits[0].numpy()


def assert_equal_logits(ours: np.ndarray, theirs: np.ndarray, what: str) -> float:
    gap = float(np.abs(ours - theirs).max())
    bound = HF_TOLERANCE * (1 + float(np.abs(theirs).max()))
    assert gap <= bound, f"{what}: logits differ by {gap:.3g} (bound {bound:.3g})"
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.98, f"{what}: argmax differs"
    return gap


def member(rng: np.random.Generator, architecture: dict) -> tuple[dict, dict, np.ndarray]:
    """The member's meta and float32 parameters read back from its bytes, and C random tokens (every
    position of the context is exercised)."""
    weights, quants = random_weights(rng, architecture)
    meta, image = oracle.lay_out(architecture, weights, quants)
    tokens = rng.integers(0, architecture["vocab_size"], architecture["context_length"])
    return meta, oracle.dequantize(meta, image), tokens


def cache_effect(meta: dict, params: dict, tokens: np.ndarray, exact: np.ndarray) -> None:
    """§14.4's float16 cache rounds k and v: the oracle must apply it (the logits move) and the move must
    stay small beside the logits themselves."""
    spec = oracle.forward(meta, params, tokens)
    moved = float(np.abs(spec - exact).max())
    assert 0 < moved <= 1e-2 * (1 + float(np.abs(exact).max())), f"the float16 cache moved logits by {moved}"


@pytest.mark.parametrize(("activation", "mlp_kind", "tied"), [("gelu_new", "gelu_tanh", True), ("gelu", "gelu", False)])
def test_gpt2_members_equal_transformers(rng, activation, mlp_kind, tied):
    architecture = random_architecture(rng, "gpt2", mlp={"kind": mlp_kind, "width": 128}, tied_head=tied)
    meta, params, tokens = member(rng, architecture)
    theirs = hf_logits(gpt2_model(architecture, params, activation), tokens)
    ours = oracle.forward(meta, params, tokens, cache_dtype=np.float32)
    assert_equal_logits(ours, theirs, f"GPT-2 {activation}, tied {tied}")
    cache_effect(meta, params, tokens, ours)


def gguf_permuted(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute: each head's rows (half, k) become (k, half), so
    GGUF's adjacent-pair RoPE rotates the pairs Hugging Face's rotate_half does."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


LLAMA3 = {"kind": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 32}
"""With θ base 10,000 and head width 16..32 the wavelengths start at 2π: the first below C0/hi = 8 (kept), one or
two between (smoothed), the rest past C0/lo = 32 (divided), so every branch of llama3 scaling is exercised."""
ALL_BIASES = {"qkv": True, "attn_out": True, "mlp": True, "head": False}


@pytest.mark.parametrize(
    ("kv_heads", "scaling", "tied", "biases"),
    [(2, LLAMA3, False, None), (1, {"kind": "linear", "factor": 4.0}, True, ALL_BIASES), (4, None, False, None)],
    ids=["gqa-llama3-untied", "mqa-linear-tied-biases", "mha-plain"],
)
def test_llama_members_equal_transformers_in_both_rotations(rng, kv_heads, scaling, tied, biases):
    positions = {"kind": "rope", "base": 10000.0, "rotation": "halves"} | ({"scaling": scaling} if scaling else {})
    choices = {"kv_heads": kv_heads, "positions": positions, "tied_head": tied} | ({"biases": biases} if biases else {})
    architecture = random_architecture(rng, "llama", **choices)
    weights, quants = random_weights(rng, architecture)
    meta, image = oracle.lay_out(architecture, weights, quants)
    params = oracle.dequantize(meta, image)
    tokens = rng.integers(0, architecture["vocab_size"], architecture["context_length"])
    theirs = hf_logits(llama_model(architecture, params), tokens)
    ours = oracle.forward(meta, params, tokens, cache_dtype=np.float32)
    assert_equal_logits(ours, theirs, "Llama, halves")
    cache_effect(meta, params, tokens, ours)

    # The same model stored as GGUF stores it: q and k rows permuted within each head, rotated in pairs.
    pairs = architecture | {"positions": positions | {"rotation": "pairs"}}
    heads = {"q": architecture["heads"], "k": architecture["kv_heads"]}
    permuted = dict(weights)
    for name in weights:
        part = name.split(".")[-2] if ".attn." in name else None
        if part in heads:
            permuted[name] = gguf_permuted(weights[name], heads[part])
    pairs_meta, pairs_image = oracle.lay_out(pairs, permuted, quants)
    pairs_params = oracle.dequantize(pairs_meta, pairs_image)
    for name, part in [(n, n.split(".")[-2]) for n in params if ".attn." in n]:
        if part in heads:  # blocks run along rows, so permuting rows commutes with quantizing them
            np.testing.assert_array_equal(pairs_params[name], gguf_permuted(params[name], heads[part]))
    assert_equal_logits(oracle.forward(pairs_meta, pairs_params, tokens, cache_dtype=np.float32), theirs, "pairs")


def gguf_probe_rows(rng: np.random.Generator) -> np.ndarray:
    """Rows of blocks that reach the rules' edges: all zeros, the largest |x| twice with opposite signs (q4's
    first-on-ties), products landing on .5 (round half away / trunc + 8.5), tiny and huge scales (float16
    subnormal d, d near its largest), and plain random blocks."""
    blocks = [np.zeros(32), np.r_[3.0, -3.0, rng.uniform(-3, 3, 30)], np.r_[-3.0, 3.0, rng.uniform(-3, 3, 30)]]
    for _ in range(4):
        amax = rng.uniform(0.5, 4)
        halves = (rng.integers(-127, 127, 31) + 0.5) * amax / 127
        blocks.append(np.r_[amax, halves])
        blocks.append(np.r_[-amax, (rng.integers(-8, 8, 31) + 0.5) * amax / 8])
    # d = 2^-4 exactly, so x · id is exactly 0.5 - 2^-25: roundf gives 0 where floor(x + 0.5) in float32 gives 1
    just_under_half = (0.5 - 2.0**-25) * 2.0**-4 * rng.choice([-1.0, 1.0], 31)
    blocks.append(np.r_[127 * 2.0**-4, just_under_half])
    blocks += [rng.standard_normal(32) * 1e-6, rng.standard_normal(32) * 3e-3, rng.uniform(-1, 1, 32) * 60000]
    blocks += list(rng.standard_normal((65, 32)) * rng.uniform(0.01, 10, (65, 1)))  # 80 blocks: 20 rows
    return np.concatenate(blocks).astype(np.float32).reshape(-1, 128)


@pytest.mark.parametrize(("quant", "qtype"), [("q8", "Q8_0"), ("q4", "Q4_0")])
def test_block_quantization_is_byte_identical_to_gguf(rng, quant, qtype):
    rows = gguf_probe_rows(rng)
    ours = oracle.quantize(rows, quant)[0]
    theirs = gguf_quants.quantize(rows, GGMLQuantizationType[qtype])
    assert ours == theirs.tobytes(), f"{quant}: bytes differ from gguf's {qtype}"
    entry = {"offset": 0, "shape": list(rows.shape), "quant": quant}
    ours_back = oracle.dequantize_tensor(np.frombuffer(ours, np.uint8), entry)
    np.testing.assert_array_equal(ours_back, gguf_quants.dequantize(theirs, GGMLQuantizationType[qtype]))


def hugging_face_strided_targets(length: int, max_length: int, stride: int) -> list[tuple[int, int, list[int]]]:
    """The loop of transformers' "Perplexity of fixed-length models" guide, transcribed: each window's input
    span and the positions it scores (labels left at -100 are not scored, and the model's label shift drops
    the window's first token)."""
    windows, prev_end_loc = [], 0
    for begin_loc in range(0, length, stride):
        end_loc = min(begin_loc + max_length, length)
        trg_len = end_loc - prev_end_loc
        labels = list(range(begin_loc, end_loc))
        labels[: len(labels) - trg_len] = [-100] * (len(labels) - trg_len)
        windows.append((begin_loc, end_loc, [label for label in labels[1:] if label != -100]))
        prev_end_loc = end_loc
        if end_loc == length:
            break
    return windows


def test_scoring_windows_are_hugging_faces_strided_perplexity(rng):
    for _ in range(200):
        context = int(rng.integers(2, 40))
        length = int(rng.integers(1, 6 * context))
        ours = [(b, e, list(range(first, e))) for b, e, first in oracle.scoring_windows(length, context)]
        assert ours == hugging_face_strided_targets(length, context, context // 2), (length, context)
        scored = [target for _, _, targets in ours for target in targets]
        assert scored == list(range(1, length)), "every position but the first, once, in order"
