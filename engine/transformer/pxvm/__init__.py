"""pxVM version 2 (Model B of issue 27, docs/FORMATS.md §7.7): a transformer's forward pass as a program of
pixel opcodes. opcodes.py (the instruction set) → program.py (pixels ↔ instructions) → compiler.py (THE list of
operations as a program) → validator.py (checked against a model) → asm.py (text) → executor.py (the GPU
interpreter, glsl/pxvm_tf.comp)."""

from .compiler import compile_transformer, compiled_instructions, row_layout
from .executor import PxvmTransformer
from .program import TransformerProgram, decode, encode
from .validator import validate_transformer_program

__all__ = [
    "PxvmTransformer",
    "TransformerProgram",
    "compile_transformer",
    "compiled_instructions",
    "decode",
    "encode",
    "row_layout",
    "validate_transformer_program",
]
