"""`pxgl viz`: see the model think, from the textures the GPU itself wrote."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from ..outputs import check_output_dir
from .app import app
from .options import DeviceOption, ExecutorOption, ForceOption, JsonOption, ModelOption, model_files, one_device
from .report import emit_json

VIEW_EXECUTOR = "passes"
"""What draws a run unless told otherwise: the passes keep every intermediate texture to look at."""


@app.command()
def viz(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images, index.html and viz.json.")],
    prompt: Annotated[str | None, typer.Argument(help="Prompt text to run and show (optional with --weights).")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="Token texture to run instead of a prompt (its first row).")
    ] = None,
    weights: Annotated[
        bool, typer.Option("--weights", help="Draw the weight texture, each tensor's bytes outlined and named.")
    ] = False,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="How many candidate tokens to list [10].")] = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
    force: ForceOption = False,
) -> None:
    """See the model think: run PROMPT on the GPU, read back the textures it wrote (token texture, T_embed,
    T_hidden, T_logits, prediction pixel) and write them as images, a labelled overview.png and an
    index.html that opens from disk; --weights draws the weight texture with its tensors outlined."""
    from .. import visuals
    from ..engine import Engine
    from ..loading import load_model, plan
    from ..pxi import encode_tokens, read_token_texture

    if prompt is not None and input_file is not None:
        raise PxglError("give a PROMPT or --input a token texture, not both")
    if prompt is None and input_file is None and not weights:
        raise PxglError(
            "give a PROMPT (or --input a token texture) to see a run, or --weights to see the weight texture"
        )
    k = visuals.DEFAULT_TOP_K if top_k is None else top_k
    if k < 1:
        raise PxglError(f"--top-k must be at least 1, got {k}")
    gpu = one_device(device)
    transformer = transformer_weights(model)
    if transformer is not None:
        viz_transformer(transformer, out, prompt, input_file, weights, executor, k, gpu, as_json, force)
        return
    check_output_dir(out, "--out", [*model_files(model), input_file], visuals.WRITES, force)
    loaded = load_model(model)
    view = None
    if prompt is not None or input_file is not None:
        runnable = plan(loaded, executor if executor is not None else VIEW_EXECUTOR)
        tokenizer = loaded.tokenizer if input_file is None else None
        if input_file is not None:
            pixels, source = read_token_texture(input_file, loaded.spec.vocab_size)[0], str(input_file)
        else:
            pixels, source = encode_tokens([loaded.tokenizer.encode(prompt)], loaded.spec.vocab_size), "prompt"
        with Engine(runnable, device=gpu) as engine:
            view = visuals.run_view(engine, pixels, source=source, prompt=prompt, tokenizer=tokenizer, k=k)
    record = visuals.write_visuals(out, view, visuals.weights_view(loaded) if weights else None)
    if as_json:
        emit_json(record)
        return
    if view is not None:
        shown = repr(prompt) if prompt is not None else str(input_file)
        typer.echo(f"{shown} → {view.prediction.label}  id {view.prediction.id}  confidence {view.confidence:.1%}")
        if view.missing:
            typer.echo(f"not kept by the {view.about['executor']} executor: {', '.join(view.missing)}")
    typer.echo(f"{out / 'index.html'}: open it in a browser ({len(record['files'])} files in {out})")


def transformer_weights(model: str | None) -> Path | None:
    """The weights of a version-2 model argument (a .pxi whose meta says version 2, docs/FORMATS.md §14), else
    None: version 2 is opened here with engine/transformer/files.py until the loader opens it."""
    from ..spec import meta_path_for, read_meta_document

    if model is None or not model.endswith(".pxi") or not meta_path_for(Path(model)).is_file():
        return None
    document = read_meta_document(meta_path_for(Path(model)))
    return Path(model) if isinstance(document, dict) and document.get("version") == 2 else None


def viz_transformer(
    path: Path,
    out: Path,
    prompt: str | None,
    input_file: Path | None,
    weights: bool,
    executor: str | None,
    k: int,
    device: int | None,
    as_json: bool,
    force: bool,
) -> None:
    """A version-2 model's trace on the passes executor drawn as §14.8's images into `out`."""
    from ..gl import GLBackend
    from ..model import WRITTEN, check_written
    from ..pxi import MAX_TOKEN_PIXELS, read_rgb
    from ..spec import meta_path_for, read_meta_document
    from ..tokenizer import Tokenizer
    from ..transformer import read_transformer
    from ..transformer.gpu import PassesTransformer
    from ..transformer.gpu.trace import check_trace_length, trace_tokens
    from ..visuals import WRITES
    from ..visuals.transformer import trace_row, transformer_view
    from ..visuals.transformer_page import write_transformer_visuals

    if weights:
        raise PxglError(
            "--weights draws version-1 weight textures only; give a PROMPT or --input for a version-2 model"
        )
    if executor not in (None, VIEW_EXECUTOR):
        raise PxglError(f"--executor {executor}: a version-2 trace runs on the {VIEW_EXECUTOR} executor only")
    if prompt is None and input_file is None:
        raise PxglError("give a PROMPT or --input a token texture to trace a version-2 model")
    spec, pixels = read_transformer(path)
    tokenizer_path = path.with_name(spec.tokenizer) if spec.tokenizer is not None else None
    inputs = [path, meta_path_for(path), tokenizer_path, input_file]
    check_output_dir(out, "--out", inputs, WRITES, force)
    vocab = spec.architecture.vocab_size
    tokenizer = None
    if input_file is not None:
        ids = trace_row(read_rgb(input_file, MAX_TOKEN_PIXELS, kind="token texture"), vocab, str(input_file)).tolist()
    else:
        if tokenizer_path is None:
            raise PxglError(f"{path}: this model has no tokenizer (token pixels only): give --input a token texture")
        written = read_meta_document(meta_path_for(path)).get(WRITTEN, {})
        check_written(tokenizer_path, written if isinstance(written, dict) else {}, "tokenizer")
        tokenizer = Tokenizer.load(tokenizer_path)
        if tokenizer.vocab_size != vocab:
            raise PxglError(f"{tokenizer_path}: {tokenizer.vocab_size} tokens; the model's vocabulary is {vocab}")
        ids = tokenizer.encode(prompt)
    if spec.bos is not None and ids[:1] != [spec.bos]:
        ids = [spec.bos, *ids]  # §14.4: every sequence begins with bos
    check_trace_length(spec.architecture, len(ids))
    gpu = GLBackend(device)
    about = {"model": path.name, "executor": VIEW_EXECUTOR, "device": gpu.renderer}
    try:
        model = PassesTransformer(gpu, spec, pixels)
        try:
            trace = trace_tokens(model, ids)
        finally:
            model.close()
    finally:
        gpu.release()
    token_bytes = tokenizer.token_bytes if tokenizer is not None else None
    view = transformer_view(trace, vocab, prompt=prompt, token_bytes=token_bytes, about=about, k=k)
    record = write_transformer_visuals(out, view)
    if as_json:
        emit_json(record)
        return
    shown = repr(prompt) if prompt is not None else str(input_file)
    typer.echo(f"{shown} → {view.prediction.label}  id {view.prediction.id}  confidence {view.confidence:.1%}")
    typer.echo(f"{out / 'index.html'}: open it in a browser ({len(record['files'])} files in {out})")
