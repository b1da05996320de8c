"""The pxVM verbs (Model B, docs/FORMATS.md §7): compile a model's program, disassemble, assemble."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PxglError
from .app import app
from .options import ModelOption, model_files

CheckModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Also check the program against this model's memory bounds.")
]


@app.command("compile")
def compile_command(
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Program file to write. Default: name.program.pxi beside the weights."),
    ] = None,
) -> None:
    """Compile the model's forward pass into a pxVM program: a .pxi of pixel opcodes (docs/FORMATS.md §7)."""
    from ..loading import load_model, model_files
    from ..outputs import check_outputs
    from ..pxvm.files import program_path_for, write_compiled_program

    loaded = load_model(model)
    if out is None:
        if loaded.cartridge is not None:
            raise PxglError(f"{loaded.source}: give --out: a cartridge has no folder of its own to write into")
        out = program_path_for(Path(loaded.source))
    check_outputs([(out, "--out")], model_files(model, program=False))  # the program beside is its output
    program = write_compiled_program(out, loaded.spec)
    height, width, _ = program.pixels.shape
    typer.echo(
        f"{out}: {len(program.instructions)} instructions in {width}x{height} pixels, "
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
) -> None:
    """Assemble pxVM assembly text into a program (.pxi), checked before anything is written."""
    from ..loading import load_model
    from ..outputs import check_outputs
    from ..pxi import read_text, write_rgb
    from ..pxvm.asm import assemble
    from ..pxvm.files import check_program

    check_outputs([(out, "--out")], [source, *(model_files(model) if model is not None else [])])
    spec = None if model is None else load_model(model).spec
    pixels = assemble(read_text(source, "assembly file"), str(source))
    program = check_program(pixels, str(source), spec)
    write_rgb(out, pixels)
    typer.echo(f"{out}: {len(program.instructions)} instructions, {program.scratch_size} scratch floats")
