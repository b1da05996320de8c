"""Model B: pxVM, the forward pass as a program of pixel opcodes (docs/FORMATS.md §7).

opcodes (the instruction set as data) → program (pixels ↔ instructions) → validator (checks against a
model) → asm (text form) → compiler (a model's program) → executor (the GPU interpreter)."""
