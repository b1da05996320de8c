"""The BPE model of a version-1 tokenizer (docs/FORMATS.md §6.1, encoding step 4): a pre-token's characters
looked up in the vocabulary (byte fallback, unknowns), then merged by rank, as tokenizers' BPE model does."""

import heapq
from collections.abc import Sequence
from itertools import pairwise

ID_BITS = 21
"""A pair of ids is packed into one int, a << ID_BITS | b (ids are below 2^20)."""
MAX_CACHED_PIECES = 1 << 16


class BPE:
    def __init__(
        self,
        ids: dict[str, int],
        merges: Sequence[tuple[int, int]],
        results: list[int],
        unk_id: int | None,
        byte_fallback: bool,
        fuse_unk: bool,
        ignore_merges: bool,
    ) -> None:
        """`ids`: the pieces' ids; `results`: each merge's (the id of its pieces joined, which the reader checked)."""
        self.ids = ids
        self.ranks = {a << ID_BITS | b: rank for rank, (a, b) in enumerate(merges)}
        self.results = results
        self.unk_id, self.byte_fallback, self.fuse_unk, self.ignore_merges = (
            unk_id,
            byte_fallback,
            fuse_unk,
            ignore_merges,
        )
        self.bytes_ids = [ids.get(f"<0x{b:02X}>") for b in range(256)]
        self._cache: dict[str, tuple[int, ...]] = {}

    def tokenize(self, piece: str) -> tuple[int, ...]:
        cached = self._cache.get(piece)
        if cached is None:
            if len(self._cache) >= MAX_CACHED_PIECES:
                self._cache.clear()
            cached = self._cache[piece] = self._tokenize(piece)
        return cached

    def _tokenize(self, piece: str) -> tuple[int, ...]:
        if self.ignore_merges and (whole := self.ids.get(piece)) is not None:
            return (whole,)
        return tuple(self._merge(self._symbols(piece)))

    def _symbols(self, piece: str) -> list[int]:
        """The piece's characters as ids (tokenizers' BPE::merge_word before merging). A pending unknown is
        added before the next known character, but not before byte-fallback ids (as tokenizers does)."""
        symbols: list[int] = []
        unk: int | None = None
        get = self.ids.get
        for char in piece:
            found = get(char)
            if found is not None:
                if unk is not None:
                    symbols.append(unk)
                    unk = None
                symbols.append(found)
                continue
            if self.byte_fallback:
                fallback = [self.bytes_ids[b] for b in char.encode("utf-8", "surrogatepass")]
                if None not in fallback:
                    symbols.extend(fallback)  # type: ignore[arg-type]
                    continue
            if self.unk_id is not None:
                if unk is not None and not self.fuse_unk:
                    symbols.append(unk)
                unk = self.unk_id
        if unk is not None:
            symbols.append(unk)
        return symbols

    def _merge(self, ids: list[int]) -> list[int]:
        """The lowest-rank adjacent pair merges first, the leftmost among equals: a heap of (rank, position)
        over a linked list. An entry is skipped when its position was merged away or the pair there now
        merges into another id (tokenizers' Word::merge_all compares the merged id, not the rank)."""
        end = len(ids)
        shift = end.bit_length()  # an entry is rank << shift | position
        rank_of = self.ranks.get
        results = self.results
        after = list(range(1, end + 1))
        before = list(range(-1, end - 1))
        pairs = enumerate(pairwise(ids))
        heap = [r << shift | i for i, (a, b) in pairs if (r := rank_of(a << ID_BITS | b)) is not None]
        heapq.heapify(heap)
        mask = (1 << shift) - 1
        while heap:
            entry = heapq.heappop(heap)
            rank, i = entry >> shift, entry & mask
            j = after[i]
            if ids[i] < 0 or j == end:
                continue
            now = rank_of(ids[i] << ID_BITS | ids[j])
            if now is None or results[now] != results[rank]:
                continue
            merged = ids[i] = results[rank]
            ids[j] = -1
            k = after[i] = after[j]
            if k != end:
                before[k] = i
                if (right := rank_of(merged << ID_BITS | ids[k])) is not None:
                    heapq.heappush(heap, right << shift | i)
            h = before[i]
            if h >= 0 and (left := rank_of(ids[h] << ID_BITS | merged)) is not None:
                heapq.heappush(heap, left << shift | h)
        return [token for token in ids if token >= 0]
