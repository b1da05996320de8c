"""`pxgl generate`: continue prompts for N tokens on the GPU (docs/FORMATS.md §11)."""

import math
from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from ..outputs import check_outputs
from .app import app
from .options import BatchOption, DeviceOption, ExecutorOption, JsonOption, ModelOption, model_files, one_device
from .predict import read_prompt_lines
from .report import emit_json


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="Prompt text (or use --batch).")] = None,
    steps: Annotated[int, typer.Option("-n", "--tokens", help="Tokens to generate per prompt (1..4096).")] = 16,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="0 (default): greedy.")] = 0.0,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Draw only among the K likeliest tokens.")] = None,
    top_p: Annotated[float, typer.Option("--top-p", help="Draw only within this much probability mass.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="The draw's seed, 0..2^32-1: same seed, same text.")] = 0,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="End a row where this text begins (repeatable; not returned).")
    ] = None,
    batch: BatchOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the generated tokens as a token texture (.pxi).")
    ] = None,
    model: ModelOption = None,
    executor: ExecutorOption = None,
    device: DeviceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate text: each predicted token becomes the next input token, on the GPU, for -n steps."""
    from ..engine import Engine
    from ..generation import Sampling, check_steps, check_stops, stop_row
    from ..loading import open_model
    from ..pxi import encode_tokens, write_rgb

    if (prompt is None) == (batch is None):
        raise PxglError("give a PROMPT or --batch FILE (one of them)")
    check_steps(steps)
    sampling = Sampling(temperature, top_k, top_p, seed)
    stops = check_stops(stop or [])
    check_outputs([(out, "--out")], [*model_files(model), batch])
    prompts = read_prompt_lines(batch) if batch is not None else [prompt or ""]
    if prompts == [""]:
        raise PxglError("the prompt is empty: give some text to continue (a prompt needs at least one token)")
    runnable = open_model(model, executor or "passes")
    tokenizer = runnable.model.tokenizer
    rows = [tokenizer.encode(text) for text in prompts]
    with Engine(runnable, device=one_device(device)) as engine:
        generation = engine.generate(rows, steps, sampling)
    if out is not None:
        write_rgb(out, encode_tokens(generation.tokens.tolist(), runnable.model.spec.vocab_size))
    for text, tokens, logprobs in zip(prompts, generation.tokens, generation.logprobs, strict=True):
        token_bytes = [tokenizer.token_bytes(int(t)) for t in tokens]
        kept, data = stop_row(token_bytes, stops)
        answer = data.decode("utf-8", errors="replace")
        if as_json:
            record = {
                "prompt": text,
                "text": answer,
                "tokens": [int(t) for t in tokens[:kept]],
                "logprobs": [None if math.isnan(p) else round(float(p), 6) for p in logprobs[:kept]],
                "stopped": len(data) < sum(map(len, token_bytes)),
            }
            emit_json(record | ({"out": str(out)} if out is not None else {}))
        else:
            typer.echo(f"{text}{answer}")
