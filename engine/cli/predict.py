"""The verbs that run a model on the GPU and answer with prediction pixels: infer, run."""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import PxglError
from ..outputs import Output, check_output_dir, check_writes
from .app import app
from .options import (
    BatchOption,
    DeviceOption,
    ExecutorOption,
    ForceOption,
    JsonOption,
    ModelOption,
    PredictionsOut,
    ProgramOption,
    model_files,
    one_device,
)
from .report import prediction_records, progress_bar, report_predictions
from .transformer import TruncateOption, infer_transformer, is_transformer

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from ..reading import Lines
    from ..tokenizer import Tokenizer


def single_blas_thread() -> None:
    """Called by a verb that computes on the GPU before numpy is first imported: numpy's OpenBLAS would
    start a thread per core that spins while idle (~0.1 s of a core in a cold `pxgl infer`), on 2 cores
    taking 10-60 ms from the command and the GPU driver's threads, the more the busier the machine. Such a
    verb does no BLAS work. OPENBLAS_NUM_THREADS is read once, when numpy loads; a value set is kept."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def read_prompt_lines(path: Path) -> "Lines":
    """One prompt per line; an empty line is an error (it would be an empty prompt)."""
    from ..reading import Lines

    return Lines(path, "prompts file")


def tokenize(tokenizer: "Tokenizer", prompts: "Sequence[str]", bar_shown: bool = True) -> list[list[int]]:
    """Each prompt's ids, a progress bar following the prompts (a large batch takes a while)."""
    rows = []
    with progress_bar(len(prompts) if bar_shown else 0) as bar:
        task = bar.add_task("tokenizing", total=len(prompts))
        for text in prompts:
            rows.append(tokenizer.encode(text))
            bar.advance(task, 1)
    return rows


def tokenized_windows(tokenizer: "Tokenizer", prompts: "Sequence[str]", window: int) -> "Iterator[list[int]]":
    """Each prompt's last `window` ids, one prompt at a time (no list of every prompt's tokens is kept), a
    progress bar following the prompts."""
    with progress_bar(len(prompts)) as bar:
        task = bar.add_task("tokenizing", total=len(prompts))
        for text in prompts:
            yield tokenizer.encode(text)[-window:]
            bar.advance(task, 1)


@app.command()
def infer(
    prompt: Annotated[str | None, typer.Argument(help="Prompt text (or use --input / --batch).")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Token texture to run: pixels in, pixels out, no text.")
    ] = None,
    batch: BatchOption = None,
    out: PredictionsOut = None,
    tokens_out: Annotated[
        Path | None,
        typer.Option(
            "--tokens-out",
            help="Write the prompts' token texture (whole; the GPU runs each prompt's last window tokens).",
        ),
    ] = None,
    program_file: ProgramOption = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    viz_dir: Annotated[
        Path | None, typer.Option("--viz", help="Also write the visuals of the first prompt's run here (pxgl viz).")
    ] = None,
    force: ForceOption = False,
    truncate_prompt: TruncateOption = False,
) -> None:
    """Predict the next token on the GPU; --out writes it as a prediction pixel (id % 256, id // 256, confidence).

    One of: a PROMPT, --input a token texture, or --batch a file of prompts (one row each in --out). With
    several --device numbers the rows are split across one engine per number, answered in input order."""
    single_blas_thread()
    from ..devices import parse_devices
    from ..engine import Engine
    from ..loading import open_model
    from ..output_kinds import PIXELS, PREDICTIONS
    from ..parallel import open_engines, renderer_of
    from ..pxi import encode_tokens, read_token_texture, write_rgb

    given = [
        name for name, value in (("PROMPT", prompt), ("--input", input_file), ("--batch", batch)) if value is not None
    ]
    if len(given) != 1:
        raise PxglError(f"give exactly one of PROMPT, --input FILE or --batch FILE (got {', '.join(given) or 'none'})")
    if prompt == "":
        raise PxglError("the prompt is empty: give some text to continue (a prompt needs at least one token)")
    inputs = [*model_files(model), input_file, batch, program_file]
    predictions_out = Output(out, "--out", PREDICTIONS) if out is not None else None
    tokens_output = Output(tokens_out, "--tokens-out", PIXELS) if tokens_out is not None else None
    check_writes([predictions_out, tokens_output], inputs, force)
    devices = parse_devices(device)
    if viz_dir is not None:
        from ..visuals import WRITES

        check_output_dir(viz_dir, "--viz", inputs, WRITES, force, [predictions_out, tokens_output])
        if devices is not None and len(devices) > 1:
            raise PxglError(f"--viz draws one engine's run: give one --device, not {device}")
    runnable = open_model(model, executor, program_file)  # checked on the host, before any GPU work
    if is_transformer(runnable):
        if viz_dir is not None:
            raise PxglError("--viz draws version-1 runs here; pxgl viz draws a version-2 model")
        prompts_given = None if input_file is not None else [prompt] if prompt is not None else read_prompt_lines(batch)
        files = (("out", out), ("tokens_out", tokens_out))
        written = {key: path for key, path in files if path is not None}
        infer_transformer(runnable, prompts_given, input_file, written, devices, as_json, truncate_prompt)
        return
    vocab = runnable.model.spec.vocab_size
    tokenizer = None if input_file is not None else runnable.model.tokenizer
    prompts: list[str] | None = None
    rows: list[list[int]] = []
    pixels = None  # the token texture the GPU runs; None while the prompts are still text
    if input_file is not None:
        pixels, source = read_token_texture(input_file, vocab)[0], str(input_file)
    else:
        prompts = [prompt] if prompt is not None else read_prompt_lines(batch)
        source = "prompt" if prompt is not None else str(batch)
        if devices is None or len(devices) == 1:  # several engines: each worker tokenizes its own share
            # Only each prompt's last context_window tokens reach the GPU: the texture run holds just those,
            # read from a generator (no list of every prompt's tokens).
            window = runnable.model.spec.context_window
            pixels = encode_tokens(tokenized_windows(tokenizer, prompts, window), vocab)

    with open_engines(runnable, devices) as engine:
        total = len(prompts) if pixels is None else pixels.shape[0]
        with progress_bar(total) as bar:
            task = bar.add_task("predicting", total=total)

            def advance(n: int) -> None:
                bar.advance(task, n)

            if pixels is None:
                predictions = engine.predict_prompts(prompts, source, on_tile=advance)
            else:
                predictions = engine.predict(pixels, source, on_tile=advance)
        view = None
        if viz_dir is not None and isinstance(engine, Engine):  # the visuals' GPU work comes before any write
            from ..executors import AUTO
            from ..loading import plan
            from ..visuals import run_view
            from .see import VIEW_EXECUTOR

            first = prompts[0] if prompts else None
            if runnable.executor == AUTO and engine.executor_name != VIEW_EXECUTOR:  # traced by the passes
                with Engine(plan(runnable.model, VIEW_EXECUTOR), gpu=engine.gpu) as viewer:
                    view = run_view(viewer, pixels, source=source, prompt=first, tokenizer=tokenizer)
            else:
                view = run_view(engine, pixels, source=source, prompt=first, tokenizer=tokenizer)
        renderer = renderer_of(engine)
    if tokens_out is not None:
        if input_file is None and not rows:
            rows = tokenize(tokenizer, prompts)
        write_rgb(tokens_out, pixels if input_file is not None else encode_tokens(rows, vocab))
    if out is not None:
        write_rgb(out, predictions)
    if view is not None:
        from ..visuals import write_visuals

        write_visuals(viz_dir, view)
    files = (("out", out), ("tokens_out", tokens_out), ("viz", viz_dir if view is not None else None))
    written = {key: path for key, path in files if path is not None}
    report_predictions(prediction_records(predictions, tokenizer, prompts), written, as_json, renderer)
    if view is not None and not as_json:
        typer.echo(f"visuals of the first prompt's run → {viz_dir / 'index.html'}")


@app.command()
def run(
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Token texture (.pxi) to run.")],
    out: PredictionsOut = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    program_file: ProgramOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """Pixels in, pixels out: run a token texture through a model (a cartridge, mounted like a game cart)
    and show its prediction pixels (--out writes them). No tokenizer is read: the answer is pixels."""
    single_blas_thread()
    from ..engine import Engine
    from ..loading import open_model
    from ..output_kinds import PREDICTIONS
    from ..pxi import read_token_texture, write_rgb

    output = Output(out, "--out", PREDICTIONS) if out is not None else None
    check_writes([output], [*model_files(model), input_file, program_file], force)
    gpu = one_device(device)
    runnable = open_model(model, executor, program_file)
    if is_transformer(runnable):
        written = {"out": out} if out is not None else {}
        infer_transformer(runnable, None, input_file, written, None if gpu is None else [gpu], as_json, False)
        return
    pixels, _ = read_token_texture(input_file, runnable.model.spec.vocab_size)
    with Engine(runnable, device=gpu) as engine:
        with progress_bar(pixels.shape[0]) as bar:
            task = bar.add_task("predicting", total=pixels.shape[0])
            predictions = engine.predict(pixels, str(input_file), on_tile=lambda n: bar.advance(task, n))
        renderer = engine.gpu.renderer
    if out is not None:
        write_rgb(out, predictions)
    written = {"out": out} if out is not None else {}
    report_predictions(prediction_records(predictions, None), written, as_json, renderer)
