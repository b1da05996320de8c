"""The meta reader (docs/FORMATS.md §2): every documented check, and no other exception escapes."""

import contextlib
import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pxgl.errors import PxglError
from pxgl.loading import load_model
from pxgl.pxi import write_rgb
from pxgl.spec import meta_path_for, read_meta, spec_from_meta

from tests.models import random_model
from tests.reference.models import write_random_member


@pytest.fixture
def meta(tmp_path, rng) -> dict:
    model = random_model(tmp_path, rng, vocab=300, embed=8, hidden=12, window=4)
    return json.loads(meta_path_for(tmp_path / "random.pxi").read_text()) | {"_model": model}


def edited(meta: dict, edit) -> dict:
    m = copy.deepcopy({k: v for k, v in meta.items() if k != "_model"})
    edit(m)
    return m


def test_valid_meta_builds_the_spec(meta):
    spec = spec_from_meta(edited(meta, lambda m: None))
    assert (spec.vocab_size, spec.embed_dim, spec.hidden[0], spec.context_window) == (300, 8, 12, 4)
    assert spec.logits_side == 18  # ceil(sqrt(300))
    assert spec.to_meta() | {"eval": {}} == edited(meta, lambda m: m.update(eval={}))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("vocab_size"), "missing key"),
        (lambda m: m.update(format="gguf"), "pxgl reads 'pixellm' versions 0 to 1"),
        (lambda m: m.update(version=0.0), "pxgl reads 'pixellm' versions 0 to 1"),
        (lambda m: m.update(version=False), "pxgl reads 'pixellm' versions 0 to 1"),
        (lambda m: m.update(embed_dim="8"), "'embed_dim' must be an integer"),
        (lambda m: m.update(hidden_dim=True), "'hidden_dim' must be an integer"),
        (lambda m: m.update(vocab_size=1), r"'vocab_size' = 1 is outside 2..65536"),
        (lambda m: m.update(context_window=0), "'context_window' = 0 is outside"),
        (lambda m: m.update(image=[1, 2]), "'image' must be an object"),
        (lambda m: m["image"].update(width=0), "'width' = 0 is outside"),
        (lambda m: m.update(tokenizer="../etc/passwd"), "plain file name"),
        (lambda m: m.update(tokenizer=".."), "plain file name"),
        (lambda m: m.update(tokenizer="."), "plain file name"),
        (lambda m: m.update(tokenizer="tok\x00.json"), "plain file name"),
        (lambda m: m.update(context_window=16385), "'context_window' = 16385 is outside 1..16384"),
        (lambda m: m["tensors"]["embed"].update(scale=10**400), "float32 holds"),
        (lambda m: m["tensors"]["embed"].update(scale=1e300), "float32 holds"),
        (lambda m: m["tensors"]["embed"].update(scale=1e-60), "float32 holds"),
        (lambda m: m["tensors"].pop("out"), "must name exactly"),
        (lambda m: m["tensors"].update(extra={}), "must name exactly"),
        (lambda m: m["tensors"]["embed"].pop("scale"), "tensor 'embed' lacks scale"),
        (lambda m: m["tensors"]["embed"].update(shape=[8, 300]), "does not match the model's dimensions"),
        (lambda m: m["tensors"]["hidden"].update(scale=float("nan")), "float32 holds"),
        (lambda m: m["tensors"]["hidden"].update(scale=-1.0), "float32 holds"),
        (lambda m: m["tensors"]["out"].update(zero_point=256), "'zero_point' = 256 is outside 0..255"),
        (lambda m: m["tensors"]["b_out"].update(offset=m["tensors"]["embed"]["offset"]), "overlap"),
        (lambda m: m["image"].update(height=1), "run past the image"),
        (lambda m: m["tensors"]["out"].update(offset=10**9), "outside 0.."),
    ],
)
def test_each_bad_meta_has_its_own_message(meta, edit, message):
    with pytest.raises(PxglError, match=message) as info:
        spec_from_meta(edited(meta, edit), "m.json")
    assert str(info.value).startswith("m.json") and "\n" not in str(info.value)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_corruption_is_rejected_cleanly_or_still_valid(meta, data):
    # `meta` is only read: each example edits a deep copy.
    m = edited(meta, lambda m: None)
    target = m
    path = data.draw(st.lists(st.sampled_from(["image", "tensors", "embed", "out", "b_hidden"]), max_size=2))
    for key in path:
        if isinstance(target.get(key), dict):
            target = target[key]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(values)
    with contextlib.suppress(PxglError):
        spec_from_meta(m)


def test_unreadable_and_non_json_meta(tmp_path):
    with pytest.raises(PxglError, match="no such meta file"):
        read_meta(tmp_path / "absent.meta.json")
    bad = tmp_path / "bad.meta.json"
    bad.write_text("{not json")
    with pytest.raises(PxglError, match="not valid JSON"):
        read_meta(bad)
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PxglError, match="nested too deeply"):
        read_meta(bad)
    bad.write_text('{"vocab_size": 2, "vocab_size": 3}')
    with pytest.raises(PxglError, match="key 'vocab_size' appears twice in one object"):
        read_meta(bad)


def test_weights_image_must_match_its_meta(meta, tmp_path):
    model = meta["_model"]
    h, w, _ = model.weights.shape
    write_rgb(tmp_path / "random.pxi", np.zeros((h - 1, w, 3), np.uint8))
    with pytest.raises(PxglError, match=f"image is {w}x{h - 1} but its meta says {w}x{h}"):
        load_model(tmp_path / "random.pxi")
    with pytest.raises(PxglError, match=r"a model is a weights \.pxi"):
        load_model(tmp_path / "random.png")


@pytest.fixture
def meta_v1(tmp_path, rng) -> dict:
    """A version-1 attention member with two layers (every kind of v1 key present)."""
    context = {"mode": "attention", "window": 6, "concat": 2, "head_dim": 5}
    arch = {"vocab_size": 300, "embed_dim": 8, "context": context, "hidden": [12, 12], "residual": True}
    path = write_random_member(tmp_path, rng, arch, name="v1")
    return json.loads(meta_path_for(path).read_text())


V1_CASES = [
    (lambda m: m.pop("context"), r"missing key\(s\) context"),
    (lambda m: m.pop("hidden"), r"missing key\(s\) hidden"),
    (lambda m: m.pop("residual"), r"missing key\(s\) residual"),
    (lambda m: m.update(context=[1]), "context must be an object with mode and window"),
    (lambda m: m["context"].update(mode="lstm"), "mode 'lstm' is not one of mean, concat, attention"),
    (lambda m: m["context"].pop("head_dim"), "the attention context has exactly concat, head_dim, mode, window"),
    (lambda m: m["context"].update(mode="mean"), "the mean context has exactly mode, window"),
    (lambda m: m["context"].update(window=0), "'window' = 0 is outside 1..16384"),
    (lambda m: m["context"].update(window=16385), "'window' = 16385 is outside 1..16384"),
    (lambda m: m["context"].update(concat=7), "'concat' = 7 is outside 0..6"),
    (lambda m: m["context"].update(head_dim=0), "'head_dim' = 0 is outside 1..4096"),
    (lambda m: m["context"].update(head_dim="5"), "'head_dim' must be an integer"),
    (lambda m: m.update(hidden=[]), "'hidden' must list 1 to 4 layer widths"),
    (lambda m: m.update(hidden=[12, 12, 12, 12, 12]), "'hidden' must list 1 to 4 layer widths"),
    (lambda m: m.update(hidden=[12, 0]), "hidden layer 1 width 0 is outside 1..4096"),
    (lambda m: m.update(hidden=[12, 4097]), "hidden layer 1 width 4097 is outside 1..4096"),
    (lambda m: m.update(hidden=[12, True]), "hidden layer 1 width True is outside"),
    (lambda m: m.update(residual="yes"), "'residual' must be true or false"),
    (lambda m: m.update(vocab_size=255), r"'vocab_size' = 255 is outside 256..65536"),
    (lambda m: m.update(version=2), "pixellm meta version 2; this pxgl reads 0 to 1"),
    (lambda m: m["tensors"].pop("attn.pos"), "must name exactly"),
    (lambda m: m["tensors"].update({"layer2.weight": {}}), "must name exactly"),
    (lambda m: m.update(hidden=[12, 13]), r"tensor 'layer1.weight': shape \[12, 12\] does not match"),
    (lambda m: m["context"].update(head_dim=6), r"tensor 'attn.query': shape \[8, 5\] does not match"),
    (lambda m: m["image"].update(width=16384, height=16384), "past the pixel-file limit"),
]


@pytest.mark.parametrize(("edit", "message"), V1_CASES)
def test_each_bad_v1_meta_has_its_own_message(meta_v1, edit, message):
    with pytest.raises(PxglError, match=message) as info:
        spec_from_meta(edited(meta_v1, edit), "m.json")
    assert str(info.value).startswith("m.json") and "\n" not in str(info.value)


def test_valid_v1_meta_round_trips(meta_v1):
    spec = spec_from_meta(meta_v1)
    assert spec.version == 1 and spec.context.mode == "attention" and spec.hidden == (12, 12)
    assert spec.context_dim == 2 * 8 + 5 and spec.architecture.is_residual(1)
    assert spec.to_meta() == meta_v1
