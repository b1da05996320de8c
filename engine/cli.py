"""The `pxgl` command line: one command per verb; bad input is one red line and exit status 2."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .errors import PxglError
from .resources import bundled_model

if TYPE_CHECKING:
    from .model import Model
    from .pxvm.program import Program

app = typer.Typer(
    help="pxgl: run pixel-encoded models on the GPU. Prompts, weights, compute and answers are all pixels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m", help="A cartridge .pxa, or weights .pxi (meta beside it). Default: the bundled pixellm_v0."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def model_path(model: Path | None) -> Path:
    return model if model is not None else bundled_model()


def emit_json(record: dict) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    try:
        app()
    except PxglError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


@app.command()
def encode(
    texts: Annotated[list[str], typer.Argument(help="Prompt text; several texts make several rows.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Token texture to write.")] = Path("input_tokens.pxi"),
    model: ModelOption = None,
) -> None:
    """Tokenize text into a token texture (.pxi): one row per prompt, one pixel per token."""
    from .model import load_model, load_tokenizer
    from .pxi import encode_tokens, write_rgb

    loaded = load_model(model_path(model), trust_shaders=True)  # encoding runs no shader
    tokenizer = load_tokenizer(loaded)
    rows = [tokenizer.encode(text) for text in texts]
    write_rgb(out, encode_tokens(rows, loaded.spec.vocab_size))
    typer.echo(f"{out}: {len(rows)} row(s), {max(len(r) for r in rows)} pixel(s) wide")


@app.command()
def decode(
    file: Annotated[Path, typer.Argument(help="A token texture or prediction pixels (.pxi).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn a token texture or prediction pixels back into text, one line per row."""
    from .model import load_model, load_tokenizer
    from .pxi import decode_predictions, decode_tokens, is_prediction_image, read_rgb

    loaded = load_model(model_path(model), trust_shaders=True)  # decoding runs no shader
    tokenizer = load_tokenizer(loaded)
    pixels = read_rgb(file)
    if is_prediction_image(pixels):
        ids, confidence = decode_predictions(pixels, str(file))
        for row, (token, conf) in enumerate(zip(ids.tolist(), confidence.tolist(), strict=True)):
            if token >= loaded.spec.vocab_size:
                raise PxglError(f"{file}: row {row}: token id {token} ≥ vocab size {loaded.spec.vocab_size}")
            text = tokenizer.decode([token])
            if as_json:
                emit_json({"row": row, "id": token, "text": text, "confidence": round(conf / 255, 4)})
            else:
                typer.echo(f"{text!r}  (id {token}, confidence {conf / 255:.0%})")
        return
    for row, ids in enumerate(decode_tokens(pixels, loaded.spec.vocab_size, str(file))):
        text = tokenizer.decode(ids.tolist())
        if as_json:
            emit_json({"row": row, "ids": ids.tolist(), "text": text})
        else:
            typer.echo(text)


ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor",
        "-x",
        help="How the GPU computes the forward pass: passes (Model A's four passes), pxvm (Model B: a "
        "program of pixel opcodes interpreted on the GPU) or fused (the whole pass in one dispatch, fastest). "
        "Default: the cartridge's own choice, else passes.",
    ),
]
DeviceOption = Annotated[
    int | None,
    typer.Option("--device", "-d", help="EGL device index on machines with several GPUs (or PXGL_DEVICE)."),
]
TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-shaders",
        help="Run a cartridge whose shaders differ from this engine's. pxgl never compiles a cartridge's "
        "shader code: it runs the engine's own shaders over the cartridge's weights, and says so.",
    ),
]


def open_model(model: Path | None, trust_shaders: bool) -> "Model":
    """load_model for commands that run the GPU: warn when a cartridge's foreign shaders were let through."""
    from .model import load_model

    loaded = load_model(model_path(model), trust_shaders)
    if loaded.cartridge is not None and loaded.cartridge.foreign_shaders:
        typer.secho(
            f"warning: {loaded.source}: its shaders ({', '.join(loaded.cartridge.foreign_shaders)}) differ from "
            "this engine's and were not run; the engine's own shaders compute the forward pass",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return loaded


def executor_for(loaded: "Model", executor: str | None) -> str:
    """The executor asked for, else the cartridge's default, else Model A's passes."""
    if executor is not None:
        return executor
    return loaded.cartridge.manifest.executor if loaded.cartridge is not None else "passes"


def pxvm_program(loaded: "Model", executor: str, program_file: Path | None = None) -> "Program | None":
    """The validated program the pxvm executor runs: --program, else a cartridge's own, else the file beside
    the weights, else None (the executor compiles the model's). None for other executors."""
    if executor != "pxvm":
        return None
    if program_file is None and loaded.cartridge is not None:
        return loaded.cartridge.program
    from .pxvm.files import program_for

    return program_for(loaded, program_file)


def read_prompt_lines(path: Path) -> list[str]:
    """One prompt per line; an empty line is an error (it would be an empty prompt)."""
    from .pxi import read_text

    # Only "\n" (or "\r\n") ends a prompt: str.splitlines would also split on \f, \x1c-\x1e, U+2028 ...
    # and misalign predictions with the file's lines.
    text = read_text(path, "prompts file")
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []
    if not lines:
        raise PxglError(f"{path}: no prompts (the file is empty)")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise PxglError(f"{path}: line {number} is empty; every line must be a prompt")
    return lines


def progress_bar(label: str, total: int):
    """A transient progress bar on stderr, shown only on a terminal and only for long work."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=not console.is_terminal or total < 10_000), label


@app.command()
def infer(
    prompt: Annotated[str | None, typer.Argument(help="Prompt text (or use --input / --batch).")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Token texture to run: pixels in, pixels out, no text.")
    ] = None,
    batch: Annotated[Path | None, typer.Option("--batch", "-b", help="Text file, one prompt per line.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Prediction pixels to write.")] = Path("output_token.pxi"),
    tokens_out: Annotated[
        Path | None, typer.Option("--tokens-out", help="Also write the token texture the GPU ran.")
    ] = None,
    program_file: Annotated[
        Path | None,
        typer.Option(
            "--program",
            help="pxVM program (.pxi) to run on the pxvm executor (implies it). Default for pxvm: "
            "name.program.pxi beside the weights if there is one, else the model's compiled program.",
        ),
    ] = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    trust_shaders: TrustOption = False,
    viz_dir: Annotated[
        Path | None, typer.Option("--viz", help="Also write the visuals of the first prompt's run here (pxgl viz).")
    ] = None,
) -> None:
    """Predict the next token on the GPU and write it as a prediction pixel (id % 256, id // 256, confidence).

    One of: a PROMPT, --input a token texture, or --batch a file of prompts (one row each in --out)."""
    from .engine import Engine
    from .model import load_tokenizer
    from .pxi import check_output_path, decode_predictions, encode_tokens, read_rgb, write_rgb

    given = [name for name, value in (("PROMPT", prompt), ("--input", input_file), ("--batch", batch)) if value]
    if len(given) != 1:
        raise PxglError(f"give exactly one of PROMPT, --input FILE or --batch FILE (got {', '.join(given) or 'none'})")
    if tokens_out is not None and tokens_out.resolve() == out.resolve():
        raise PxglError(f"--tokens-out and --out are the same file {out}")
    check_output_path(out, "--out")
    if tokens_out is not None:
        check_output_path(tokens_out, "--tokens-out")
    if viz_dir is not None:
        from .visuals import check_out_dir

        check_out_dir(viz_dir)
    loaded = open_model(model, trust_shaders)
    vocab = loaded.spec.vocab_size
    tokenizer = None if input_file is not None else load_tokenizer(loaded)
    if input_file is not None:
        pixels, source = read_rgb(input_file), str(input_file)
    elif prompt is not None:
        pixels, source = encode_tokens([tokenizer.encode(prompt)], vocab), "prompt"
    else:
        lines = read_prompt_lines(batch)
        pixels, source = encode_tokens([tokenizer.encode(line) for line in lines], vocab), str(batch)

    if program_file is not None and executor not in (None, "pxvm"):
        raise PxglError(f"--program runs on the pxvm executor, not {executor!r}")
    name = "pxvm" if program_file is not None else executor_for(loaded, executor)
    program = pxvm_program(loaded, name, program_file)  # validated on the host, before any GPU work
    engine = Engine(loaded, device=device, executor=name, program=program)
    bar, label = progress_bar("predicting", pixels.shape[0])
    with bar:
        task = bar.add_task(label, total=pixels.shape[0])
        predictions = engine.predict(pixels, source, on_tile=lambda n: bar.advance(task, n))
    view = None
    if viz_dir is not None:  # the GPU work for the visuals happens before anything is written
        from .visuals import run_view

        first_prompt = lines[0] if batch is not None else prompt
        view = run_view(engine, pixels, source=source, executor=name, prompt=first_prompt, tokenizer=tokenizer)
    if tokens_out is not None:
        write_rgb(tokens_out, pixels)
    write_rgb(out, predictions)

    ids, confidence = decode_predictions(predictions)
    for row, (token, conf) in enumerate(zip(ids.tolist(), confidence.tolist(), strict=True)):
        record = {"row": row, "id": token, "confidence": round(conf / 255, 4)}
        if tokenizer is not None:
            record["text"] = tokenizer.decode([token])
        if as_json:
            emit_json(record | {"out": str(out)})
        elif prompt is not None:
            typer.echo(f"{record['text']!r}  id {token}  confidence {conf / 255:.1%}  → {out}")
    if not as_json and prompt is None:
        typer.echo(f"{out}: {len(ids)} prediction pixel(s) on {engine.gpu.renderer}")
    if view is not None:
        from .visuals import write_visuals

        write_visuals(viz_dir, view)
        if not as_json:
            typer.echo(f"visuals of the first prompt's run → {viz_dir / 'index.html'}")


@app.command()
def info(device: DeviceOption = None, as_json: JsonOption = False) -> None:
    """Show the GPU pxgl runs on: renderer, GL version and the limits the engine relies on."""
    from dataclasses import asdict

    from .gl import GLBackend

    gpu = GLBackend(device)
    record = {"renderer": gpu.renderer, "gl_version": gpu.version, **asdict(gpu.limits)}
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        typer.echo(f"{key:28} {value}")


@app.command()
def pack(
    model: Annotated[Path, typer.Argument(help="Weights .pxi (meta and tokenizer beside it), or a .pxa to repack.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Cartridge to write. Default: the model's name with .pxa.")
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            "-x",
            help="The executor the cartridge runs on unless told otherwise. Default: the repacked cartridge's, "
            "else passes.",
        ),
    ] = None,
    program_file: Annotated[
        Path | None,
        typer.Option(
            "--program",
            help="pxVM program (.pxi) to pack. Default: the repacked cartridge's, else name.program.pxi beside "
            "the weights, else the model's compiled program.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The cartridge's name. Default: the repacked cartridge's, else the weights' stem."),
    ] = None,
    trust_shaders: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pack a model into a cartridge (.pxa): weights, meta, tokenizer, pxVM program and the engine's shaders
    in one zip, with a manifest of every member's size and sha256."""
    from .cartridge import pack as pack_cartridge

    target = out if out is not None else model.with_suffix(".pxa")
    manifest = pack_cartridge(model, target, executor, trust_shaders, program_file, name)
    if as_json:
        emit_json({"out": str(target), **manifest.to_json()})
        return
    size = sum(m.size for m in manifest.members)
    typer.echo(f"{target}: cartridge {manifest.name!r}, {len(manifest.members)} members, {size} bytes unpacked")


@app.command()
def run(
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Token texture (.pxi) to run.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Prediction pixels to write.")] = Path(
        "output_token.pxi"
    ),
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    trust_shaders: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pixels in, pixels out: run a token texture through a model and write its prediction pixels."""
    infer(
        prompt=None,
        input_file=input_file,
        batch=None,
        out=output,
        tokens_out=None,
        model=model,
        executor=executor,
        device=device,
        as_json=as_json,
        trust_shaders=trust_shaders,
    )


@app.command()
def ask(
    model: Annotated[Path, typer.Argument(help="A cartridge .pxa (or weights .pxi) to ask.")],
    prompt: Annotated[str, typer.Argument(help="Prompt text.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prediction pixel to write.")] = Path("output_token.pxi"),
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    trust_shaders: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ask a model: the answer is written as a prediction pixel, then shown as text and as a coloured block."""
    from rich.console import Console
    from rich.text import Text

    from .engine import Engine
    from .model import load_tokenizer
    from .pxi import decode_predictions, encode_tokens, write_rgb

    loaded = open_model(model, trust_shaders)
    tokenizer = load_tokenizer(loaded)
    pixels = encode_tokens([tokenizer.encode(prompt)], loaded.spec.vocab_size)
    name = executor_for(loaded, executor)
    engine = Engine(loaded, device=device, executor=name, program=pxvm_program(loaded, name))
    prediction = engine.predict(pixels, "prompt")
    write_rgb(out, prediction)

    (token,), (confidence,) = (values.tolist() for values in decode_predictions(prediction))
    pixel = tuple(prediction[0, 0].tolist())
    answer = tokenizer.decode([token])
    if as_json:
        emit_json(
            {"prompt": prompt, "id": token, "text": answer, "confidence": round(confidence / 255, 4)}
            | {"pixel": list(pixel), "out": str(out)}
        )
        return
    console = Console(highlight=False)
    console.print(Text.assemble(prompt, " → ", (repr(answer), "bold")))
    console.print(
        Text.assemble(
            ("██████", f"rgb({pixel[0]},{pixel[1]},{pixel[2]})"),
            f"  pixel {pixel}  id {token}  confidence {confidence / 255:.1%}  → {out}",
        )
    )


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A cartridge (.pxa) or a pixel file (.pxi).")],
    as_json: JsonOption = False,
) -> None:
    """What a file is and whether pxgl would run it: a cartridge's manifest, members, hashes and shader
    verdict; a weights file's dimensions and tensors; a token texture, prediction pixels or pxVM program."""
    from .describe import describe

    record = describe(file)
    if as_json:
        emit_json(record)
        return
    for key, value in record.items():
        if isinstance(value, list):
            typer.echo(f"{key}:")
            for item in value:
                typer.echo(
                    "  " + ("  ".join(f"{k} {v}" for k, v in item.items()) if isinstance(item, dict) else str(item))
                )
        elif isinstance(value, dict):
            typer.echo(f"{key:14} " + "  ".join(f"{k} {v}" for k, v in value.items()))
        else:
            typer.echo(f"{key:14} {value}")


@app.command()
def viz(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images, index.html and viz.json.")],
    prompt: Annotated[str | None, typer.Argument(help="Prompt text to run and show (optional with --weights).")] = None,
    weights: Annotated[
        bool, typer.Option("--weights", help="Draw the weight texture, each tensor's bytes outlined and named.")
    ] = False,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="How many candidate tokens to list [10].")] = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    trust_shaders: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """See the model think: run PROMPT on the GPU, read back the textures it wrote (token texture, T_embed,
    T_hidden, T_logits, prediction pixel) and write them as images, a labelled overview.png and an
    index.html that opens from disk; --weights draws the weight texture with its tensors outlined."""
    from . import visuals
    from .engine import Engine
    from .model import load_model, load_tokenizer
    from .pxi import encode_tokens

    if prompt is None and not weights:
        raise PxglError("give a PROMPT to see a run, or --weights to see the weight texture (or both)")
    k = visuals.DEFAULT_TOP_K if top_k is None else top_k
    if k < 1:
        raise PxglError(f"--top-k must be at least 1, got {k}")
    visuals.check_out_dir(out)
    view = None
    if prompt is None:
        loaded = load_model(model_path(model), trust_shaders=True)  # drawing the weights runs no shader
    else:
        loaded = open_model(model, trust_shaders)
        tokenizer = load_tokenizer(loaded)
        pixels = encode_tokens([tokenizer.encode(prompt)], loaded.spec.vocab_size)
        name = executor_for(loaded, executor)
        engine = Engine(loaded, device=device, executor=name, program=pxvm_program(loaded, name))
        view = visuals.run_view(engine, pixels, source="prompt", executor=name, prompt=prompt, tokenizer=tokenizer, k=k)
    record = visuals.write_visuals(out, view, visuals.weights_view(loaded) if weights else None)
    if as_json:
        emit_json(record)
        return
    if view is not None:
        typer.echo(f"{prompt!r} → {view.prediction.label}  id {view.prediction.id}  confidence {view.confidence:.1%}")
        if view.missing:
            typer.echo(f"not kept by the {name} executor: {', '.join(view.missing)}")
    typer.echo(f"{out / 'index.html'}: open it in a browser ({len(record['files'])} files in {out})")


@app.command("compile")
def compile_command(
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Program file to write. Default: name.program.pxi beside the weights."),
    ] = None,
) -> None:
    """Compile the model's forward pass into a pxVM program: a .pxi of pixel opcodes (docs/FORMATS.md §7)."""
    from .model import load_model
    from .pxvm.files import program_path_for, write_compiled_program

    path = model_path(model)
    loaded = load_model(path)
    if out is None:
        if loaded.cartridge is not None:
            raise PxglError(f"{path}: give --out: a cartridge has no folder of its own to write the program into")
        out = program_path_for(path)
    program = write_compiled_program(out, loaded.spec)
    height, width, _ = program.pixels.shape
    typer.echo(
        f"{out}: {len(program.instructions)} instructions in {width}x{height} pixels, "
        f"{program.scratch_size} scratch floats"
    )


PxvmModelOption = Annotated[
    Path | None, typer.Option("--model", "-m", help="Also check the program against this model's memory bounds.")
]


@app.command()
def disasm(
    program: Annotated[Path, typer.Argument(help="A pxVM program (.pxi).")],
    model: PxvmModelOption = None,
) -> None:
    """Print a pxVM program as assembly text; `pxgl asm` turns the text back into the same pixels."""
    from .model import load_model
    from .pxi import read_rgb
    from .pxvm.asm import disassemble
    from .pxvm.files import check_program

    spec = None if model is None else load_model(model).spec
    typer.echo(disassemble(check_program(read_rgb(program), str(program), spec)), nl=False)


@app.command("asm")
def asm_command(
    source: Annotated[Path, typer.Argument(help="pxVM assembly text (as `pxgl disasm` prints it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Program file (.pxi) to write.")],
    model: PxvmModelOption = None,
) -> None:
    """Assemble pxVM assembly text into a program (.pxi), checked before anything is written."""
    from .model import load_model
    from .pxi import read_text, write_rgb
    from .pxvm.asm import assemble
    from .pxvm.files import check_program

    spec = None if model is None else load_model(model).spec
    pixels = assemble(read_text(source, "assembly file"), str(source))
    program = check_program(pixels, str(source), spec)
    write_rgb(out, pixels)
    typer.echo(f"{out}: {len(program.instructions)} instructions, {program.scratch_size} scratch floats")


@app.command()
def train(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="UTF-8 text files; blank lines separate documents. Default: Python's own docs."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights .pxi to write (meta, tokenizer beside).")] = Path(
        "pixellm.pxi"
    ),
    seed: Annotated[int, typer.Option(help="Seeds the held-out split, the init and the batches.")] = 0,
    vocab: Annotated[int | None, typer.Option(help="Tokenizer vocabulary (default 1024).")] = None,
    embed: Annotated[int | None, typer.Option(help="Embedding width (default 128).")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden layer width (default 128).")] = None,
    context: Annotated[int | None, typer.Option(help="Context window in tokens (default 2).")] = None,
    steps: Annotated[int | None, typer.Option(help="Adam steps (default 15000).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a pixellm model on the CPU (numpy): BPE tokenizer, model, uint8 quantization, held-out eval."""
    from rich.console import Console
    from rich.progress import Progress

    from .train import TrainConfig
    from .train import train as run_training

    given = {"vocab_size": vocab, "embed_dim": embed, "hidden_dim": hidden, "context_window": context, "steps": steps}
    config = TrainConfig(
        out=out, files=tuple(files or ()), seed=seed, **{k: v for k, v in given.items() if v is not None}
    )
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=as_json or not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        evaluation = run_training(config, progress)
    if as_json:
        emit_json(evaluation)
        return
    typer.echo(
        f"{out}: vocab {config.vocab_size}, embed {config.embed_dim}, hidden {config.hidden_dim}, "
        f"context {config.context_window}; meta and {config.tokenizer_name} beside it"
    )
    typer.echo(f"held-out tokens: {evaluation['heldout_tokens']}  (train tokens: {evaluation['train_tokens']})")
    for name in ("float", "quantized", "unigram"):
        scores = evaluation[name]
        typer.echo(f"  {name:10} top-1 {scores['top1_accuracy']:7.2%}   perplexity {scores['perplexity']:9.2f}")
    typer.echo(f"trained {evaluation['steps']} steps in {evaluation['train_seconds']} s (seed {seed})")


if __name__ == "__main__":
    main()
