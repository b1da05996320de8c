"""A version-0 tokenizer (docs/FORMATS.md §6) as the version-1 byte-level BPE that encodes the same: its split
pattern with Python's \\w and \\s spelled out as Unicode classes, so Oniguruma (tokenizers) and `regex` read it
as Python's re reads §6's pattern."""

from ..errors import PxglError
from ..tokenizer import Tokenizer
from .alphabet import BYTE_CHARS
from .model import TextTokenizer

WORD = r"\p{L}\p{N}_"
SPACE = r"\p{White_Space}\x1c-\x1f"
V0_PATTERN = rf"[{SPACE}]?[{WORD}]+|[{SPACE}]?[^{WORD}{SPACE}]+|[{SPACE}]+"
"""§6's `\\s?\\w+|\\s?[^\\w\\s]+|\\s+`: Python's \\w is [\\p{L}\\p{N}_] and its \\s is White_Space and \\x1c-\\x1f."""


def text_tokenizer_from_v0(tokenizer: Tokenizer) -> TextTokenizer:
    vocab = ["".join(BYTE_CHARS[b] for b in tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)]
    first: dict[str, int] = {}
    for i, piece in enumerate(vocab):
        if piece in first:
            raise PxglError(
                f"tokenizer: ids {first[piece]} and {i} are both the bytes {tokenizer.token_bytes(i)!r:.60}; a "
                "tokenizer.json vocabulary maps each string to one id, so this version-0 tokenizer cannot be written"
            )
        first[piece] = i
    return TextTokenizer(
        "byte-level",
        vocab,
        tokenizer.merges,
        pre_tokenizer=[
            {"type": "split", "pattern": V0_PATTERN, "behavior": "isolated", "invert": False},
            {"type": "byte_level", "add_prefix_space": False, "use_regex": False},
        ],
        decoder=[{"type": "byte_level"}],
        where="version-0 tokenizer",
    )
