"""GPT-2's byte alphabet (docs/FORMATS.md §6.1): each byte written as one printable character, so a byte-level
piece is a JSON string. Bytes 33..126, 161..172 and 174..255 are themselves; the other 68, in order, are
U+0100 onwards."""

PRINTABLE = [*range(33, 127), *range(161, 173), *range(174, 256)]
BYTE_CHARS = "".join(
    chr(b) if b in PRINTABLE else chr(256 + sorted(set(range(256)) - set(PRINTABLE)).index(b)) for b in range(256)
)
"""The character of byte b is BYTE_CHARS[b]."""
CHAR_BYTES = {c: b for b, c in enumerate(BYTE_CHARS)}
TO_ALPHABET = {b: c for b, c in enumerate(BYTE_CHARS)}
"""str.translate table taking a latin-1 decoded byte string to the alphabet."""


def to_alphabet(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(TO_ALPHABET)


def alphabet_bytes(piece: str) -> bytes:
    """A byte-level piece's bytes; a piece with a character outside the alphabet stands for its own UTF-8
    (as tokenizers' ByteLevel decoder reads it)."""
    if all(c in CHAR_BYTES for c in piece):
        return bytes(CHAR_BYTES[c] for c in piece)
    return piece.encode("utf-8", "surrogatepass")
