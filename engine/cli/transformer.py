"""The verbs' version-2 paths (docs/FORMATS.md §14): infer and eval on a transformer, and what generate and ask
need beside their version-1 code. One GPU each; a model without a tokenizer takes token pixels only."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import PxglError
from .report import emit_json, progress_bar, report_predictions

if TYPE_CHECKING:
    import numpy as np

    from ..generation import Sampling
    from ..loading import Runnable
    from ..tokenizer import Tokenizer
    from ..transformer.model import TransformerModel

TruncateOption = Annotated[
    bool,
    typer.Option(
        "--truncate-prompt",
        help="Version 2: a prompt that with the new tokens is past the model's context keeps its last tokens "
        "that fit (bos stays first) instead of being refused. Version 1 always reads its last window.",
    ),
]

RepeatPenaltyOption = Annotated[
    float,
    typer.Option(
        "--repeat-penalty",
        help="Version 2: divide the positive logits (multiply the negative) of every token already in the "
        "sequence by this, before choosing (0 < R ≤ 10; 1: off). Small models loop without one.",
    ),
]


def version_2_stream_options(runnable: "Runnable", options: dict, prompts: int) -> tuple[dict, dict]:
    """What a generation's stream and its engine take beyond version 1's: a version-2 engine's options and
    one KV-cache slot a prompt; a version-1 model refuses a repetition penalty (its generation has none)."""
    if is_transformer(runnable):
        return options, {"slots": prompts}
    if options.get("repetition_penalty", 1.0) != 1.0:
        raise PxglError("--repeat-penalty: version-1 generation has no repetition penalty; it is version 2's")
    return {}, {}


def is_transformer(runnable: "Runnable") -> bool:
    from ..transformer.model import TransformerModel

    return isinstance(runnable.model, TransformerModel)


def vocab_of(runnable: "Runnable") -> int:
    """The model's vocabulary size, either version."""
    spec = runnable.model.spec
    return spec.architecture.vocab_size if is_transformer(runnable) else spec.vocab_size  # type: ignore[union-attr]


def one_gpu(devices: list[int] | None) -> int | None:
    if devices is not None and len(devices) > 1:
        raise PxglError("a version-2 model runs on one GPU: give one --device number")
    return None if devices is None else devices[0]


def infer_transformer(
    runnable: "Runnable",
    prompts: list[str] | None,
    input_file: Path | None,
    written: dict[str, Path],
    devices: list[int] | None,
    as_json: bool,
    truncate: bool,
) -> None:
    """`pxgl infer` on a version-2 model: text prompts (`prompts`) or a token texture (`input_file`) in,
    prediction pixels (§14.5) out; `written`: the files asked for (`out`, `tokens_out`)."""
    from ..engine import Engine
    from ..pxi import write_rgb
    from ..transformer.pixels import encode_rows, read_token_rows

    model = runnable.model
    vocab = model.spec.architecture.vocab_size
    device = one_gpu(devices)
    tokenizer = None
    if input_file is not None:
        rows = [row.tolist() for row in read_token_rows(input_file, vocab)]
    else:
        assert prompts is not None
        tokenizer = model.tokenizer
        with progress_bar(len(prompts)) as bar:
            task = bar.add_task("tokenizing", total=len(prompts))
            rows = []
            for text in prompts:
                rows.append(tokenizer.encode(text))
                bar.advance(task, 1)
    with Engine(runnable, device=device) as engine:
        with progress_bar(len(rows)) as bar:
            task = bar.add_task("predicting", total=len(rows))
            predictions = engine.predict_ids(rows, on_tile=lambda n: bar.advance(task, n), truncate=truncate)
        renderer = engine.gpu.renderer
    if "tokens_out" in written:
        write_rgb(written["tokens_out"], encode_rows(rows, vocab))
    if "out" in written:
        write_rgb(written["out"], predictions)
    report_predictions(transformer_records(predictions, tokenizer, prompts), written, as_json, renderer)


def transformer_records(
    predictions: "np.ndarray", tokenizer: "Tokenizer | None", prompts: list[str] | None
) -> list[dict]:
    """One record per prompt: row, (prompt,) id, confidence, its pixels (one, or two past 65,536 ids), (text)."""
    from ..transformer.pixels import pixel_ids

    records = []
    for row, pixels in enumerate(predictions):
        token = int(pixel_ids(pixels[0])) if len(pixels) == 2 else int(pixels[0, 0]) + 256 * int(pixels[0, 1])
        confidence = int(pixels[1, 0]) if len(pixels) == 2 else int(pixels[0, 2])
        record: dict = {"row": row} | ({"prompt": prompts[row]} if prompts is not None else {})
        record |= {"id": token, "confidence": round(confidence / 255, 4)}
        record["pixel"] = pixels.tolist() if len(pixels) == 2 else pixels[0].tolist()
        if tokenizer is not None:
            record["text"] = tokenizer.decode([token])
        records.append(record)
    return records


def evaluate_transformer(
    runnable: "Runnable", texts: list[Path] | None, devices: list[int] | None, as_json: bool
) -> None:
    """`pxgl eval` on a version-2 model (§14.6): --text files only (no held-out split is recorded for one)."""
    from ..corpus import paragraphs
    from ..engine import Engine
    from ..reading import read_text
    from ..transformer.scoring import score_documents

    if not texts:
        raise PxglError(f"{runnable.model.source}: a version-2 model records no held-out text; give --text FILE")
    tokenizer = runnable.model.tokenizer
    contents = [read_text(path, "text file") for path in texts]
    documents = [document for content in contents for document in paragraphs(content)]
    about = f"{len(documents)} documents of {', '.join(path.name for path in texts)}"
    total = 0 if as_json else sum(len(document.encode("utf-8")) for document in documents)
    with Engine(runnable, device=one_gpu(devices)) as engine:
        with progress_bar(total) as bar:
            task = bar.add_task("scoring", total=total)
            scores = score_documents(engine, tokenizer, documents, lambda n: bar.advance(task, n))
        executor_name, renderer = engine.executor_name, engine.gpu.renderer
    record = {"model": runnable.model.source, "text": about, "executor": executor_name, **scores.record()}
    if as_json:
        emit_json(record)
        return
    context = runnable.model.spec.architecture.context_length
    typer.echo(f"{runnable.model.source} on {about}")
    typer.echo(
        f"  positions      {scores.positions:,} ({scores.bytes:,} bytes; windows of {context}, stride {context // 2})"
    )
    typer.echo(f"  top-1          {scores.top1:.2%}")
    typer.echo(f"  perplexity     {scores.perplexity:.2f}")
    typer.echo(f"  bits per byte  {scores.bits_per_byte:.4f}")
    typer.echo(f"  scored by the {executor_name} executor on {renderer}")


def decode_transformer_pixels(file: Path, model: "TransformerModel", as_json: bool) -> None:
    """`pxgl decode` of a version-2 model's token texture or prediction pixels (§14.5), one line a row."""
    from ..pxi import MAX_TOKEN_PIXELS, read_rgb
    from ..transformer.pixels import decode_rows, is_predictions

    vocab = model.spec.architecture.vocab_size
    tokenizer = model.tokenizer
    pixels = read_rgb(file, MAX_TOKEN_PIXELS, kind="token texture or prediction pixels")
    if not is_predictions(pixels, vocab):
        for row, ids in enumerate(decode_rows(pixels, vocab, str(file))):
            text = tokenizer.decode(ids.tolist())
            if as_json:
                emit_json({"row": row, "ids": ids.tolist(), "text": text})
            else:
                typer.echo(text)
        return
    for record in transformer_records(pixels, tokenizer, None):
        if record["id"] >= vocab:
            raise PxglError(f"{file}: row {record['row']}: token id {record['id']} ≥ vocab size {vocab}")
        if as_json:
            emit_json({key: record[key] for key in ("row", "id", "text", "confidence")})
        else:
            typer.echo(f"{record['text']!r}  id {record['id']}  confidence {record['confidence']:.1%}")


def generate_pixels(
    runnable: "Runnable",
    input_file: Path,
    out: Path | None,
    steps: int,
    sampling: "Sampling",
    stops: list[bytes],
    top_logprobs: int,
    device: int | None,
    as_json: bool,
    options: dict,
) -> None:
    """`pxgl generate --input` on a version-2 model without a tokenizer: token pixels in, the generated ids
    out (each row's, `--out` their film strip, §11); no text, so no stop strings."""
    from ..engine import Engine
    from ..pxi import write_rgb
    from ..transformer.pixels import encode_rows, read_token_rows

    if stops:
        raise PxglError(f"--stop: {runnable.model.source} has no tokenizer, so its tokens have no text to stop at")
    rows = [row.tolist() for row in read_token_rows(input_file, vocab_of(runnable))]
    with Engine(runnable, device=device, slots=len(rows)) as engine:
        generation = engine.generate(rows, steps, sampling, top_logprobs=top_logprobs, **options)
    if out is not None:
        write_rgb(out, encode_rows(generation.tokens.tolist(), vocab_of(runnable)))
    for r in range(len(rows)):
        tokens = generation.tokens[r].tolist()
        if not as_json:
            typer.echo(f"row {r}: {' '.join(map(str, tokens))}")
            continue
        record = {"row": r, "tokens": tokens, "logprobs": [round(float(lp), 6) for lp in generation.logprobs[r]]}
        if top_logprobs:
            pairs = zip(generation.top_ids[r].tolist(), generation.top_logprobs[r].tolist(), strict=True)
            record["top_logprobs"] = [
                [{"id": i, "logprob": round(lp, 6)} for i, lp in zip(ids, lps, strict=True)] for ids, lps in pairs
            ]
        emit_json(record | ({"out": str(out)} if out is not None else {}))
    if out is not None and not as_json:
        typer.echo(f"→ {out}: the generated tokens' film strip, {len(rows)} row(s)")
