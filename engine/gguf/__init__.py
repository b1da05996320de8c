"""GGUF files in and out (docs/FORMATS.md §10.3): llama.cpp's format, read after pxgl's own header walk and written,
both with llama.cpp's `gguf` package."""

import os
import stat
from pathlib import Path
from types import ModuleType

from ..errors import PxglError
from ..extras import install_command

MAGIC = b"GGUF"


def gguf_package() -> ModuleType:
    """llama.cpp's gguf package, or one line saying how to add it (the `gguf` extra)."""
    try:
        import gguf
        import gguf.quants
    except ImportError:
        raise PxglError(f"GGUF files need llama.cpp's gguf package: {install_command('gguf')}") from None
    return gguf


def is_gguf(path: Path) -> bool:
    """A regular file whose first 4 bytes are GGUF's magic: what `pxgl import` reads as §10.3 says."""
    try:  # opened without blocking and checked on the descriptor: a FIFO would wait forever for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode) and handle.read(4) == MAGIC
        except OSError:
            return False
