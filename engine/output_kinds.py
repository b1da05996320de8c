"""The kinds of file pxgl writes, each told by its first bytes (docs/FORMATS.md §0.3): an existing file
is written over only when it is empty or of the kind the command writes there (or with --force)."""

import re
from collections.abc import Callable
from pathlib import Path

from .outputs import Output, OutputKind
from .png import CHUNK_HEAD, IHDR, PNG_COLOR_RGB, PNG_MAGIC
from .spec import FORMAT as META_FORMAT
from .spec import meta_path_for
from .tokenizer import FORMAT as TOKENIZER_FORMAT

ZIP_LOCAL_HEADER = b"PK\x03\x04"
ZIP_NAME_AT = 30
"""A zip's first local file header: its member's name length at byte 26, the name from byte 30."""
PNG_HEAD = PNG_MAGIC + CHUNK_HEAD.pack(IHDR.size, b"IHDR")


def pixel_file(head: bytes, width: int | None = None) -> bool:
    """How every pixel file pxgl writes begins (png.encode_png): the PNG signature, an IHDR of an 8-bit RGB
    image, non-interlaced, and IDAT next; `width`: that many pixels wide."""
    idat_at = len(PNG_HEAD) + IHDR.size + 4  # past the IHDR and its CRC
    if not head.startswith(PNG_HEAD) or len(head) < idat_at + CHUNK_HEAD.size:
        return False
    image_width, _, depth, colour, compression, filtering, interlace = IHDR.unpack_from(head, len(PNG_HEAD))
    next_chunk = CHUNK_HEAD.unpack_from(head, idat_at)[1]
    header = (depth, colour, compression, filtering, interlace) == (8, PNG_COLOR_RGB, 0, 0, 0)
    return header and next_chunk == b"IDAT" and (width is None or image_width == width)


def json_object(first_key: str, value: str | None = None) -> Callable[[bytes], bool]:
    """A JSON object whose first key is `first_key` (with the string `value`, when given)."""
    pattern = rb'\{\s*"' + re.escape(first_key.encode()) + rb'"\s*:'
    if value is not None:
        pattern += rb'\s*"' + re.escape(value.encode()) + rb'"'
    compiled = re.compile(pattern)
    return lambda head: compiled.match(head) is not None


def zip_first_member(matches: Callable[[str], bool]) -> Callable[[bytes], bool]:
    """A zip whose first member's name satisfies `matches`."""

    def test(head: bytes) -> bool:
        if not head.startswith(ZIP_LOCAL_HEADER) or len(head) < ZIP_NAME_AT:
            return False
        length = int.from_bytes(head[26:28], "little")
        name = head[ZIP_NAME_AT : ZIP_NAME_AT + length]
        return len(name) == length and matches(name.decode("utf-8", "replace"))

    return test


def cartridge(head: bytes) -> bool:
    from .cartridge import MANIFEST  # the cartridge reader is not loaded by commands that never read one

    return zip_first_member(lambda name: name == MANIFEST)(head)


PIXELS = OutputKind("a pixel file pxgl writes (an 8-bit RGB PNG)", pixel_file)
PREDICTIONS = OutputKind("prediction pixels (an 8-bit RGB PNG 1 pixel wide)", lambda head: pixel_file(head, 1))
META = OutputKind(f'a meta (a JSON object beginning "format": "{META_FORMAT}")', json_object("format", META_FORMAT))
TOKENIZER = OutputKind(
    f'a tokenizer (a JSON object beginning "format": "{TOKENIZER_FORMAT}")', json_object("format", TOKENIZER_FORMAT)
)
CARTRIDGE = OutputKind("a cartridge (a zip whose first member is its manifest)", cartridge)
NPZ = OutputKind("an .npz (a zip whose first member is an .npy)", zip_first_member(lambda name: name.endswith(".npy")))
SAFETENSORS = OutputKind(
    "a .safetensors file (an 8-byte header length, then its JSON header)", lambda head: head[8:10] == b'{"'
)
PNG = OutputKind("a PNG image", lambda head: head.startswith(PNG_HEAD))
VIZ_PAGE = OutputKind("pxgl's page (an HTML file titled pxgl)", lambda head: b"<title>pxgl " in head)
VIZ_RECORD = OutputKind('pxgl viz\'s record (a JSON object beginning "dir")', json_object("dir"))


def model_set(weights: Path, tokenizer: Path | None, default: bool = False) -> list[Output]:
    """The outputs of a model written as a set (`train`, `import`: FORMATS §2.3): the weights, the meta and,
    unless None (kept in place), the tokenizer; `default`: the weights' path is the command's default."""
    written = [(weights, "weights", PIXELS), (meta_path_for(weights), "meta", META)]
    written += [(tokenizer, "tokenizer", TOKENIZER)] if tokenizer is not None else []
    return [Output(path, f"--out {weights}: its {what}", kind, default) for path, what, kind in written]
