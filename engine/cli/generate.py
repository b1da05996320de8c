"""`pxgl generate` and `pxgl ask`: continue prompts for N tokens on the GPU (docs/FORMATS.md §11), text shown as it
lands."""

import math
import sys
from codecs import getincrementaldecoder
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import PxglError
from ..outputs import Output, check_output_dir, check_writes, write_files
from .app import app
from .options import (
    BatchOption,
    DeviceOption,
    ExecutorOption,
    ForceOption,
    JsonOption,
    ModelOption,
    PredictionsOut,
    model_files,
    one_device,
)
from .predict import read_prompt_lines, single_blas_thread, tokenize
from .report import emit_json, percent, progress_bar, shortened
from .transformer import (
    RepeatPenaltyOption,
    TruncateOption,
    generate_pixels,
    is_transformer,
    version_2_stream_options,
    vocab_of,
)

if TYPE_CHECKING:
    from ..generation import Sampling, TextRow
    from ..loading import Runnable

StepsOption = Annotated[int, typer.Option("-n", "--tokens", help="Tokens to generate per prompt (1..4096).")]
TemperatureOption = Annotated[float, typer.Option("--temperature", "-t", help="0 (default): greedy.")]
TopKOption = Annotated[int | None, typer.Option("--top-k", help="Draw only among the K likeliest tokens.")]
TopPOption = Annotated[float, typer.Option("--top-p", help="Draw only within this much probability mass.")]
SeedOption = Annotated[int, typer.Option("--seed", help="The draw's seed, 0..2^32-1: same seed, same text.")]
StopOption = Annotated[
    list[str] | None, typer.Option("--stop", help="End a row where this text begins (repeatable; not returned).")
]
STRIP_NAMES = "prompt*_logits.png"
"""What --viz writes: prompt0_logits.png, prompt1_logits.png, …"""
ANSWER_RULE = "──"
"""Several answers, as text: each follows a line `── answer R of N ──` (an answer may span lines)."""
LogprobsOption = Annotated[
    int, typer.Option("--logprobs", help="With --json: each token's K likeliest alternatives too (0..20).")
]


def generation_executor(executor: str | None, greedy: bool, top_logprobs: int) -> str:
    """The executor a generation runs on: the one asked for, else the fastest that can (fused generates
    greedily and reports no alternatives; passes does everything)."""
    if executor is not None:
        return executor
    return "auto" if greedy and top_logprobs == 0 else "passes"


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="Prompt text (or use --batch / --input).")] = None,
    steps: StepsOption = 16,
    temperature: TemperatureOption = 0.0,
    top_k: TopKOption = None,
    top_p: TopPOption = 1.0,
    seed: SeedOption = 0,
    stop: StopOption = None,
    logprobs: LogprobsOption = 0,
    batch: BatchOption = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Token texture of the prompts: pixels in, no text encoded.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the generated tokens as a token texture (.pxi).")
    ] = None,
    viz: Annotated[
        Path | None,
        typer.Option("--viz", help="Folder: draw each prompt's logits, a band per step (prompt<r>_logits.png)."),
    ] = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
    truncate_prompt: TruncateOption = False,
    repeat_penalty: RepeatPenaltyOption = 1.0,
) -> None:
    """Generate text: each predicted token becomes the next input token, on the GPU, for -n steps. One
    prompt's text is printed as it is generated."""
    single_blas_thread()
    from ..generation import Sampling, check_steps, check_stops, check_top_logprobs
    from ..loading import open_model
    from ..output_kinds import PIXELS, PNG
    from ..pxi import encode_tokens, read_token_texture, token_ids, write_rgb

    if sum(given is not None for given in (prompt, batch, input_file)) != 1:
        raise PxglError("give a PROMPT, --batch FILE or --input TOKENS.pxi (one of them)")
    check_steps(steps)
    check_top_logprobs(logprobs)
    sampling = Sampling(temperature, top_k, top_p, seed)
    stops = check_stops(stop or [])
    gpu = one_device(device)
    inputs = [*model_files(model), batch, input_file]
    strip = Output(out, "--out", PIXELS) if out is not None else None
    check_writes([strip], inputs, force)
    if viz is not None:
        check_output_dir(viz, "--viz", inputs, {STRIP_NAMES: PNG}, force, [strip])
    runnable = open_model(model, generation_executor(executor, sampling.temperature == 0, logprobs))
    version_2 = is_transformer(runnable)
    if version_2 and viz is not None:
        raise PxglError("--viz draws version-1 generations here; pxgl viz draws a version-2 model")
    if version_2 and input_file is not None and not runnable.model.has_tokenizer:  # type: ignore[union-attr]
        options = {"truncate": truncate_prompt, "repetition_penalty": repeat_penalty}
        generate_pixels(runnable, input_file, out, steps, sampling, stops, logprobs, gpu, as_json, options)
        return
    tokenizer = runnable.model.tokenizer
    if input_file is not None and version_2:
        from ..transformer.pixels import read_token_rows

        rows = [row.tolist() for row in read_token_rows(input_file, vocab_of(runnable))]
        prompts = [tokenizer.decode(row) for row in rows]
    elif input_file is not None:
        pixels, lengths = read_token_texture(input_file, runnable.model.spec.vocab_size)
        ids = token_ids(pixels)
        rows = [ids[r, : lengths[r]].tolist() for r in range(len(ids))]
        prompts = [tokenizer.decode(row) for row in rows]
    else:
        prompts = read_prompt_lines(batch) if batch is not None else [prompt or ""]
        if prompts == [""]:
            raise PxglError("the prompt is empty: give some text to continue (a prompt needs at least one token)")
        rows = tokenize(tokenizer, prompts, bar_shown=not as_json)
    live = len(prompts) == 1 and not as_json
    version_2_options = {"truncate": truncate_prompt, "repetition_penalty": repeat_penalty}
    answers = answer_prompts(
        runnable, prompts, rows, steps, sampling, stops, logprobs, gpu, live, not as_json, version_2_options
    )
    if out is not None:
        # the film strip: each row's tokens up to the one its stop string begins in (never an empty row)
        strips = [[choice.token for choice in answer.steps] for answer in answers]
        if version_2:
            from ..transformer.pixels import encode_rows

            write_rgb(out, encode_rows(strips, vocab_of(runnable)))
        else:
            write_rgb(out, encode_tokens(strips, runnable.model.spec.vocab_size))
    if viz is not None:
        draw_steps(viz, runnable, rows, answers, gpu)
    for number, (text, answer) in enumerate(zip(prompts, answers, strict=True), start=1):
        if live:
            continue
        decoded = answer.data.decode("utf-8", errors="replace")
        if not as_json:
            if len(prompts) > 1:
                typer.echo(f"{ANSWER_RULE} answer {number} of {len(prompts)} {ANSWER_RULE}")
            typer.echo(f"{shown_prompt(text)}{decoded}")
            continue
        record = {
            "prompt": text,
            "text": decoded,
            "tokens": [choice.token for choice in answer.kept],
            "logprobs": [json_float(choice.logprob) for choice in answer.kept],
            "stopped": answer.stopped,
            "finish_reason": answer.finish_reason,
        }
        if logprobs:
            record["top_logprobs"] = [
                [
                    {"id": i, "text": tokenizer.token_bytes(i).decode("utf-8", "replace"), "logprob": json_float(lp)}
                    for i, lp in choice.alternatives
                ]
                for choice in answer.kept
            ]
        emit_json(record | {key: str(path) for key, path in (("out", out), ("viz", viz)) if path is not None})
    if not as_json:
        if out is not None:
            typer.echo(f"→ {out}: the generated tokens' film strip, {len(answers)} row(s)")
        if viz is not None:
            typer.echo(f"→ {viz}: each prompt's logits at every step ({STRIP_NAMES})")


def shown_prompt(prompt: str) -> str:
    """A prompt before its generated text: whole when short, else shortened (report.shortened) and quoted
    so that where it ends stays clear."""
    shown = shortened(prompt)
    return prompt if shown == repr(prompt) else f"{shown} "


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="Prompt text.")],
    model: ModelOption = None,
    steps: StepsOption = 32,
    temperature: TemperatureOption = 0.0,
    top_k: TopKOption = None,
    top_p: TopPOption = 1.0,
    seed: SeedOption = 0,
    stop: StopOption = None,
    out: PredictionsOut = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
    truncate_prompt: TruncateOption = False,
    repeat_penalty: RepeatPenaltyOption = 1.0,
) -> None:
    """Ask a model: its answer streams as text, then shows as colour, a block per token coloured by the
    token's prediction pixel (id % 256, id // 256, confidence); --out writes the pixels, one row per token."""
    single_blas_thread()
    import numpy as np
    from rich.console import Console
    from rich.text import Text

    from ..generation import Sampling, check_steps, check_stops
    from ..loading import open_model
    from ..output_kinds import PREDICTIONS
    from ..pxi import write_rgb

    check_steps(steps)
    sampling = Sampling(temperature, top_k, top_p, seed)
    stops = check_stops(stop or [])
    gpu = one_device(device)
    check_writes([Output(out, "--out", PREDICTIONS) if out is not None else None], model_files(model), force)
    if prompt == "":
        raise PxglError("the prompt is empty: give some text to continue (a prompt needs at least one token)")
    runnable = open_model(model, generation_executor(executor, sampling.temperature == 0, 0))
    tokenizer = runnable.model.tokenizer
    rows = [tokenizer.encode(prompt)]
    version_2_options = {"truncate": truncate_prompt, "repetition_penalty": repeat_penalty}
    (answer,) = answer_prompts(
        runnable, [prompt], rows, steps, sampling, stops, 0, gpu, not as_json, False, version_2_options
    )
    # one prediction pixel (§5) per step: step s predicts the prompt and the s tokens before it
    pixels = np.array([(c.token % 256, c.token // 256, c.confidence) for c in answer.steps], np.uint8)[:, None]
    if out is not None:
        write_rgb(out, pixels)
    kept = answer.kept
    if as_json:
        emit_json(
            {
                "prompt": prompt,
                "text": answer.data.decode("utf-8", errors="replace"),
                "tokens": [c.token for c in kept],
                "pixels": [[c.token % 256, c.token // 256, c.confidence] for c in kept],
                "confidences": [round(c.confidence / 255, 4) for c in kept],
                "stopped": answer.stopped,
                "finish_reason": answer.finish_reason,
            }
            | ({"out": str(out)} if out is not None else {})
        )
        return
    blocks = [("██", f"rgb({r},{g},{b})") for r, g, b in pixels[:, 0].tolist()]
    first = answer.steps[0]
    console = Console(highlight=False, soft_wrap=True)
    written = f" → {out}" if out is not None else ""
    console.print(Text.assemble(*blocks, f"  {len(blocks)} token(s){written}"))
    console.print(
        f"the first: {tokenizer.decode([first.token])!r}  pixel {tuple(pixels[0, 0].tolist())}  id {first.token}  "
        f"confidence {percent(first.confidence)}"
    )


def answer_prompts(
    runnable: "Runnable",
    prompts: list[str],
    rows: list[list[int]],
    steps: int,
    sampling: "Sampling",
    stops: list[bytes],
    top_logprobs: int,
    gpu: int | None,
    live: bool,
    bar: bool = False,
    version_2_options: dict | None = None,
) -> "list[TextRow]":
    """Generate every prompt's answer (`rows`: the prompts' ids) on GPU `gpu`; `live` (one prompt): print the
    prompt, then its text as it arrives. The prompt is printed with the first token, so that an error before
    it (the engine refusing the model, the GPU failing) is the only output. `bar` (not live): a progress bar
    of the tokens generated. `version_2_options`: what only a version-2 engine's stream takes (truncate,
    repetition_penalty); a version-1 model refuses a penalty other than 1."""
    from ..engine import Engine
    from ..generation import follow_text

    tokenizer = runnable.model.tokenizer
    ends = tokenizer.eos_ids
    decoder = getincrementaldecoder("utf-8")(errors="replace")
    unshown = [prompts[0]] if live else []

    def show(row: int, data: bytes) -> None:
        sys.stdout.write("".join(unshown) + decoder.decode(data))
        sys.stdout.flush()
        unshown.clear()

    options, slots = version_2_stream_options(runnable, version_2_options or {}, len(rows))
    with Engine(runnable, device=gpu, **slots) as engine:
        if live or not bar:
            stream = engine.stream(rows, steps, sampling, top_logprobs=top_logprobs, **options)
            answers = follow_text(stream, tokenizer, stops, len(rows), show if live else None, ends)
        else:
            total = len(rows) * steps
            with progress_bar(total) as progress:
                task = progress.add_task("generating", total=total)
                stream = engine.stream(
                    rows,
                    steps,
                    sampling,
                    top_logprobs=top_logprobs,
                    on_tokens=lambda n: progress.advance(task, n),
                    **options,
                )
                answers = follow_text(stream, tokenizer, stops, len(rows), eos_ids=ends)
    if live:
        sys.stdout.write("".join(unshown) + decoder.decode(b"", final=True) + "\n")
    return answers


def draw_steps(
    folder: Path, runnable: "Runnable", rows: list[list[int]], answers: "list[TextRow]", gpu: int | None
) -> None:
    """Each prompt's logits at every step it took, recomputed by the passes executor (which keeps them) over
    the contexts the generation saw, drawn as strips into `folder`."""
    import numpy as np

    from ..engine import Engine
    from ..loading import Runnable
    from ..pxi import encode_tokens
    from ..visuals.steps import logits_strip

    spec = runnable.model.spec
    passes = Runnable(runnable.model, "passes", None)
    images = {}
    with Engine(passes, device=gpu) as engine:
        for r, (row, answer) in enumerate(zip(rows, answers, strict=True)):
            tokens = [choice.token for choice in answer.steps]
            contexts = [(row + tokens[:s])[-spec.context_window :] for s in range(len(tokens))]
            tile = engine.executor.max_tile
            pixels = encode_tokens(contexts, spec.vocab_size)
            parts = [engine.trace(pixels[s : s + tile]).logits for s in range(0, len(contexts), tile)]
            flat = np.concatenate([part.reshape(len(part), -1) for part in parts if part is not None])
            strip = logits_strip(flat[:, : spec.vocab_size], np.array(tokens))
            images[folder / STRIP_NAMES.replace("*", str(r))] = strip
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PxglError(f"{folder}: cannot create the folder ({e.strerror or e})") from None
    write_files({path: (lambda tmp, image=image: image.save(tmp, format="PNG")) for path, image in images.items()})


def json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
