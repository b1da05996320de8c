"""GGUF's `tokenizer.ggml.*` ↔ pxgl's version-1 tokenizer document (docs/FORMATS.md §10.3, §6.1): byte-level BPE
(`gpt2`: tokens, merges, the pre-tokenizer named by `tokenizer.ggml.pre` through §10.3's table) and
SentencePiece-style BPE (`llama`: tokens, scores, byte fallback; merges derived from the scores as Hugging
Face's SentencePieceExtractor does), bos/eos/add_bos and the chat template."""

import json
import sys
from typing import Any

import numpy as np

from ..errors import PxglError
from ..text_tokenizer.model import MAX_PIECE_BYTES, MAX_PIECES_BYTES
from ..tokenizer import Tokenizer
from . import gguf_package
from .architecture import INTEGER_TYPES, key, text
from .header import ARRAY, STRING, Header

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split(pattern: str) -> dict[str, Any]:
    return {"type": "split", "pattern": pattern, "behavior": "isolated", "invert": False}


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "byte_level", "add_prefix_space": False, "use_regex": use_regex}


LLAMA3 = ([], [_split(LLAMA3_PATTERN), _byte_level(False)], True)
SMOLLM = ([], [{"type": "digits", "individual": True}, _byte_level(True)], False)
PRE_TOKENIZERS: dict[str, tuple[list, list, bool]] = {
    "gpt-2": ([], [_byte_level(True)], False),
    "llama-bpe": LLAMA3,
    "llama3": LLAMA3,
    "llama-v3": LLAMA3,
    "qwen2": ([{"type": "nfc"}], [_split(QWEN2_PATTERN), _byte_level(False)], False),
    "smollm": SMOLLM,
    "starcoder": SMOLLM,
    "refact": SMOLLM,
}
"""tokenizer.ggml.pre → (normalizer, pre-tokenizer, ignore_merges) of §6.1, as the model's tokenizer.json has them."""
PREPEND = {"type": "prepend", "content": "▁"}
SPACES = {"type": "replace", "pattern": " ", "content": "▁"}
SENTENCEPIECE_DECODER = [
    {"type": "replace", "pattern": "▁", "content": " "},
    {"type": "byte_fallback"},
    {"type": "fuse"},
    {"type": "strip", "content": " ", "start": 1, "stop": 0},
]
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
TOKEN_TYPES = (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)
PREFIX = "tokenizer.ggml."


def _strings(header: Header, name: str, count: int | None, where: str) -> list[str]:
    kind, value = header.values.get(name, (None, None))
    if kind != ARRAY or value.item_type != STRING or (count is not None and len(value.items) != count):
        expected = "" if count is None else f" of {count} items"
        raise PxglError(f"{where}: {name!r} must be an array of strings{expected}")
    return value.items


def _numbers(header: Header, name: str, count: int, types: set[int], where: str) -> list:
    kind, value = header.values.get(name, (None, None))
    if kind != ARRAY or value.item_type not in types or len(value.items) != count:
        raise PxglError(f"{where}: {name!r} must be an array of {count} numbers")
    if not np.isfinite(value.items).all():
        raise PxglError(f"{where}: {name!r} holds a value that is not a finite number")
    return value.items.tolist()


def _byte_level(pre: str) -> dict[str, Any]:
    """§6.1's keys (but vocab, merges, unk_id) of a gpt2 tokenizer with this tokenizer.ggml.pre."""
    normalizer, pre_tokenizer, ignore_merges = PRE_TOKENIZERS[pre]
    return {"kind": "byte-level", "byte_fallback": False, "fuse_unk": False, "ignore_merges": ignore_merges} | {
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "decoder": [{"type": "byte_level"}],
    }


def _sentencepiece(space_prefix: bool) -> dict[str, Any]:
    """§6.1's keys (but vocab, merges, unk_id) of a llama tokenizer: a space before the text (add_space_prefix),
    spaces as ▁, byte fallback, consecutive unknowns fused."""
    normalizer = [PREPEND, SPACES] if space_prefix else [SPACES]
    return {"kind": "sentencepiece", "byte_fallback": True, "fuse_unk": True, "ignore_merges": False} | {
        "normalizer": normalizer,
        "pre_tokenizer": [],
        "decoder": SENTENCEPIECE_DECODER,
    }


def _check_sizes(tokens: list[str], where: str) -> None:
    """§6.1's caps on the pieces, before merges are read or derived (a derivation cuts every piece)."""
    total = 0
    for i, token in enumerate(tokens):
        size = len(token.encode("utf-8", "surrogatepass"))
        if size > MAX_PIECE_BYTES:
            raise PxglError(
                f"{where}: tokenizer.ggml.tokens[{i}] is {size:,} bytes; a piece is at most {MAX_PIECE_BYTES}"
            )
        total += size
    if total > MAX_PIECES_BYTES:
        raise PxglError(f"{where}: tokenizer.ggml.tokens hold {total:,} bytes; at most {MAX_PIECES_BYTES:,} (§6.1)")


def sentencepiece_merges(tokens: list[str], scores: list[float]) -> list[list[int]]:
    """The merges of a SentencePiece BPE vocabulary, as Hugging Face's `generate_merges` makes them: every split
    (a, b) of every piece c into two pieces, c by score (highest first, then by id: a stable sort), a piece's
    splits by a's length, shortest first."""
    ids = {token: i for i, token in enumerate(tokens)}
    merges = [
        (scores[c], ids[piece[:k]], ids[piece[k:]])
        for c, piece in enumerate(tokens)
        for k in range(1, len(piece))
        if piece[:k] in ids and piece[k:] in ids
    ]
    merges.sort(key=lambda merge: -merge[0])
    return [[a, b] for _, a, b in merges]


def _bpe_merges(header: Header, tokens: list[str], where: str) -> list[list[int]]:
    ids = {token: i for i, token in enumerate(tokens)}
    merges = []
    for rank, merge in enumerate(_strings(header, PREFIX + "merges", None, where)):
        a, space, b = merge.partition(" ")
        if not space or a not in ids or b not in ids or a + b not in ids:
            raise PxglError(
                f"{where}: tokenizer.ggml.merges[{rank}] {merge[:40]!r} is not two tokens whose join is one"
            )
        merges.append([ids[a], ids[b]])
    return merges


def _token_count(types: list[int], where: str) -> int:
    """The tokens before the trailing run of unused ids, which are padding (§6.1: decoded to nothing, never
    encoded to), as llama.cpp decodes an unused token to nothing and convert_hf_to_gguf.py pads a vocabulary
    with them; an unused id before a used one has no pxgl form."""
    known = next((i for i, kind in enumerate(types) if kind not in TOKEN_TYPES), None)
    if known is not None:
        raise PxglError(
            f"{where}: tokenizer.ggml.token_type[{known}] is {types[known]}; llama.cpp's types are 1 (normal), "
            "2 (unknown), 3 (control), 4 (user-defined), 5 (unused) and 6 (byte)"
        )
    count = len(types)
    while count and types[count - 1] == UNUSED:
        count -= 1
    if UNUSED in types[:count]:
        first = types.index(UNUSED)
        raise PxglError(
            f"{where}: tokenizer.ggml.token_type[{first}] is 5 (unused) but id {count - 1} after it is used; pxgl "
            "reads unused ids only as the padding after a vocabulary's last token (FORMATS §10.3)"
        )
    return count


def _special_ids(header: Header, vocab: int, where: str) -> dict[str, int | None]:
    found = {}
    for name in ("bos", "eos", "eot", "eom", "unknown", "padding"):
        value = key(header, f"{PREFIX}{name}_token_id", INTEGER_TYPES, -1, where)
        if value != -1 and not 0 <= value < vocab:
            raise PxglError(f"{where}: {PREFIX}{name}_token_id {value} is not a token id (0..{vocab - 1})")
        found[name] = None if value == -1 else int(value)
    return found


def tokenizer_document(header: Header, vocab_size: int, where: str) -> dict[str, Any]:
    """§6.1's document of the file's tokenizer (FORMATS §10.3)."""
    model = text(header, PREFIX + "model", where)
    if model not in ("gpt2", "llama"):
        raise PxglError(f"{where}: tokenizer.ggml.model {model[:40]!r}; pxgl reads gpt2 (byte-level BPE) and llama")
    types = [NORMAL] * vocab_size
    if PREFIX + "token_type" in header.values:
        types = _numbers(header, PREFIX + "token_type", vocab_size, INTEGER_TYPES, where)
    count = _token_count(types, where)
    tokens = _strings(header, PREFIX + "tokens", vocab_size, where)[:count]
    _check_sizes(tokens, where)
    special = _special_ids(header, vocab_size, where)
    added = [
        {"id": i, "content": tokens[i], "special": types[i] != USER_DEFINED, "lstrip": False, "rstrip": False}
        | {"normalized": types[i] == USER_DEFINED, "single_word": False}
        for i in range(count)
        if types[i] in (CONTROL, USER_DEFINED) or (model == "llama" and types[i] == UNKNOWN)
    ]
    if model == "gpt2":
        pre = text(header, PREFIX + "pre", where, "gpt-2")
        if pre not in PRE_TOKENIZERS:
            raise PxglError(
                f"{where}: tokenizer.ggml.pre {pre[:40]!r} is not one pxgl knows ({', '.join(PRE_TOKENIZERS)}; "
                "FORMATS §10.3)"
            )
        body = {"vocab": tokens, "merges": _bpe_merges(header, tokens, where)} | _byte_level(pre)
    else:
        if key(header, PREFIX + "remove_extra_whitespaces", {7}, False, where):
            raise PxglError(
                f"{where}: tokenizer.ggml.remove_extra_whitespaces: pxgl's tokenizers do not collapse spaces"
            )
        scores = _numbers(header, PREFIX + "scores", vocab_size, {6, 12}, where)[:count]
        body = {"vocab": tokens, "merges": sentencepiece_merges(tokens, scores)}
        body |= _sentencepiece(bool(key(header, PREFIX + "add_space_prefix", {7}, True, where)))
    body["unk_id"] = special["unknown"]
    add_bos = bool(key(header, PREFIX + "add_bos_token", {7}, model == "llama", where)) and special["bos"] is not None
    eos = [special[name] for name in ("eos", "eot", "eom") if special[name] is not None]
    template = text(header, "tokenizer.chat_template", where, "") or None
    return (
        {"format": "pxgl-bpe", "version": 1, "vocab_size": vocab_size}
        | body
        | {
            "added_tokens": added,
            "bos_id": special["bos"],
            "eos_ids": list(dict.fromkeys(eos)),
            "add_bos": add_bos,
            "chat_template": template,
        }
    )


def gguf_tokenizer(header: Header, vocab_size: int, where: str) -> tuple[Tokenizer | None, int | None]:
    """The file's tokenizer (None when it has no tokenizer.ggml.model) and the model's bos: bos_token_id when
    the tokenizer adds it (§14.1)."""
    if PREFIX + "model" not in header.values:
        return None, None
    document = tokenizer_document(header, vocab_size, where)
    tokenizer = Tokenizer.loads(json.dumps(document), f"{where} (its tokenizer.ggml.*)")
    return tokenizer, document["bos_id"] if document["add_bos"] else None


def _gguf_form(document: dict[str, Any]) -> tuple[str, Any] | None:
    """("gpt2", its pre) or ("llama", add_space_prefix) of a tokenizer whose steps are exactly what the import
    makes of one (FORMATS §10.3); None for any other."""
    if document.get("version") != 1:
        return None
    steps = {k: v for k, v in document.items() if k in _byte_level("gpt-2")}
    pre = next((name for name in PRE_TOKENIZERS if _byte_level(name) == steps), None)
    if pre is not None:
        return "gpt2", pre
    return next((("llama", prefix) for prefix in (True, False) if _sentencepiece(prefix) == steps), None)


def gguf_tokenizer_keys(tokenizer: Tokenizer, vocab_size: int) -> list[tuple[str, tuple[Any, Any]]]:
    """The tokenizer.ggml.* keys of a version-1 tokenizer (FORMATS §10.3, the inverse of the import), each as
    (key, (value, GGUF value type)); [] with a line on stderr for one GGUF cannot hold."""
    T = gguf_package().GGUFValueType

    document = tokenizer.to_json()
    form = _gguf_form(document)
    if form is None:
        print("the model's tokenizer has no GGUF form (FORMATS §10.3): the file is written without it", file=sys.stderr)
        return []
    sentencepiece = form[0] == "llama"
    added = {token["id"]: token for token in document["added_tokens"]}
    # ids past the tokenizer's tokens (§6.1's padding) as convert_hf_to_gguf.py pads a vocabulary: [PAD<id>], unused
    tokens = document["vocab"] + [
        added[i]["content"] if i in added else f"[PAD{i}]" for i in range(len(document["vocab"]), vocab_size)
    ]
    types = [
        (CONTROL if added[i]["special"] else USER_DEFINED)
        if i in added
        else UNUSED
        if i >= len(document["vocab"])
        else (BYTE if sentencepiece and _is_byte(t) else NORMAL)
        for i, t in enumerate(tokens)
    ]
    merges = document["merges"]
    keys: list[tuple[str, tuple[Any, Any]]] = [
        (PREFIX + "model", ("llama" if sentencepiece else "gpt2", T.STRING)),
        (PREFIX + "tokens", (tokens, T.ARRAY)),
        (PREFIX + "token_type", (types, T.ARRAY)),
    ]
    if sentencepiece:
        vocab, first_rank = document["vocab"], {}
        ids = {piece: i for i, piece in enumerate(vocab)}
        for rank, (a, b) in enumerate(merges):
            first_rank.setdefault(ids[vocab[a] + vocab[b]], rank)
        scores = [float(-first_rank.get(i, len(merges) + i)) for i in range(len(tokens))]
        keys += [(PREFIX + "scores", (scores, T.ARRAY)), (PREFIX + "add_space_prefix", (form[1], T.BOOL))]
    else:
        vocab = document["vocab"]
        keys += [
            (PREFIX + "pre", (form[1], T.STRING)),
            (PREFIX + "merges", ([f"{vocab[a]} {vocab[b]}" for a, b in merges], T.ARRAY)),
        ]
    for name, value in (("bos", document["bos_id"]), *zip(("eos", "eot", "eom"), document["eos_ids"], strict=False)):
        if value is not None:
            keys.append((f"{PREFIX}{name}_token_id", (value, T.UINT32)))
    if document["unk_id"] is not None:
        keys.append((PREFIX + "unknown_token_id", (document["unk_id"], T.UINT32)))
    keys.append((PREFIX + "add_bos_token", (document["add_bos"], T.BOOL)))
    if document["chat_template"] is not None:
        keys.append(("tokenizer.chat_template", (document["chat_template"], T.STRING)))
    return keys


def _is_byte(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
