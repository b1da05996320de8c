"""The pxVM verbs (Model B, docs/FORMATS.md §7): compile a model's program, disassemble, assemble."""

from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .options import ForceOption, ModelOption, model_files

CheckModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Also check the program against this model's memory bounds.")
]


@app.command("compile")
def compile_command(
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Program file to write. Default: NAME.program.pxi beside your weights NAME.pxi (where the pxvm "
            "executor finds it); for a bundled model or a cartridge, in the current folder.",
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Compile the model's forward pass into a pxVM program: a .pxi of pixel opcodes (docs/FORMATS.md §7)."""
    from ..loading import load_model, model_files, model_path
    from ..model import WEIGHTS_SUFFIX
    from ..output_kinds import PIXELS
    from ..outputs import Output, check_writes
    from ..pxvm.files import PROGRAM_SUFFIX, program_path_for, write_compiled_program
    from ..resources import is_bundled_name

    source = model_path(model)
    users_weights = model is not None and not is_bundled_name(model) and source.suffix == WEIGHTS_SUFFIX
    default = program_path_for(source) if users_weights else Path(source.stem + PROGRAM_SUFFIX)
    target = out if out is not None else default
    # the program beside the weights is compile's output, not an input
    check_writes([Output(target, "--out", PIXELS, default=out is None)], model_files(model, program=False), force)
    loaded = load_model(model)
    program = write_compiled_program(target, loaded.spec)
    height, width, _ = program.pixels.shape
    typer.echo(
        f"{target}: {len(program.instructions)} instructions in {width}x{height} pixels, "
        f"{program.scratch_size} scratch floats"
    )


@app.command()
def disasm(
    program: Annotated[Path, typer.Argument(help="A pxVM program (.pxi).")],
    model: CheckModelOption = None,
) -> None:
    """Print a pxVM program as assembly text; `pxgl asm` turns the text back into the same pixels."""
    from ..loading import load_model
    from ..pxi import read_rgb
    from ..pxvm.asm import disassemble
    from ..pxvm.files import check_program

    spec = None if model is None else load_model(model).spec
    typer.echo(disassemble(check_program(read_rgb(program), str(program), spec)), nl=False)


@app.command("asm")
def asm_command(
    source: Annotated[Path, typer.Argument(help="pxVM assembly text (as `pxgl disasm` prints it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Program file (.pxi) to write.")],
    model: CheckModelOption = None,
    force: ForceOption = False,
) -> None:
    """Assemble pxVM assembly text into a program (.pxi), checked before anything is written."""
    from ..loading import load_model
    from ..output_kinds import PIXELS
    from ..outputs import Output, check_writes
    from ..pxi import read_text, write_rgb
    from ..pxvm.asm import assemble
    from ..pxvm.files import check_program

    inputs = [source, *(model_files(model) if model is not None else [])]
    check_writes([Output(out, "--out", PIXELS)], inputs, force)
    spec = None if model is None else load_model(model).spec
    pixels = assemble(read_text(source, "assembly file"), str(source))
    program = check_program(pixels, str(source), spec)
    write_rgb(out, pixels)
    typer.echo(f"{out}: {len(program.instructions)} instructions, {program.scratch_size} scratch floats")
