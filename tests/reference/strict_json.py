"""Strict JSON as docs/FORMATS.md §0.1 defines it, written apart from the engine: UTF-8, no key twice in an
object, at most 64 levels of nesting, no integer over 64 digits. The fuzz reference for JSON readers."""

import json
from typing import Any

MAX_DEPTH = 64
MAX_INT_DIGITS = 64


class Refused(Exception):
    pass


def loads(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("not UTF-8") from None

    def no_twice(pairs: list[tuple[str, Any]]) -> dict:
        if len({k for k, _ in pairs}) != len(pairs):
            raise Refused("key twice")
        return dict(pairs)

    def small_int(digits: str) -> int:
        if len(digits.removeprefix("-")) > MAX_INT_DIGITS:
            raise Refused("long integer")
        return int(digits)

    try:
        document = json.loads(text, object_pairs_hook=no_twice, parse_int=small_int)
    except (json.JSONDecodeError, RecursionError):
        raise Refused("malformed") from None
    if depth(document) > MAX_DEPTH:
        raise Refused("too deep")
    return document


def depth(value: Any) -> int:
    """Levels of arrays and objects: 0 for a scalar, 1 for [] or {}."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0
