"""tokenizer.json's normalizers, pre-tokenizers and decoders ↔ the steps of docs/FORMATS.md §6.1, one to one;
anything else is refused, naming it."""

from typing import Any

import regex

from ..errors import PxglError
from .steps import BEHAVIORS, Step

UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")
HF_BEHAVIORS = {"".join(w.title() for w in b.split("_")): b for b in BEHAVIORS}
"""tokenizers' SplitDelimiterBehavior names (Isolated, MergedWithPrevious, …) → §6.1's."""


def _flatten(raw: Any, key: str, what: str, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise PxglError(f"{where}: the {what} must be an object with a type, got {raw!r:.60}")
    if raw["type"] == "Sequence":
        inner = raw.get(key)
        if not isinstance(inner, list):
            raise PxglError(f"{where}: the {what} Sequence has no list '{key}'")
        return [step for item in inner for step in _flatten(item, key, what, where)]
    return [raw]


def _string_pattern(raw: dict[str, Any], what: str, where: str) -> str:
    pattern = raw.get("pattern")
    if not (isinstance(pattern, dict) and isinstance(pattern.get("String"), str)):
        raise PxglError(
            f"{where}: the {what} Replace pattern {pattern!r:.60} is not a plain string; pxgl replaces strings only"
        )
    content = raw.get("content")
    if not isinstance(content, str):
        raise PxglError(f"{where}: the {what} Replace content must be a string")
    return pattern["String"]


def normalizer_from_hf(raw: Any, where: str) -> list[Step]:
    steps: list[Step] = []
    for item in _flatten(raw, "normalizers", "normalizer", where):
        kind = item["type"]
        if kind in UNICODE_FORMS:
            steps.append({"type": kind.lower()})
        elif kind == "Prepend" and isinstance(item.get("prepend"), str):
            steps.append({"type": "prepend", "content": item["prepend"]})
        elif kind == "Replace":
            steps.append(
                {"type": "replace", "pattern": _string_pattern(item, "normalizer", where), "content": item["content"]}
            )
        else:
            raise PxglError(
                f"{where}: the normalizer {kind!r} is not one pxgl reads (NFC, NFKC, NFD, NFKD, Prepend, Replace)"
            )
    return steps


def pre_tokenizer_from_hf(raw: Any, where: str) -> list[Step]:
    steps: list[Step] = []
    for item in _flatten(raw, "pretokenizers", "pre-tokenizer", where):
        kind = item["type"]
        if kind == "Split":
            pattern = item.get("pattern") if isinstance(item.get("pattern"), dict) else {}
            if isinstance(pattern.get("Regex"), str):
                source = pattern["Regex"]
            elif isinstance(pattern.get("String"), str):
                source = regex.escape(pattern["String"])
            else:
                raise PxglError(
                    f"{where}: the Split pre-tokenizer's pattern {pattern!r:.60} is neither Regex nor String"
                )
            if not isinstance(item.get("behavior"), str) or item["behavior"] not in HF_BEHAVIORS:
                raise PxglError(
                    f"{where}: the Split behavior {item.get('behavior')!r} is not one of {', '.join(HF_BEHAVIORS)}"
                )
            steps.append(
                {
                    "type": "split",
                    "pattern": source,
                    "behavior": HF_BEHAVIORS[item["behavior"]],
                    "invert": item.get("invert", False),
                }
            )
        elif kind == "Digits":
            steps.append({"type": "digits", "individual": item.get("individual_digits", False)})
        elif kind == "ByteLevel":
            steps.append(
                {
                    "type": "byte_level",
                    "add_prefix_space": item.get("add_prefix_space", True),
                    "use_regex": item.get("use_regex", True),
                }
            )
        elif kind == "Metaspace":
            steps.append(_metaspace(item, where))
        else:
            raise PxglError(
                f"{where}: the pre-tokenizer {kind!r} is not one pxgl reads (Split, Digits, ByteLevel, Metaspace)"
            )
    return steps


def _metaspace(item: dict[str, Any], where: str) -> Step:
    scheme = item.get("prepend_scheme", "always")
    if item.get("add_prefix_space") is False:
        scheme = "never"
    return {
        "type": "metaspace",
        "replacement": item.get("replacement", "▁"),
        "prepend_scheme": scheme,
        "split": item.get("split", True),
    }


def decoder_from_hf(raw: Any, where: str) -> list[Step]:
    steps: list[Step] = []
    for item in _flatten(raw, "decoders", "decoder", where):
        kind = item["type"]
        if kind == "ByteLevel":
            steps.append({"type": "byte_level"})
        elif kind == "Replace":
            steps.append(
                {"type": "replace", "pattern": _string_pattern(item, "decoder", where), "content": item["content"]}
            )
        elif kind in ("ByteFallback", "Fuse"):
            steps.append({"type": "byte_fallback" if kind == "ByteFallback" else "fuse"})
        elif kind == "Strip":
            steps.append(
                {"type": "strip", "content": item.get("content"), "start": item.get("start"), "stop": item.get("stop")}
            )
        elif kind == "Metaspace":
            steps.append(_metaspace(item, where))
        else:
            raise PxglError(
                f"{where}: the decoder {kind!r} is not one pxgl reads "
                "(ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)"
            )
    return steps


def _sequence(items: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    if not items:
        return None
    return items[0] if len(items) == 1 else {"type": "Sequence", key: items}


def normalizer_to_hf(steps: list[Step]) -> dict[str, Any] | None:
    items: list[dict[str, Any]] = []
    for step in steps:
        kind = step["type"]
        if kind == "prepend":
            items.append({"type": "Prepend", "prepend": step["content"]})
        elif kind == "replace":
            items.append({"type": "Replace", "pattern": {"String": step["pattern"]}, "content": step["content"]})
        else:
            items.append({"type": kind.upper()})
    return _sequence(items, "normalizers")


def pre_tokenizer_to_hf(steps: list[Step]) -> dict[str, Any] | None:
    names = {b: h for h, b in HF_BEHAVIORS.items()}
    items: list[dict[str, Any]] = []
    for step in steps:
        kind = step["type"]
        if kind == "split":
            pattern = {"Regex": step["pattern"]}
            items.append(
                {"type": "Split", "pattern": pattern, "behavior": names[step["behavior"]], "invert": step["invert"]}
            )
        elif kind == "digits":
            items.append({"type": "Digits", "individual_digits": step["individual"]})
        elif kind == "byte_level":
            items.append(
                {
                    "type": "ByteLevel",
                    "add_prefix_space": step["add_prefix_space"],
                    "trim_offsets": True,
                    "use_regex": step["use_regex"],
                }
            )
        else:
            items.append(_metaspace_to_hf(step))
    return _sequence(items, "pretokenizers")


def _metaspace_to_hf(step: Step) -> dict[str, Any]:
    return {
        "type": "Metaspace",
        "replacement": step["replacement"],
        "prepend_scheme": step["prepend_scheme"],
        "split": step["split"],
    }


def decoder_to_hf(steps: list[Step]) -> dict[str, Any] | None:
    items: list[dict[str, Any]] = []
    for step in steps:
        kind = step["type"]
        if kind == "byte_level":
            items.append({"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True})
        elif kind == "replace":
            items.append({"type": "Replace", "pattern": {"String": step["pattern"]}, "content": step["content"]})
        elif kind in ("byte_fallback", "fuse"):
            items.append({"type": "ByteFallback" if kind == "byte_fallback" else "Fuse"})
        elif kind == "strip":
            items.append({"type": "Strip", "content": step["content"], "start": step["start"], "stop": step["stop"]})
        else:
            items.append(_metaspace_to_hf(step))
    return _sequence(items, "decoders")
