"""Added and special tokens split out of a text before anything else (docs/FORMATS.md §6.1, encoding step 1),
as tokenizers' AddedVocabulary finds them."""

from dataclasses import dataclass

import regex

WORD = regex.compile(r"\w")
SPACE = regex.compile(r"\s")
"""`regex`'s \\w and \\s are the Unicode classes of the Rust regexes tokenizers uses here (Alphabetic, marks,
Nd, Pc, Join_Control; White_Space), unlike Python's re."""


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    single_word: bool = False


Stretch = tuple[int | None, str, int]
"""(added token id or None for text, the text, its offset in the text the pass scanned)."""


class Matcher:
    """Leftmost-longest search for a set of literal contents (an alternation, longest first, finds the
    longest content at the leftmost position that has one)."""

    def __init__(self, tokens: list[tuple[str, AddedToken]]) -> None:
        self.by_content = dict(tokens)
        ordered = sorted(self.by_content, key=lambda content: (-len(content), content))
        self.pattern = regex.compile("|".join(regex.escape(c) for c in ordered)) if ordered else None

    def split(self, text: str, offset: int, special: bool) -> list[Stretch]:
        """text cut at the tokens found in it (tokenizers' AddedVocabulary::find_matches)."""
        if self.pattern is None or not text:
            return [(None, text, offset)]
        out: list[Stretch] = []
        start_offset = 0
        for found in self.pattern.finditer(text):
            start, stop = found.span()
            token = self.by_content[found.group()]
            if token.special and not special:
                continue
            if token.single_word and (
                (start > 0 and WORD.match(text[start - 1])) or (stop < len(text) and WORD.match(text[stop]))
            ):
                continue
            if token.lstrip:
                while start > start_offset and SPACE.match(text[start - 1]):
                    start -= 1
            if token.rstrip:
                while stop < len(text) and SPACE.match(text[stop]):
                    stop += 1
            if start_offset < start:
                out.append((None, text[start_offset:start], offset + start_offset))
            out.append((token.id, text[start:stop], offset + start))
            start_offset = stop
        if start_offset != len(text):
            out.append((None, text[start_offset:], offset + start_offset))
        return out
