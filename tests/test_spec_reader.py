"""docs/FORMATS.md §14 read by tests/spec_reader (written from the spec alone: numpy, Pillow, json) against
pxgl's executors on fresh random members: logits within τ, prediction pixels, sampled tokens replayed with
their log p and alternatives, the viz images, weights cut into several images, and version-2 pxVM programs
decoded and validated. Where the spec is silent the two readings disagree here."""

import hashlib
import itertools
import json
import math
import zipfile

import numpy as np
import pytest
from PIL import Image
from pxgl.cli import app
from pxgl.errors import PxglError
from pxgl.pxi import write_rgb
from pxgl.transformer import read_transformer, write_random_transformer
from pxgl.transformer.fused import FusedTransformer
from pxgl.transformer.gpu import Choice, PassesTransformer, prediction_pixels
from pxgl.transformer.meta import Rope, RopeScaling
from pxgl.transformer.pxvm import PxvmTransformer, compiled_instructions, encode, row_layout
from typer.testing import CliRunner

from tests.spec_reader import choose, evaluate, pixels, program, viz
from tests.spec_reader.forward import SpecModel
from tests.spec_reader.meta import SpecError, check_meta
from tests.test_transformer_engine import random_architecture
from tests.test_transformer_passes import styled
from tests.test_transformer_pxvm import broken_programs

HEAD_GAIN = 4.0
"""Output heads scaled so top-two margins are wide against τ (§14.4's agreement tests)."""


def tau(logits: np.ndarray) -> float:
    return 1e-3 * (1 + float(np.abs(logits).max()))


def near_tie(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] <= 1e-3 * (1 + np.abs(top2[..., 1]))


def write_member(tmp_path, rng, bos: int | None = None, **choices):
    architecture = random_architecture(rng, **choices)
    quant = str(rng.choice(["q8", "q4", "u8", "f16"]))
    path = tmp_path / "member.pxi"
    seed = int(rng.integers(1 << 32))
    write_random_transformer(path, architecture, quant, seed=seed, bos=bos, head_gain=HEAD_GAIN)
    return path, architecture, f"{architecture} {quant}"


def assert_predictions_agree(theirs: np.ndarray, logits: np.ndarray, vocab: int, what: str) -> None:
    """§14.4/§14.5: ids equal but at near-ties, confidence within 1, pixels of the shape §14.5 gives."""
    for row, (pixel_row, row_logits) in enumerate(zip(theirs, logits, strict=True)):
        token, p = pixels.prediction(row_logits)
        ours = np.asarray(pixels.prediction_pixels(token, p, vocab), np.int64)
        assert pixel_row.shape == ours.shape, f"{what}: row {row} is {pixel_row.shape}, §14.5 says {ours.shape}"
        got = pixel_row.astype(np.int64)
        confidence = got[0, 2] if vocab <= 65536 else got[1, 0]
        their_id = pixels.token_of(tuple(got[0])) if vocab > 65536 else int(got[0, 0] + 256 * got[0, 1])
        if near_tie(row_logits):
            continue
        assert their_id == token, f"{what}: row {row} predicts {their_id}, the spec {token}"
        assert abs(int(confidence) - pixels.confidence_byte(p)) <= 1, f"{what}: row {row}'s confidence"


def test_every_executors_logits_and_prediction_pixels_are_the_specs(tmp_path, rng, gpu):
    path, architecture, what = write_member(tmp_path, rng)
    ours = SpecModel.open(path)
    spec, stream = read_transformer(path)
    tokens = [int(t) for t in rng.integers(0, architecture.vocab_size, int(rng.integers(2, 24)))]
    split = int(rng.integers(1, len(tokens)))
    expected = ours.forward(tokens[:split])
    expected = np.concatenate([expected, ours.forward(tokens[split:])])
    assert np.median(~near_tie(expected)) == 1, f"{what}: margins too narrow to compare"

    for name, build in (("passes", PassesTransformer), ("fused", FusedTransformer)):
        model = build(gpu, spec, stream)
        run = model.prefill(0, tokens, all_logits=True)
        gap = float(np.abs(run.logits - expected).max())
        assert gap <= tau(expected), f"{what}: {name}'s logits differ by {gap:.3g}"
        theirs = prediction_pixels(run.ids, run.sums, architecture.vocab_size)
        assert_predictions_agree(theirs, expected, architecture.vocab_size, f"{what}, {name}")
        model.truncate(0, split)
        targets = [int(t) for t in rng.integers(0, architecture.vocab_size, len(tokens) - split)]
        scored = model.prefill(0, tokens[split:], targets=targets).targets
        log_p = np.array([choose.log_softmax(row)[t] for row, t in zip(expected[split:], targets, strict=True)])
        gap = np.abs(scored - log_p).max()
        assert gap <= tau(expected), f"{what}: {name}'s §14.4 evaluation targets after a truncate"
        model.close()

    pxvm = PxvmTransformer(gpu, spec, stream)
    run = pxvm.run(tokens[:split])
    rest = pxvm.run(tokens[split:])
    logits = np.concatenate([run.logits, rest.logits])
    gap = float(np.abs(logits - expected).max())
    assert gap <= tau(expected), f"{what}: pxvm's logits (pieces at {split}) differ by {gap:.3g}"
    steps = min(4, architecture.context_length - len(tokens) - 1)
    first = int(np.argmax(expected[-1]))
    generated, logits = pxvm.generate([first], steps), ours.forward([first])[-1]
    for step, token in enumerate(generated):
        if near_tie(logits):
            break
        assert token == int(np.argmax(logits)), f"{what}: pxvm's greedy step {step}"
        logits = ours.forward([int(token)])[-1]
    pxvm.close()


def test_the_compiled_program_is_the_specs_listing_pixel_for_pixel(tmp_path, rng):
    for _ in range(8):
        path, architecture, what = write_member(tmp_path, rng)
        meta = json.loads(path.with_name("member.meta.json").read_text())
        theirs = encode(row_layout(architecture)[1], compiled_instructions(architecture))
        assert np.array_equal(program.encode(*program.compiled(meta)), theirs), f"{what}: the compiled program"
        scratch, instructions = program.decode(theirs)
        program.validate(scratch, instructions, meta)


def test_the_validators_refusals_are_the_spec_readers(tmp_path, rng):
    """Every broken program pxgl's validator refuses (tests/test_transformer_pxvm.py) is refused by §7.7's rules
    as the spec reader reads them, and the compiled program passes them."""
    architecture = styled(rng, "gpt2", layers=2)
    path = tmp_path / "member.pxi"
    write_random_transformer(path, architecture, "q8", seed=int(rng.integers(1 << 32)))
    spec, what = read_transformer(path)[0], str(architecture)
    meta = json.loads(path.with_name("member.meta.json").read_text())
    program.validate(*program.compiled(meta), meta)
    for case, (image, _) in broken_programs(spec).items():
        with pytest.raises(SpecError):
            scratch, instructions = program.decode(image)
            program.validate(scratch, instructions, meta)
            print(f"{what}: {case} passes the spec reader")


def test_sampled_tokens_log_p_and_alternatives_replay(tmp_path, rng, gpu):
    path, architecture, what = write_member(tmp_path, rng)
    ours = SpecModel.open(path)
    spec, stream = read_transformer(path)
    passes = PassesTransformer(gpu, spec, stream, slots=2)
    tokens = [int(t) for t in rng.integers(0, architecture.vocab_size, int(rng.integers(1, 12)))]
    passes.prefill(0, tokens[:1], choice=Choice())  # another sequence in slot 0, left pending
    choice = Choice(
        temperature=float(rng.choice([0.0, 0.7, 1.0, 1.5])),
        top_k=int(rng.choice([0, 1, 5, 40])),
        top_p=float(rng.choice([1.0, 0.9, 0.5])),
        seed=int(rng.integers(1 << 32)),
        draw_row=int(rng.integers(8)),
        repetition_penalty=float(rng.choice([1.0, 1.3, 0.8])),
        top_logprobs=int(rng.integers(0, 6)),
    )
    steps = 8
    first = passes.prefill(1, tokens, choice=choice)
    rest = passes.decode([0, 1], [Choice(), choice], [1, 1], steps - 1)
    ids = np.concatenate([first.chosen.ids[:, 0], rest.ids[:, 1]])
    logprobs = np.concatenate([first.chosen.logprobs[:, 0], rest.logprobs[:, 1]])
    alternatives = np.concatenate([first.chosen.alternatives[:, 0], rest.alternatives[:, 1]])
    passes.close()

    reading = choose.Choice(choice.temperature, choice.top_k, choice.top_p, choice.seed, choice.repetition_penalty)
    logits = ours.forward(tokens)[-1]
    seen = list(tokens)
    for step in range(steps):
        chosen = choose.choose(logits, reading, seen, choice.draw_row, step)
        log_p = choose.log_softmax(logits)
        if chosen.near_cut or (choice.temperature == 0 and near_tie(logits)):
            break  # §11: a replay stops comparing after a step this close to a cut
        assert ids[step] == chosen.id, f"{what} {choice}: step {step} chose {ids[step]}, the spec {chosen.id}"
        assert abs(logprobs[step] - log_p[chosen.id]) <= tau(logits), f"{what}: step {step}'s log p"
        expected = choose.alternatives(logits, choice.top_logprobs)
        assert [int(i) for i in alternatives[step][: choice.top_logprobs]] == [i for i, _ in expected] or any(
            near_tie(np.array([logits[a], logits[b]])) for (a, _), (b, _) in itertools.pairwise(expected)
        ), f"{what}: step {step}'s alternatives"
        seen.append(chosen.id)
        logits = ours.forward([chosen.id])[-1]


def viz_cli(*args: str) -> dict:
    result = CliRunner().invoke(app, ["viz", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def read_png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("vocab", [None, 70000], ids=["any", "three-byte-ids"])
def test_the_viz_images_are_the_specs(tmp_path, rng, vocab):
    narrow = {} if vocab is None else {"vocab_size": vocab, "width": 32, "heads": 4, "kv_heads": 2, "head_dim": 8}
    bos = int(rng.integers(0, 300))  # §14.8: put first unless the row begins with it
    path, architecture, what = write_member(tmp_path, rng, bos, **narrow)
    ours = SpecModel.open(path)
    n = int(rng.integers(1, min(viz.n_max(ours.meta), 24 if vocab is None else 4) + 1))
    rest = [int(t) for t in rng.integers(0, architecture.vocab_size, n - 1)]
    other = (bos + int(rng.integers(1, architecture.vocab_size))) % architecture.vocab_size  # any id but bos
    row = [bos, *rest] if n == 1 or rng.random() < 0.5 else [other, *rest[1:]]
    tokens = row if row[0] == bos else [bos, *row]
    write_rgb(tmp_path / "prompt.pxi", np.asarray([[pixels.token_pixel(t) for t in row]], np.uint8))
    out = tmp_path / "viz"
    record = viz_cli("-m", str(path), "--input", str(tmp_path / "prompt.pxi"), "-o", str(out))
    trace: dict = {}
    logits = ours.forward(tokens, trace)

    for layer in range(architecture.layers):
        for head in range(architecture.heads):
            image = read_png(out / f"attention_l{layer}_h{head}.png").astype(np.int64)
            expected = viz.attention_image(trace["attention"][layer, head]).astype(np.int64)
            exact = 255 * trace["attention"][layer, head].astype(np.float64)
            midpoint = np.abs(exact - np.floor(exact) - 0.5) <= 255e-3
            differ = (image != expected).any(axis=2)
            assert (np.abs(image - expected) <= 1).all() and not (differ & ~midpoint).any(), f"{what}: l{layer} h{head}"
    saved = np.load(out / "trace.npz")
    gap = float(np.abs(saved["logits"] - logits).max())
    assert gap <= tau(logits), f"{what}: the trace's logits differ by {gap:.3g}"
    residual, scales = viz.residual_image(saved["residual"])
    assert np.array_equal(read_png(out / "residual.png"), residual), f"{what}: residual.png"
    assert record["residual"]["scales"] == pytest.approx(scales, rel=1e-6)
    assert np.array_equal(read_png(out / "logits.png"), viz.logits_image(saved["logits"])), f"{what}: logits.png"
    assert record["logits"]["bin"] == math.ceil(architecture.vocab_size / 1024)
    assert np.array_equal(read_png(out / "tokens.png")[0], [pixels.token_pixel(t) for t in tokens])
    assert_predictions_agree(read_png(out / "prediction.png"), logits[-1:], architecture.vocab_size, what)


def test_weights_cut_into_images_read_as_one_stream(tmp_path, rng, gpu):
    """§14.7 with small images: the stream of a member re-cut into k images (`images`, `name.k.pxi`, a `files`
    record a list) is the same model to both readers; a wrong image is refused by both."""
    path, _, what = write_member(tmp_path, rng)
    meta = json.loads(path.with_name("member.meta.json").read_text())
    stream = SpecModel.open(path)
    spec, pxgl_stream = read_transformer(path)
    count = int(rng.integers(2, 5))
    used = max(t["offset"] for t in meta["tensors"].values()) + 4
    width = int(rng.integers(8, 64))
    rows = math.ceil(math.ceil(len(pxgl_stream) / 3) / (width * count))
    flat = np.zeros(width * rows * count * 3, np.uint8)
    flat[: len(pxgl_stream)] = pxgl_stream
    cut = tmp_path / "cut.pxi"
    names = [cut] + [tmp_path / f"cut.{k}.pxi" for k in range(1, count)]
    records = []
    for k, name in enumerate(names):
        part = flat[k * width * rows * 3 : (k + 1) * width * rows * 3].reshape(rows, width, 3)
        write_rgb(name, part)
        raw = name.read_bytes()
        records.append({"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})
    cut_meta = {k: v for k, v in meta.items() if k not in ("image", "files")}
    cut_meta |= {"images": [{"width": width, "height": rows}] * count, "files": {"weights": records}}
    tmp_path.joinpath("cut.meta.json").write_text(json.dumps(cut_meta))
    assert used <= len(flat)

    again = SpecModel.open(cut)
    for name, values in stream.weights.items():
        assert np.array_equal(again.weights[name], values), f"{what}: {name} across {count} images"
    cut_spec, cut_stream = read_transformer(cut)
    assert np.array_equal(cut_stream[: len(pxgl_stream)], pxgl_stream), f"{what}: pxgl's stream of {count} images"

    write_rgb(names[-1], np.zeros((rows, width, 3), np.uint8))
    with pytest.raises(SpecError):
        SpecModel.open(cut)
    with pytest.raises(Exception, match="cut"):
        read_transformer(cut)
    check_meta(cut_meta)
    del spec, cut_spec


META_MUTATIONS = {
    "attention_scale 1 (an integer is a number)": (("attention_scale",), 1),
    "attention_scale true": (("attention_scale",), True),
    "eps 1": (("norm", "eps"), 1),
    "width 64.0": (("width",), 64.0),
    "layers true": (("layers",), True),
    "version 2.0": (("version",), 2.0),
    "version true": (("version",), True),
    "an extra top-level key": (("extra",), 1),
    "an extra mlp key": (("mlp", "extra"), 1),
    "bos V": (("bos",), "V"),
    "bos 0.0": (("bos",), 0.0),
    "tokenizer null": (("tokenizer",), None),
    "tokenizer a path": (("tokenizer",), "../x.json"),
    "eval a list": (("eval",), []),
    "files without weights": (("files",), {}),
    "offset 2 past a multiple of 4": (("tensors", "embed", "offset"), "+2"),
    "shape of floats": (("tensors", "embed", "shape"), "float"),
    "image with an extra key": (("image", "extra"), 1),
    "tied_head 0": (("tied_head",), 0),
    "kv_heads 3": (("kv_heads",), 3),
    "an odd head_dim under rope": (("head_dim",), "odd"),
    "scaling factor 0.5": (("positions", "scaling", "factor"), 0.5),
    "lo equal to hi": (("positions", "scaling", "low_freq_factor"), "hi"),
    "original_context 8.0": (("positions", "scaling", "original_context"), 8.0),
    "u8 zero_point 256": (("tensors", "embed", "zero_point"), 256),
    "u8 scale 1e-50": (("tensors", "embed", "scale"), 1e-50),
}


def mutated(meta: dict, keys: tuple[str, ...], value: object) -> dict:
    out = json.loads(json.dumps(meta))
    *path, last = keys
    target = out
    for key in path:
        target = target[key]
    old = target.get(last)
    special = {
        "V": lambda: out["vocab_size"],
        "+2": lambda: old + 2,
        "float": lambda: [float(x) for x in old],
        "odd": lambda: old + 1,
        "hi": lambda: out["positions"]["scaling"]["high_freq_factor"],
    }
    target[last] = special[value]() if isinstance(value, str) and value in special else value
    return out


def test_the_meta_checks_of_the_spec_are_pxgls(tmp_path, rng):
    """§14.1's checks: each mutation of a good meta is accepted by both readers or refused by both."""
    scaling = RopeScaling("llama3", 8.0, 1.0, 4.0, 32)
    rope = Rope(10000.0, str(rng.choice(["halves", "pairs"])), scaling)
    architecture = random_architecture(rng, rope=rope)
    path = tmp_path / "member.pxi"
    write_random_transformer(path, architecture, "u8", seed=int(rng.integers(1 << 32)), bos=0)
    meta_file = path.with_name("member.meta.json")
    good = json.loads(meta_file.read_text()) | {"tokenizer": "member.tokenizer.json"}
    verdicts = []
    for what, (keys, value) in META_MUTATIONS.items():
        meta = mutated(good, keys, value)
        try:
            check_meta(meta)
            spec_accepts = True
        except SpecError:
            spec_accepts = False
        meta_file.write_text(json.dumps(meta))
        try:
            read_transformer(path)
            pxgl_accepts = True
        except PxglError as refused:
            assert "\n" not in str(refused), f"{what}: {refused}"
            pxgl_accepts = False
        verdicts.append((what, spec_accepts, pxgl_accepts))
    differ = [v for v in verdicts if v[1] != v[2]]
    assert not differ, f"(mutation, the spec reader accepts, pxgl accepts): {differ}"


@pytest.mark.parametrize("length, context", [(1, 4), (9, 4), (10, 8), (100, 17), (16, 16), (17, 16)])
def test_strided_windows_score_every_target_once(length, context):
    stride = context // 2
    scored: list[int] = []
    for begin, end, first in evaluate.windows(length, context):
        assert end - begin <= context and begin % stride == 0
        assert first - begin >= (1 if begin == 0 else stride) or first == end
        scored += range(first, end)
    assert scored == list(range(1, length))


def test_a_confidence_at_a_half_rounds_up_as_section_3_says(tmp_path, rng, gpu):
    """All logits equal over V = 510 ids (an all-zero head): p = 1/510, 255 · p = ½ exactly, and §3's
    c = floor(255 · p + 0.5) is 1 (round-half-even gave 0)."""
    architecture = random_architecture(rng, vocab_size=510, tied_head=False, biases=frozenset())
    path = tmp_path / "member.pxi"
    write_random_transformer(path, architecture, "f16", seed=int(rng.integers(1 << 32)))
    spec, stream = read_transformer(path)
    head = spec.tensors["head.weight"]
    stream = stream.copy()
    stream[head.offset : head.offset + head.nbytes] = 0
    passes = PassesTransformer(gpu, spec, stream)
    run = passes.prefill(0, [int(t) for t in rng.integers(0, 510, 3)])
    passes.close()
    assert run.ids[0] == 0 and run.sums[0] == 510
    expected = pixels.prediction_pixels(0, 1 / 510, 510)
    assert prediction_pixels(run.ids, run.sums, 510)[0].tolist() == [list(p) for p in expected] == [[0, 0, 1]]


def test_a_version_2_cartridge_is_section_8_5s(tmp_path, rng):
    """`pxgl pack` of a version-2 member: manifest version 2 with formats {"weights": 2}, then the image
    (stored), the meta (deflated, no `files`); its members read by the spec reader are the member's weights."""
    path, _, what = write_member(tmp_path, rng)
    cartridge = tmp_path / "member.pxa"
    result = CliRunner().invoke(app, ["pack", "-m", str(path), "-o", str(cartridge)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(cartridge) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["manifest.json", "weights.pxi", "weights.meta.json"], what
        assert infos[1].compress_type == zipfile.ZIP_STORED and infos[2].compress_type == zipfile.ZIP_DEFLATED
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["version"] == 2 and manifest["formats"] == {"weights": 2}, manifest
        assert "files" not in json.loads(archive.read("weights.meta.json"))
        archive.extractall(tmp_path / "members")
    packed = SpecModel.open(tmp_path / "members" / "weights.pxi")
    written = SpecModel.open(path)
    assert all(np.array_equal(packed.weights[name], values) for name, values in written.weights.items()), what


@pytest.mark.parametrize("verb", ["infer", "viz"])
def test_a_row_that_begins_with_bos_runs_as_it_is(tmp_path, rng, verb):
    """§14.4: bos is put first only where the sequence does not begin with it. A member and a row whose two
    readings (bos once, bos twice) predict different ids, so the verbs' answer tells which ran."""
    for _ in range(40):
        path, architecture, what = write_member(tmp_path, rng, bos=7)
        ours = SpecModel.open(path)
        row = [7, *(int(t) for t in rng.integers(0, architecture.vocab_size, 3))]
        once, twice = ours.forward(row)[-1], (ours.reset(0), ours.forward([7, *row])[-1])[1]
        if np.argmax(once) != np.argmax(twice) and not near_tie(once) and not near_tie(twice):
            break
    else:
        raise AssertionError("no member of 40 whose two readings of the row differ")
    write_rgb(tmp_path / "row.pxi", np.asarray([[pixels.token_pixel(t) for t in row]], np.uint8))
    if verb == "infer":
        result = CliRunner().invoke(app, ["infer", "-m", str(path), "--input", str(tmp_path / "row.pxi"), "--json"])
        assert result.exit_code == 0, result.output
        predicted = json.loads(result.stdout)["id"]
    else:
        record = viz_cli("-m", str(path), "--input", str(tmp_path / "row.pxi"), "-o", str(tmp_path / "viz"))
        predicted = record["prediction"]["id"]
    assert predicted == int(np.argmax(once)), f"{what}: {verb} ran bos twice ({int(np.argmax(twice))})"
