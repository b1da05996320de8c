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
    from ..pxi import encode_tokens

    if prompt is None and not weights:
        raise PxglError("give a PROMPT to see a run, or --weights to see the weight texture (or both)")
    k = visuals.DEFAULT_TOP_K if top_k is None else top_k
    if k < 1:
        raise PxglError(f"--top-k must be at least 1, got {k}")
    gpu = one_device(device)
    check_output_dir(out, "--out", model_files(model), visuals.WRITES, force)
    loaded = load_model(model)
    view = None
    if prompt is not None:
        runnable = plan(loaded, executor if executor is not None else VIEW_EXECUTOR)
        tokenizer = loaded.tokenizer
        pixels = encode_tokens([tokenizer.encode(prompt)], loaded.spec.vocab_size)
        with Engine(runnable, device=gpu) as engine:
            view = visuals.run_view(engine, pixels, source="prompt", prompt=prompt, tokenizer=tokenizer, k=k)
    record = visuals.write_visuals(out, view, visuals.weights_view(loaded) if weights else None)
    if as_json:
        emit_json(record)
        return
    if view is not None:
        typer.echo(f"{prompt!r} → {view.prediction.label}  id {view.prediction.id}  confidence {view.confidence:.1%}")
        if view.missing:
            typer.echo(f"not kept by the {view.about['executor']} executor: {', '.join(view.missing)}")
    typer.echo(f"{out / 'index.html'}: open it in a browser ({len(record['files'])} files in {out})")
