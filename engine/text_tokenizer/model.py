"""TextTokenizer: version 1 of pxgl's tokenizer file (docs/FORMATS.md §6.1), the tokenizers of models made
elsewhere (byte-level BPE as GPT-2's, SmolLM2's, Qwen2's; SentencePiece-style BPE as Llama-2's), encoding and
decoding exactly as Hugging Face tokenizers does with the tokenizer.json it came from."""

import copy
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import PxglError
from ..outputs import atomic_write
from .added import AddedToken, Matcher
from .alphabet import alphabet_bytes
from .bpe import BPE
from .steps import (
    PATTERN_SECONDS,
    PATTERN_SECONDS_PER_CHAR,
    Piece,
    Step,
    byte_token,
    check_steps,
    decode_strings,
    normalize,
    pre_tokenizers,
)

FORMAT = "pxgl-bpe"
VERSION = 1
KINDS = ("byte-level", "sentencepiece")
MAX_IDS = 1 << 20
MAX_PIECE_BYTES = 1024
MAX_PIECES_BYTES = 16 << 20
MAX_MERGES_A_PIECE = 4
"""Merges may outnumber pieces (two merges can make one piece: Llama 3 has 280,147 for 128,000), not by more."""
MAX_ADDED = 1 << 16
MAX_TEMPLATE_BYTES = 1 << 20
"""The caps of §6.1, checked before any table is built."""
ADDED_FLAGS = ("special", "lstrip", "rstrip", "normalized", "single_word")
KEYS = (
    "format", "version", "vocab_size", "kind", "vocab", "merges", "unk_id", "byte_fallback", "fuse_unk",
    "ignore_merges", "normalizer", "pre_tokenizer", "decoder", "added_tokens", "bos_id", "eos_ids", "add_bos",
    "chat_template",
)  # fmt: skip


class TextTokenizer:
    """Every argument is checked here (a file's reader, tokenizer.json's and GGUF's converters all build
    through this constructor); `where` names the source in the one-line errors."""

    def __init__(
        self,
        kind: str,
        vocab: Sequence[str],
        merges: Sequence[tuple[int, int]],
        *,
        unk_id: int | None = None,
        byte_fallback: bool = False,
        fuse_unk: bool = False,
        ignore_merges: bool = False,
        normalizer: Sequence[Step] = (),
        pre_tokenizer: Sequence[Step] = (),
        decoder: Sequence[Step] = (),
        added_tokens: Sequence[AddedToken] = (),
        bos_id: int | None = None,
        eos_ids: Sequence[int] = (),
        add_bos: bool = False,
        chat_template: str | None = None,
        vocab_size: int | None = None,
        where: str = "tokenizer",
    ) -> None:
        if kind not in KINDS:
            raise PxglError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        self.kind = kind
        self.vocab = tuple(vocab)
        self.ids = _check_vocab(self.vocab, where)
        self.merges = tuple((a, b) for a, b in merges)
        results = _check_merges(self.merges, self.vocab, self.ids, where)
        self.added_tokens = tuple(added_tokens)
        self.tokens = _check_added(self.added_tokens, len(self.vocab), where)
        """Ids below this are pieces or added tokens; from here to vocab_size they are padding (§6.1)."""
        self.vocab_size = self.tokens if vocab_size is None else vocab_size
        if not (_is_int(self.vocab_size) and self.tokens <= self.vocab_size <= MAX_IDS):
            raise PxglError(f"{where}: vocab_size {vocab_size!r} must be an integer in {self.tokens}..{MAX_IDS}")
        for name, flag in (("byte_fallback", byte_fallback), ("fuse_unk", fuse_unk), ("ignore_merges", ignore_merges)):
            if not isinstance(flag, bool):
                raise PxglError(f"{where}: {name} must be true or false")
        self.unk_id = _check_id(unk_id, len(self.vocab), "unk_id", where, optional=True)
        self.byte_fallback, self.fuse_unk, self.ignore_merges = byte_fallback, fuse_unk, ignore_merges
        self.normalizer = check_steps(normalizer, "normalizer", where)
        self.pre_tokenizer = check_steps(pre_tokenizer, "pre_tokenizer", where)
        self.decoder = check_steps(decoder, "decoder", where)
        self._byte_runs = any(step["type"] == "byte_fallback" for step in self.decoder)
        self.bos_id = _check_id(bos_id, self.tokens, "bos_id", where, optional=True)
        self.eos_ids = tuple(_check_id(i, self.tokens, "eos_ids", where) for i in eos_ids)
        if len(set(self.eos_ids)) != len(self.eos_ids):
            raise PxglError(f"{where}: eos_ids repeats an id")
        if not isinstance(add_bos, bool) or (add_bos and self.bos_id is None):
            raise PxglError(f"{where}: add_bos must be true or false, and true only with a bos_id")
        self.add_bos = add_bos
        if chat_template is not None and not (
            isinstance(chat_template, str) and len(chat_template.encode("utf-8", "surrogatepass")) <= MAX_TEMPLATE_BYTES
        ):
            raise PxglError(f"{where}: chat_template must be null or a string of at most {MAX_TEMPLATE_BYTES} bytes")
        self.chat_template = chat_template
        self._added_by_id = {t.id: t for t in self.added_tokens}
        self.bos_token = self.id_string(self.bos_id) if self.bos_id is not None else None
        self.eos_token = self.id_string(self.eos_ids[0]) if self.eos_ids else None
        self._bpe = BPE(self.ids, self.merges, results, self.unk_id, byte_fallback, fuse_unk, ignore_merges)
        self._special = {t.content for t in self.added_tokens if t.special}
        self._raw_matcher = Matcher([(t.content, t) for t in self.added_tokens if not t.normalized])
        normalized = [(normalize(t.content, self.normalizer), t) for t in self.added_tokens if t.normalized]
        self._normalized_matcher = Matcher([(content, t) for content, t in normalized if content])
        self._pre_tokenizers = pre_tokenizers(self.pre_tokenizer)

    def padded_to(self, vocab_size: int) -> "TextTokenizer":
        """This tokenizer for a model of vocab_size ids (at least its tokens): the ids past its tokens are
        padding (§6.1), as a model whose embedding has more rows than its tokenizer has tokens needs."""
        if not (_is_int(vocab_size) and self.tokens <= vocab_size <= MAX_IDS):
            raise PxglError(f"a tokenizer of {self.tokens} tokens cannot serve a vocabulary of {vocab_size!r}")
        padded = copy.copy(self)
        padded.vocab_size = vocab_size
        return padded

    def id_string(self, token: int) -> str:
        """What decoding starts from for an id: an added token's content, else the model's piece."""
        added = self._added_by_id.get(token)
        return added.content if added is not None else self.vocab[token]

    def token_bytes(self, token: int) -> bytes:
        if not 0 <= token < self.vocab_size:
            raise PxglError(f"token id {token} is outside 0..{self.vocab_size - 1}")
        added = self._added_by_id.get(token)
        if added is not None:
            return added.content.encode("utf-8", "surrogatepass")
        if token >= self.tokens:
            return b""
        piece = self.vocab[token]
        if self.kind == "byte-level":
            return alphabet_bytes(piece)
        byte = byte_token(piece)
        return bytes([byte]) if byte is not None else piece.replace("▁", " ").encode("utf-8", "surrogatepass")

    def joins_next(self, token: int) -> bool:
        """Whether the text of a sequence ending in this id may change with the ids after it (streamed text
        waits, §11): a padding id (its neighbours decide), or a `<0xNN>` piece where the decoder has a
        byte_fallback step, which decodes a run of them (padding skipped) as a whole."""
        if token >= self.tokens:
            return True
        return self._byte_runs and token >= 0 and byte_token(self.id_string(token)) is not None

    def encode(self, text: str, special: bool = True) -> list[int]:
        """The ids of text, no BOS added; with special=False special tokens written in the text are text."""
        deadline = time.monotonic() + PATTERN_SECONDS + PATTERN_SECONDS_PER_CHAR * len(text)
        ids: list[int] = []
        try:
            for token, stretch, offset in self._raw_matcher.split(text, 0, special):
                if token is not None:
                    ids.append(token)
                    continue
                normalized = normalize(stretch, self.normalizer)
                for inner, part, at in self._normalized_matcher.split(normalized, offset, special):
                    if inner is not None:
                        ids.append(inner)
                    elif part:
                        ids.extend(self._encode_piece((part, at == 0), deadline))
        except UnicodeEncodeError as e:
            raise PxglError(f"text is not valid Unicode: {e.reason} in {text[:40]!r}") from None
        except TimeoutError:
            raise PxglError(
                "the tokenizer's split pattern ran past its time limit on this text "
                f"({PATTERN_SECONDS} s + {PATTERN_SECONDS_PER_CHAR * 1e6:g} µs a character); the pattern backtracks"
            ) from None
        return ids

    def _encode_piece(self, piece: Piece, deadline: float) -> list[int]:
        pieces = [piece]
        for step in self._pre_tokenizers:
            pieces = [out for p in pieces for out in step(p, deadline) if out[0]]
        tokenize = self._bpe.tokenize
        return [token for text, _ in pieces for token in tokenize(text)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        strings = []
        for token in ids:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                raise PxglError(f"token id {token} is outside 0..{self.vocab_size - 1}")
            if token >= self.tokens:
                continue  # padding: tokenizers skips an id it does not know
            string = self.id_string(token)
            if not (skip_special and string in self._special):
                strings.append(string)
        return decode_strings(strings, self.decoder)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "vocab_size": self.vocab_size,
            "kind": self.kind,
            "vocab": list(self.vocab),
            "merges": [list(m) for m in self.merges],
            "unk_id": self.unk_id,
            "byte_fallback": self.byte_fallback,
            "fuse_unk": self.fuse_unk,
            "ignore_merges": self.ignore_merges,
            "normalizer": self.normalizer,
            "pre_tokenizer": self.pre_tokenizer,
            "decoder": self.decoder,
            "added_tokens": [asdict(t) for t in self.added_tokens],
            "bos_id": self.bos_id,
            "eos_ids": list(self.eos_ids),
            "add_bos": self.add_bos,
            "chat_template": self.chat_template,
        }

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="surrogatepass"))

    @classmethod
    def from_json(cls, doc: Any, where: str) -> "TextTokenizer":
        """A tokenizer from its parsed file (version 1); every problem is one PxglError naming it."""
        if not isinstance(doc, dict) or set(doc) != set(KEYS):
            keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise PxglError(f"{where}: a version-1 tokenizer has exactly the keys {', '.join(KEYS)}; got {keys}")
        for key in ("vocab", "merges", "added_tokens", "eos_ids"):
            if not isinstance(doc[key], list):
                raise PxglError(f"{where}: '{key}' must be a list")
        if len(doc["merges"]) > MAX_MERGES_A_PIECE * min(len(doc["vocab"]), MAX_IDS):
            pieces, merges = len(doc["vocab"]), len(doc["merges"])
            raise PxglError(f"{where}: {merges} merges for {pieces} pieces; at most {MAX_MERGES_A_PIECE} a piece")
        for i, m in enumerate(doc["merges"]):
            if not (isinstance(m, list) and len(m) == 2):
                raise PxglError(f"{where}: merge {i} must be a pair of ids, got {m!r:.60}")
        if len(doc["added_tokens"]) > MAX_ADDED:
            raise PxglError(f"{where}: {len(doc['added_tokens'])} added tokens; at most {MAX_ADDED}")
        added = [_added_token(t, i, where) for i, t in enumerate(doc["added_tokens"])]
        return cls(
            doc["kind"],
            doc["vocab"],
            doc["merges"],
            unk_id=doc["unk_id"],
            byte_fallback=doc["byte_fallback"],
            fuse_unk=doc["fuse_unk"],
            ignore_merges=doc["ignore_merges"],
            normalizer=doc["normalizer"],
            pre_tokenizer=doc["pre_tokenizer"],
            decoder=doc["decoder"],
            added_tokens=added,
            bos_id=doc["bos_id"],
            eos_ids=doc["eos_ids"],
            add_bos=doc["add_bos"],
            chat_template=doc["chat_template"],
            vocab_size=doc["vocab_size"],
            where=where,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: Any, limit: int, name: str, where: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not _is_int(value) or not 0 <= value < limit:
        raise PxglError(f"{where}: {name} {value!r} is not an id in 0..{limit - 1}")
    return value


def _check_vocab(vocab: tuple[str, ...], where: str) -> dict[str, int]:
    if not 0 < len(vocab) <= MAX_IDS:
        raise PxglError(f"{where}: {len(vocab)} pieces; a vocabulary holds 1..{MAX_IDS}")
    total = 0
    for i, piece in enumerate(vocab):
        if not isinstance(piece, str) or not piece:
            raise PxglError(f"{where}: piece {i} must be a non-empty string, got {piece!r:.60}")
        size = len(piece.encode("utf-8", "surrogatepass"))
        if size > MAX_PIECE_BYTES:
            raise PxglError(f"{where}: piece {i} is {size} bytes; at most {MAX_PIECE_BYTES}")
        total += size
        if total > MAX_PIECES_BYTES:
            raise PxglError(f"{where}: by piece {i} the pieces hold over {MAX_PIECES_BYTES} bytes (the cap)")
    ids = {piece: i for i, piece in enumerate(vocab)}
    if len(ids) != len(vocab):
        repeated = next(p for i, p in enumerate(vocab) if ids[p] != i)
        raise PxglError(f"{where}: the piece {repeated!r:.60} appears twice in the vocabulary")
    return ids


def _check_merges(
    merges: tuple[tuple[int, int], ...], vocab: tuple[str, ...], ids: dict[str, int], where: str
) -> list[int]:
    """Each merge's result id (the id of its two pieces joined); every merge is checked."""
    pieces = len(vocab)
    if len(merges) > MAX_MERGES_A_PIECE * pieces:
        raise PxglError(f"{where}: {len(merges)} merges for {pieces} pieces; at most {MAX_MERGES_A_PIECE} a piece")
    results = []
    for i, (a, b) in enumerate(merges):
        if type(a) is not int or type(b) is not int or not (0 <= a < pieces and 0 <= b < pieces):
            raise PxglError(f"{where}: merge {i} [{a!r:.20}, {b!r:.20}] names an id outside the vocabulary")
        result = ids.get(vocab[a] + vocab[b])
        if result is None:
            raise PxglError(f"{where}: merge {i} makes {vocab[a] + vocab[b]!r:.60}, which is not in the vocabulary")
        results.append(result)
    if len(set(merges)) != len(merges):
        seen: set[tuple[int, int]] = set()
        i, (a, b) = next((i, m) for i, m in enumerate(merges) if m in seen or seen.add(m))  # type: ignore[func-returns-value]
        raise PxglError(f"{where}: merge {i} repeats the pair [{a}, {b}]")
    return results


def _check_added(added: tuple[AddedToken, ...], pieces: int, where: str) -> int:
    """The vocabulary size: the pieces and the added ids past them, which must be contiguous."""
    if len(added) > MAX_ADDED:
        raise PxglError(f"{where}: {len(added)} added tokens; at most {MAX_ADDED}")
    if not all(_is_int(t.id) and t.id >= 0 and isinstance(t.content, str) and t.content for t in added):
        raise PxglError(f"{where}: an added token's id must be an integer ≥ 0 and its content a non-empty string")
    ids = {t.id for t in added}
    contents = {t.content for t in added}
    if len(ids) != len(added) or len(contents) != len(added):
        raise PxglError(f"{where}: two added tokens share an id or a content")
    beyond = sorted(i for i in ids if i >= pieces)
    if beyond != list(range(pieces, pieces + len(beyond))):
        raise PxglError(f"{where}: the added tokens' ids past the {pieces} pieces must run {pieces}, {pieces + 1}, …")
    if pieces + len(beyond) > MAX_IDS:
        raise PxglError(f"{where}: {pieces + len(beyond)} ids; at most {MAX_IDS}")
    return pieces + len(beyond)


def _added_token(doc: Any, i: int, where: str) -> AddedToken:
    keys = ("id", "content", *ADDED_FLAGS)
    if not isinstance(doc, dict) or set(doc) != set(keys):
        raise PxglError(f"{where}: added token {i} must be an object with exactly the keys {', '.join(keys)}")
    if not _is_int(doc["id"]) or not 0 <= doc["id"] < MAX_IDS:
        raise PxglError(f"{where}: added token {i}'s id {doc['id']!r:.20} is not in 0..{MAX_IDS - 1}")
    content = doc["content"]
    if not (isinstance(content, str) and 0 < len(content.encode("utf-8", "surrogatepass")) <= MAX_PIECE_BYTES):
        raise PxglError(f"{where}: added token {i}'s content must be a string of 1 to {MAX_PIECE_BYTES} bytes")
    if not all(isinstance(doc[flag], bool) for flag in ADDED_FLAGS):
        raise PxglError(f"{where}: added token {i}'s {', '.join(ADDED_FLAGS)} must be true or false")
    return AddedToken(**doc)
