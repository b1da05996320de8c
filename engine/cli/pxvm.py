"""The pxVM verbs (Model B, docs/FORMATS.md §7): compile a model's program, disassemble, assemble."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..transformer.meta import TransformerSpec

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
    from ..transformer.pxvm.files import transformer_files, transformer_spec, write_compiled_transformer

    source = model_path(model)
    users_weights = model is not None and not is_bundled_name(model) and source.suffix == WEIGHTS_SUFFIX
    default = program_path_for(source) if users_weights else Path(source.stem + PROGRAM_SUFFIX)
    target = out if out is not None else default
    transformer = transformer_spec(source)
    # the program beside the weights is compile's output, not an input
    inputs = model_files(model, program=False) if transformer is None else transformer_files(source, transformer)
    check_writes([Output(target, "--out", PIXELS, default=out is None)], inputs, force)
    if transformer is not None:
        compiled = write_compiled_transformer(target, transformer)
        height, width, _ = compiled.pixels.shape
        floats = f"{compiled.row_floats} floats a row"
        typer.echo(f"{target}: {len(compiled.instructions)} instructions in {width}x{height} pixels, {floats}")
        return
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
    from ..transformer.pxvm.asm import disassemble as disassemble_2
    from ..transformer.pxvm.files import check_transformer_program, is_version_2

    pixels = read_rgb(program)
    if is_version_2(pixels):
        spec_2 = None if model is None else checked_transformer_spec(model)
        typer.echo(disassemble_2(check_transformer_program(pixels, str(program), spec_2)), nl=False)
        return
    spec = None if model is None else load_model(model).spec
    typer.echo(disassemble(check_program(pixels, str(program), spec)), nl=False)


@app.command("asm")
def asm_command(
    source: Annotated[Path, typer.Argument(help="pxVM assembly text (as `pxgl disasm` prints it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Program file (.pxi) to write.")],
    model: CheckModelOption = None,
    force: ForceOption = False,
) -> None:
    """Assemble pxVM assembly text into a program (.pxi), checked before anything is written."""
    from ..loading import load_model, model_path
    from ..output_kinds import PIXELS
    from ..outputs import Output, check_writes
    from ..pxi import read_text, write_rgb
    from ..pxvm.asm import assemble
    from ..pxvm.files import check_program
    from ..transformer.pxvm.asm import assemble as assemble_2
    from ..transformer.pxvm.asm import is_version_2
    from ..transformer.pxvm.files import check_transformer_program, transformer_files

    text = read_text(source, "assembly file")
    if is_version_2(text):
        spec_2 = None if model is None else checked_transformer_spec(model)
        inputs = [source, *([] if spec_2 is None else transformer_files(model_path(model), spec_2))]
        check_writes([Output(out, "--out", PIXELS)], inputs, force)
        pixels = assemble_2(text, str(source))
        compiled = check_transformer_program(pixels, str(source), spec_2)
        write_rgb(out, pixels)
        typer.echo(f"{out}: {len(compiled.instructions)} instructions, {compiled.row_floats} floats a row")
        return
    inputs = [source, *(model_files(model) if model is not None else [])]
    check_writes([Output(out, "--out", PIXELS)], inputs, force)
    spec = None if model is None else load_model(model).spec
    pixels = assemble(text, str(source))
    program = check_program(pixels, str(source), spec)
    write_rgb(out, pixels)
    typer.echo(f"{out}: {len(program.instructions)} instructions, {program.scratch_size} scratch floats")


def checked_transformer_spec(model: str) -> "TransformerSpec":
    """--model for a version-2 program: a version-2 model's spec, or one line saying the versions differ."""
    from ..errors import PxglError
    from ..loading import model_path
    from ..transformer.pxvm.files import transformer_spec

    spec = transformer_spec(model_path(model))
    if spec is None:
        raise PxglError(f"{model}: a version-2 pxVM program runs on a version-2 (transformer) model only")
    return spec
