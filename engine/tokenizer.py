"""Byte-level BPE tokenizer (docs/FORMATS.md §6): load, save, encode, decode and train."""

import heapq
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import PxglError
from .pxi import atomic_write, parse_json, read_text

if TYPE_CHECKING:
    from .text_tokenizer import TextTokenizer

FORMAT = "pxgl-bpe"
VERSION = 0
BYTE_TOKENS = 256
MAX_VOCAB = 65536
PAIR_BITS = (MAX_VOCAB - 1).bit_length()
"""A pair of ids is packed into one int, a << PAIR_BITS | b, as a key of the encoder's rank table."""
MAX_TOKEN_BYTES = 256
MAX_TABLE_BYTES = 4 << 20
"""Caps of docs/FORMATS.md §6: one token's bytes, and all tokens' bytes together (ids 0..255 included)."""
SPLIT = re.compile(r"\s?\w+|\s?[^\w\s]+|\s+")

Pair = tuple[int, int]
Progress = Callable[[int, int], None]


MAX_JSON_STRINGS = 1 << 20
MAX_JSON_KEYS = (1 << 18) + (1 << 16)
"""A tokenizer file (ours or a tokenizer.json) holds at most this many JSON strings, and of them at most this
many object keys, both counted before it is parsed (§6.1): parsed, a key of a vocabulary object costs up to
~270 bytes (the key, its id, the entry, the pair handed to the duplicate-key check) and another string up to
~100, so reading stays within the file's size + 200 MB. Real files: Llama 3's 128,256 keys and 690,000
strings (merges as pairs), Qwen2's 151,665 keys."""
KEY = re.compile(r'"\s*:')

MAX_CACHED_CHUNKS = 1 << 16
"""Distinct chunks whose merged ids an encoder keeps (common words recur; a long random text would not)."""


@dataclass(frozen=True)
class Tokenizer:
    """Version 0; `load`/`loads` return a version-1 file as a TextTokenizer (§6.1), which offers the same
    interface. Version 0 has no special tokens: the attributes below are what that means."""

    merges: tuple[Pair, ...]
    bos_id: ClassVar[int | None] = None
    eos_ids: ClassVar[tuple[int, ...]] = ()
    bos_token: ClassVar[str | None] = None
    eos_token: ClassVar[str | None] = None
    add_bos: ClassVar[bool] = False
    chat_template: ClassVar[str | None] = None
    _ranks: dict[int, int] = field(init=False, repr=False, compare=False)
    """Merge rank by pair, packed (PAIR_BITS)."""
    _bytes: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _cache: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.merges) > MAX_VOCAB - BYTE_TOKENS:
            raise ValueError(f"{len(self.merges)} merges: a vocabulary past {MAX_VOCAB}")
        ranks: dict[int, int] = {}
        table = [bytes([b]) for b in range(BYTE_TOKENS)]
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < BYTE_TOKENS + i and 0 <= b < BYTE_TOKENS + i):
                raise ValueError(f"merge {i} ({a}, {b}) names an id not below {BYTE_TOKENS + i}")
            ranks.setdefault(a << PAIR_BITS | b, i)  # a repeated pair can never fire again; the first one wins
            table.append(table[a] + table[b])
        object.__setattr__(self, "_ranks", ranks)
        object.__setattr__(self, "_bytes", tuple(table))
        object.__setattr__(self, "_cache", {})

    @property
    def vocab_size(self) -> int:
        return BYTE_TOKENS + len(self.merges)

    def token_bytes(self, token: int) -> bytes:
        if not 0 <= token < self.vocab_size:
            raise PxglError(f"token id {token} is outside 0..{self.vocab_size - 1}")
        return self._bytes[token]

    def joins_next(self, token: int) -> bool:
        """Never: the text of ids is their bytes decoded, which later bytes cannot change once whole (§11)."""
        return False

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return b"".join(self.token_bytes(int(t)) for t in ids).decode("utf-8", errors="replace")

    def encode(self, text: str, special: bool = True) -> list[int]:
        # Chunks one at a time and a bounded cache: a long text costs its ids, not a list of its chunks or
        # a table of every distinct chunk in it.
        ids: list[int] = []
        cache = self._cache
        for match in SPLIT.finditer(text):
            chunk = match.group()
            cached = cache.get(chunk)
            if cached is None:
                if len(cache) >= MAX_CACHED_CHUNKS:
                    cache.clear()
                cached = cache[chunk] = tuple(self._merge(_utf8(chunk, text)))
            ids.extend(cached)
        return ids

    def _merge(self, data: bytes) -> list[int]:
        """§6's rule, the lowest-index merge present, leftmost first, in O(n log n): a heap of (rank,
        position) over a linked list of tokens. Merging never makes a pair of a lower rank (merge i names
        only ids below 256 + i), so taking occurrences one at a time in (rank, position) order is §6's
        order; an entry whose pair has changed since it was pushed is skipped when popped. Pairs and heap
        entries are packed into ints (hashed and compared faster than tuples)."""
        ids = list(data)
        end = len(ids)
        shift = end.bit_length()  # an entry is rank << shift | position
        rank_of = self._ranks.get
        after = list(range(1, end + 1))
        before = list(range(-1, end - 1))
        pairs = enumerate(pairwise(ids))
        heap = [r << shift | i for i, (a, b) in pairs if (r := rank_of(a << PAIR_BITS | b)) is not None]
        heapq.heapify(heap)
        mask = (1 << shift) - 1
        while heap:
            entry = heapq.heappop(heap)
            rank, i = entry >> shift, entry & mask
            j = after[i]
            if ids[i] < 0 or j == end or rank_of(ids[i] << PAIR_BITS | ids[j]) != rank:
                continue  # i was merged into its left neighbour, or its pair changed since
            merged = ids[i] = BYTE_TOKENS + rank
            ids[j] = -1
            k = after[i] = after[j]
            if k != end:
                before[k] = i
                if (right := rank_of(merged << PAIR_BITS | ids[k])) is not None:
                    heapq.heappush(heap, right << shift | i)
            h = before[i]
            if h >= 0 and (left := rank_of(ids[h] << PAIR_BITS | merged)) is not None:
                heapq.heappush(heap, left << shift | h)
        return [token for token in ids if token >= 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "vocab_size": self.vocab_size,
            "merges": [list(m) for m in self.merges],
        }

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_json(), separators=(",", ":")) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer | TextTokenizer":
        return cls.loads(read_text(path, "tokenizer file"), str(path))

    @classmethod
    def loads(cls, text: str, where: str) -> "Tokenizer | TextTokenizer":
        """A tokenizer from its file's text (e.g. a cartridge member), by its version: 0 (this class) or 1
        (TextTokenizer, §6.1); `where` names it in errors."""
        doc = parse_json(text, where)
        if (
            isinstance(doc, dict)
            and doc.get("format") == FORMAT
            and _is_int(doc.get("version"))
            and doc["version"] == 1
        ):
            from .text_tokenizer import TextTokenizer

            return TextTokenizer.from_json(doc, where)
        return cls(_validate(doc, where))

    @classmethod
    def train(
        cls, text_or_chunks: str | Iterable[str], vocab_size: int, progress: Progress | None = None
    ) -> "Tokenizer":
        """Learn vocab_size - 256 merges from a text or an iterable of texts (documents); fewer if the text
        runs out of pairs to merge, so callers that need the exact size check .vocab_size."""
        if not BYTE_TOKENS <= vocab_size <= MAX_VOCAB:
            raise PxglError(f"tokenizer vocab size {vocab_size} is outside {BYTE_TOKENS}..{MAX_VOCAB}")
        texts = [text_or_chunks] if isinstance(text_or_chunks, str) else text_or_chunks
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(SPLIT.findall(text))
        chunks = sorted(counts)
        words = [list(_utf8(chunk, chunk)) for chunk in chunks]
        freqs = [counts[chunk] for chunk in chunks]
        return cls(tuple(_learn_merges(words, freqs, vocab_size - BYTE_TOKENS, progress)))


def parse_tokenizer_json(text: str, where: str) -> Any:
    """A tokenizer file's JSON, its strings counted first (MAX_JSON_STRINGS)."""
    if (quotes := text.count('"')) > 2 * MAX_JSON_STRINGS:
        raise PxglError(
            f"{where}: about {quotes // 2} JSON strings; a tokenizer file holds at most {MAX_JSON_STRINGS} "
            "(docs/FORMATS.md §6.1)"
        )
    for keys, _ in enumerate(KEY.finditer(text), 1):  # an upper bound: a quote then a colon in a string counts
        if keys > MAX_JSON_KEYS:
            raise PxglError(
                f"{where}: over {MAX_JSON_KEYS} JSON object keys; a tokenizer file holds at most that many "
                "(docs/FORMATS.md §6.1)"
            )
    return parse_json(text, where)


def _utf8(chunk: str, text: str) -> bytes:
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = chunk[e.start]
        raise PxglError(f"text is not valid Unicode: lone surrogate {bad!r} in {text[:40]!r}") from None


def _replace_pair(ids: list[int], pair: Pair, new: int) -> list[int]:
    """Every non-overlapping occurrence of pair, left to right, becomes new."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _learn_merges(words: list[list[int]], freqs: list[int], n_merges: int, progress: Progress | None) -> list[Pair]:
    """Classic BPE over unique chunks: pair counts are updated only for chunks holding the merged pair.

    Ties go to the smallest pair, so training is deterministic. Stops early if no pair is left."""
    counts: Counter[Pair] = Counter()
    where: dict[Pair, set[int]] = {}
    for w, (ids, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(ids):
            counts[pair] += freq
            where.setdefault(pair, set()).add(w)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    lengths = [1] * BYTE_TOKENS
    table_bytes = BYTE_TOKENS
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg or neg == 0:
            continue  # stale heap entry
        length = lengths[pair[0]] + lengths[pair[1]]
        if table_bytes + length > MAX_TABLE_BYTES:
            break
        if length > MAX_TOKEN_BYTES:
            continue  # never merged (a reader would refuse the token, §6); its counts stay true for the rest
        lengths.append(length)
        table_bytes += length
        new = BYTE_TOKENS + len(merges)
        merges.append(pair)
        touched: set[Pair] = set()
        for w in sorted(where.pop(pair)):
            old = words[w]
            new_ids = _replace_pair(old, pair, new)
            for p in pairwise(old):
                counts[p] -= freqs[w]
                touched.add(p)
            for p in pairwise(new_ids):
                counts[p] += freqs[w]
                touched.add(p)
                where.setdefault(p, set()).add(w)
            words[w] = new_ids
        del counts[pair]
        touched.discard(pair)
        for p in touched:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
        if progress is not None:
            progress(len(merges), n_merges)
    return merges


def _validate(doc: Any, where: str) -> tuple[Pair, ...]:
    """The merges of a parsed tokenizer file; every problem is one PxglError naming it."""
    if not isinstance(doc, dict):
        raise PxglError(f"{where}: tokenizer must be a JSON object")
    missing = {"format", "version", "vocab_size", "merges"} - doc.keys()
    if missing:
        raise PxglError(f"{where}: tokenizer lacks key(s) {', '.join(sorted(missing))}")
    if doc["format"] != FORMAT or not _is_int(doc["version"]) or doc["version"] != VERSION:
        raise PxglError(
            f"{where}: format {doc['format']!r} version {doc['version']!r}; pxgl reads {FORMAT!r} version 0 or 1"
        )
    vocab = doc["vocab_size"]
    if not _is_int(vocab) or not BYTE_TOKENS <= vocab <= MAX_VOCAB:
        raise PxglError(f"{where}: vocab_size must be an integer in {BYTE_TOKENS}..{MAX_VOCAB}, got {vocab!r}")
    raw = doc["merges"]
    if not isinstance(raw, list):
        raise PxglError(f"{where}: 'merges' must be a list of [a, b] pairs")
    if len(raw) != vocab - BYTE_TOKENS:
        raise PxglError(f"{where}: {len(raw)} merges, but vocab_size {vocab} needs {vocab - BYTE_TOKENS}")
    merges = []
    for i, m in enumerate(raw):
        if not (isinstance(m, list) and len(m) == 2 and all(_is_int(x) for x in m)):
            raise PxglError(f"{where}: merge {i} must be a pair of integer ids, got {m!r}")
        if not all(0 <= x < BYTE_TOKENS + i for x in m):
            raise PxglError(
                f"{where}: merge {i} {m} names an id not below {BYTE_TOKENS + i} "
                "(a merge may only combine earlier tokens)"
            )
        merges.append((m[0], m[1]))
    _check_token_sizes(merges, where)
    return tuple(merges)


def _check_token_sizes(merges: list[Pair], where: str) -> None:
    """The §6 caps, from the merges' lengths alone: no byte table is built for a tokenizer that breaks them."""
    lengths = [1] * BYTE_TOKENS
    total = BYTE_TOKENS
    for i, (a, b) in enumerate(merges):
        length = lengths[a] + lengths[b]
        if length > MAX_TOKEN_BYTES:
            raise PxglError(
                f"{where}: merge {i} makes a token of {length} bytes, past the limit of {MAX_TOKEN_BYTES} "
                "(docs/FORMATS.md §6)"
            )
        total += length
        if total > MAX_TABLE_BYTES:
            raise PxglError(
                f"{where}: by merge {i} the tokens hold {total} bytes, past the limit of {MAX_TABLE_BYTES} "
                "(docs/FORMATS.md §6)"
            )
        lengths.append(length)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
