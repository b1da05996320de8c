"""GGUF files in and out (docs/FORMATS.md §10.3): llama.cpp's format, read after pxgl's own header walk and written,
both with llama.cpp's `gguf` package."""

from pathlib import Path

MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    """A regular file whose first 4 bytes are GGUF's magic: what `pxgl import` reads as §10.3 says."""
    try:
        with open(path, "rb") as handle:
            return path.is_file() and handle.read(4) == MAGIC
    except OSError:
        return False
