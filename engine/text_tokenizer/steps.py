"""The normalizer, pre-tokenizer and decoder steps of a version-1 tokenizer (docs/FORMATS.md §6.1): each step
is data, checked here, and applied here exactly as Hugging Face `tokenizers` applies the step it came from."""

import time
import unicodedata
from collections.abc import Callable
from typing import Any

import regex

from ..errors import PxglError
from .alphabet import alphabet_bytes, to_alphabet

Step = dict[str, Any]
Piece = tuple[str, bool]
"""A pre-token and whether it begins the text (Metaspace's "first" prepend scheme asks)."""
Span = tuple[int, int, bool]
"""(start, end, is_match) of a pattern's scan over a piece: matches and the gaps between them, in order."""

MAX_STEPS = 16
MAX_PATTERN_CHARS = 4096
MAX_STRIP = 1024
PATTERN_SECONDS = 1.0
PATTERN_SECONDS_PER_CHAR = 50e-6
PROBE = "a" * 4096 + "".join(chr(c) for c in range(32, 127)) * 100 + " " * 100 + "1 2 3" * 800
"""What a split pattern must get through within PATTERN_SECONDS when a file is read (§6.1)."""
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
NUMERIC = regex.compile(r"\p{N}")
BEHAVIORS = ("isolated", "removed", "merged_with_previous", "merged_with_next", "contiguous")
PREPEND_SCHEMES = ("always", "first", "never")
BOOL, TEXT, CHAR, COUNT, PATTERN = "bool", "text", "char", "count", "pattern"
SCHEMAS: dict[str, dict[str, dict[str, str]]] = {
    "normalizer": {
        "nfc": {},
        "nfkc": {},
        "nfd": {},
        "nfkd": {},
        "prepend": {"content": TEXT},
        "replace": {"pattern": TEXT, "content": TEXT},
    },
    "pre_tokenizer": {
        "split": {"pattern": PATTERN, "behavior": TEXT, "invert": BOOL},
        "digits": {"individual": BOOL},
        "byte_level": {"add_prefix_space": BOOL, "use_regex": BOOL},
        "metaspace": {"replacement": CHAR, "prepend_scheme": TEXT, "split": BOOL},
    },
    "decoder": {
        "byte_level": {},
        "replace": {"pattern": TEXT, "content": TEXT},
        "byte_fallback": {},
        "fuse": {},
        "strip": {"content": CHAR, "start": COUNT, "stop": COUNT},
        "metaspace": {"replacement": CHAR, "prepend_scheme": TEXT, "split": BOOL},
    },
}


def check_steps(steps: Any, kind: str, where: str) -> list[Step]:
    """A list of steps of one kind (normalizer, pre_tokenizer, decoder), each checked against its schema."""
    if not isinstance(steps, list | tuple) or len(steps) > MAX_STEPS:
        raise PxglError(f"{where}: '{kind}' must be a list of at most {MAX_STEPS} steps")
    steps = list(steps)
    for i, step in enumerate(steps):
        at = f"{where}: {kind} step {i}"
        schemas = SCHEMAS[kind]
        if not isinstance(step, dict) or not isinstance(step.get("type"), str) or step["type"] not in schemas:
            raise PxglError(f"{at} must be an object whose type is one of {', '.join(schemas)}; got {step!r:.80}")
        schema = schemas[step["type"]]
        if set(step) != {"type", *schema}:
            raise PxglError(f"{at} ({step['type']}) must have exactly the keys type, {', '.join(schema)}")
        for key, shape in schema.items():
            _check_value(step[key], shape, f"{at} ({step['type']}) key {key!r}")
        _check_choices(step, at)
    return steps


def _check_value(value: Any, shape: str, at: str) -> None:
    if shape == PATTERN and not isinstance(value, str):
        raise PxglError(f"{at} must be a string")
    if shape == BOOL and not isinstance(value, bool):
        raise PxglError(f"{at} must be true or false")
    if shape in (TEXT, CHAR) and not (isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) <= 1024):
        raise PxglError(f"{at} must be a string of at most 1 KiB")
    if shape == CHAR and len(value) != 1:
        raise PxglError(f"{at} must be one character")
    if shape == COUNT and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STRIP):
        raise PxglError(f"{at} must be an integer in 0..{MAX_STRIP}")


def _check_choices(step: Step, at: str) -> None:
    kind = step["type"]
    if kind == "split":
        if step["behavior"] not in BEHAVIORS:
            raise PxglError(f"{at}: behavior {step['behavior']!r} is not one of {', '.join(BEHAVIORS)}")
        compile_pattern(step["pattern"], at)
    if kind == "metaspace" and step["prepend_scheme"] not in PREPEND_SCHEMES:
        raise PxglError(f"{at}: prepend_scheme {step['prepend_scheme']!r} is not one of {', '.join(PREPEND_SCHEMES)}")
    if kind == "replace" and not step["pattern"]:
        raise PxglError(f"{at}: an empty replace pattern")


def compile_pattern(pattern: str, at: str) -> "regex.Pattern[str]":
    """A split pattern, compiled and timed on the probe text: a pattern that backtracks without end is refused
    here, when the file is read, not while a prompt is encoded."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PxglError(f"{at}: a split pattern of {len(pattern)} characters; at most {MAX_PATTERN_CHARS} are read")
    try:
        compiled = regex.compile(pattern, regex.VERSION0)
        scan(compiled, PROBE, time.monotonic() + PATTERN_SECONDS)
    except TimeoutError:
        raise PxglError(
            f"{at}: the split pattern {pattern[:60]!r} took over {PATTERN_SECONDS} s on a 4 KiB probe text "
            "(a pattern that backtracks without end); use a pattern regex runs in linear time"
        ) from None
    except (regex.error, OverflowError, RecursionError, MemoryError) as e:
        raise PxglError(f"{at}: the split pattern {pattern[:60]!r} does not compile ({e})") from None
    return compiled


def scan(pattern: "regex.Pattern[str]", text: str, deadline: float) -> list[Span]:
    """The pattern's matches over text and the gaps between them, as Oniguruma's find_iter (which tokenizers
    uses) yields them: an empty match right where the previous match ended is skipped. Without empty matches
    that is `regex`'s finditer; a text where the pattern matches empty is scanned again, match by match."""
    spans: list[Span] = []
    previous_end = 0
    for found in pattern.finditer(text, timeout=_left(deadline)):
        start, end = found.span()
        if start == end:
            return _scan_with_empty_matches(pattern, text, deadline)
        if start != previous_end:
            spans.append((previous_end, start, False))
        spans.append((start, end, True))
        previous_end = end
    if previous_end != len(text):
        spans.append((previous_end, len(text), False))
    return spans


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("regex timed out")
    return left


def _scan_with_empty_matches(pattern: "regex.Pattern[str]", text: str, deadline: float) -> list[Span]:
    spans: list[Span] = []
    position, previous_end, last_end = 0, 0, -1
    while position <= len(text):
        found = pattern.search(text, position, timeout=_left(deadline))
        if found is None:
            break
        start, end = found.span()
        if start == end and end == last_end:
            position = end + 1
            continue
        if start != previous_end:
            spans.append((previous_end, start, False))
        spans.append((start, end, True))
        previous_end = last_end = position = end
    if previous_end != len(text):
        spans.append((previous_end, len(text), False))
    return spans


def split_spans(spans: list[Span], behavior: str) -> list[tuple[int, int]]:
    """tokenizers' NormalizedString.split: the parts a scan's spans make under a split behavior."""
    if behavior == "isolated":
        return [(s, e) for s, e, _ in spans]
    if behavior == "removed":
        return [(s, e) for s, e, is_match in spans if not is_match]
    parts: list[list[int]] = []
    previous = False
    ordered = reversed(spans) if behavior == "merged_with_next" else spans
    for start, end, is_match in ordered:
        joins = is_match == previous if behavior == "contiguous" else is_match and not previous
        if joins and parts:
            if behavior == "merged_with_next":
                parts[-1][0] = start
            else:
                parts[-1][1] = end
        else:
            parts.append([start, end])
        previous = is_match
    if behavior == "merged_with_next":
        parts.reverse()
    return [(s, e) for s, e in parts]


def normalize(text: str, steps: list[Step]) -> str:
    for step in steps:
        kind = step["type"]
        if kind in ("nfc", "nfkc", "nfd", "nfkd"):
            text = unicodedata.normalize(kind.upper(), text)
        elif kind == "prepend":
            text = step["content"] + text if text else text
        else:
            text = text.replace(step["pattern"], step["content"])
    return text


Compiled = Callable[[Piece, float], list[Piece]]


def pre_tokenizers(steps: list[Step]) -> list[Compiled]:
    """Each pre-tokenizer step as a function from one piece (and a deadline) to the pieces it becomes."""
    return [_pre_tokenizer(step) for step in steps]


def _pieces(piece: Piece, spans: list[Span], behavior: str) -> list[Piece]:
    text, first = piece
    return [(text[s:e], first and s == 0) for s, e in split_spans(spans, behavior) if e > s]


def _pre_tokenizer(step: Step) -> Compiled:
    kind = step["type"]
    if kind == "split":
        pattern, behavior, invert = regex.compile(step["pattern"], regex.VERSION0), step["behavior"], step["invert"]

        def split(piece: Piece, deadline: float) -> list[Piece]:
            spans = scan(pattern, piece[0], deadline)
            return _pieces(piece, [(s, e, m != invert) for s, e, m in spans] if invert else spans, behavior)

        return split
    if kind == "digits":
        behavior = "isolated" if step["individual"] else "contiguous"
        return lambda piece, deadline: _pieces(piece, scan(NUMERIC, piece[0], deadline), behavior)
    if kind == "byte_level":
        return _byte_level(step["add_prefix_space"], step["use_regex"])
    return _metaspace(step["replacement"], step["prepend_scheme"], step["split"])


def _byte_level(add_prefix_space: bool, use_regex: bool) -> Compiled:
    gpt2 = regex.compile(GPT2_PATTERN, regex.VERSION0)

    def byte_level(piece: Piece, deadline: float) -> list[Piece]:
        text, first = piece
        if add_prefix_space and not text.startswith(" "):
            text = " " + text
        parts = _pieces((text, first), scan(gpt2, text, deadline), "isolated") if use_regex else [(text, first)]
        return [(to_alphabet(part), part_first) for part, part_first in parts]

    return byte_level


def _metaspace(replacement: str, scheme: str, split: bool) -> Compiled:
    marker = regex.compile(regex.escape(replacement))

    def metaspace(piece: Piece, deadline: float) -> list[Piece]:
        text, first = piece
        text = text.replace(" ", replacement)
        if not text.startswith(replacement) and (scheme == "always" or (scheme == "first" and first)):
            text = replacement + text
        if not split:
            return [(text, first)]
        return _pieces((text, first), scan(marker, text, deadline), "merged_with_next")

    return metaspace


def decode_strings(strings: list[str], steps: list[Step]) -> str:
    """The decoder steps over the tokens' strings, then the strings joined (tokenizers' Decoder.decode)."""
    if not steps:
        return " ".join(strings)
    for step in steps:
        strings = _decode_step(strings, step)
    return "".join(strings)


def _decode_step(strings: list[str], step: Step) -> list[str]:
    kind = step["type"]
    if kind == "byte_level":
        return [b"".join(alphabet_bytes(s) for s in strings).decode("utf-8", "replace")]
    if kind == "replace":
        return [s.replace(step["pattern"], step["content"]) for s in strings]
    if kind == "byte_fallback":
        return _byte_fallback(strings)
    if kind == "fuse":
        return ["".join(strings)]
    if kind == "strip":
        return [_strip(s, step["content"], step["start"], step["stop"]) for s in strings]
    replacement, keep_first = step["replacement"], step["prepend_scheme"] == "never"
    return [s.replace(replacement, " " if i or keep_first else "") for i, s in enumerate(strings)]


def byte_token(piece: str) -> int | None:
    """The byte a `<0xNN>` piece stands for (byte fallback), else None."""
    if len(piece) == 6 and piece.isascii() and piece.startswith("<0x") and piece.endswith(">"):
        digits = piece[3:5]  # Rust's u8::from_str_radix, which tokenizers calls, also takes "+F"
        if all(c in "0123456789abcdefABCDEF" for c in digits.removeprefix("+")):
            return int(digits, 16)
    return None


def _byte_fallback(strings: list[str]) -> list[str]:
    out: list[str] = []
    run = bytearray()
    for s in [*strings, None]:
        byte = None if s is None else byte_token(s)
        if byte is not None:
            run.append(byte)
            continue
        if run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out.extend("\ufffd" * len(run))
            run.clear()
        if s is not None:
            out.append(s)
    return out


def _strip(s: str, content: str, start: int, stop: int) -> str:
    begin = 0
    while begin < min(start, len(s)) and s[begin] == content:
        begin += 1
    end = len(s)
    while len(s) - end < stop and end > begin and s[end - 1] == content:
        end -= 1
    return s[begin:end]
