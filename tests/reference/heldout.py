"""A model's held-out scores recomputed from docs/FORMATS.md alone (§6 BPE, §9 corpus, split and scores, §3
through the oracle): the corpus read with lzma and json, the split by its numpy rule, the text encoded by a
BPE written here, every position scored by the oracle in float64. Tests only; independent of engine/."""

import itertools
import json
import lzma
import math
import re
from pathlib import Path

import numpy as np

from tests.reference import oracle

CHUNK = re.compile(r"\s?\w+|\s?[^\w\s]+|\s+")
BATCH = 4096


def corpus_documents(path: Path) -> list[str]:
    document = json.loads(lzma.decompress(path.read_bytes()).decode("utf-8"))
    assert document["format"] == "pxgl-corpus"
    return document["documents"]


def heldout_documents(documents: list[str], seed: int, fraction: float) -> list[str]:
    k = max(1, round(fraction * len(documents)))
    return [documents[i] for i in sorted(np.random.default_rng(seed).permutation(len(documents))[:k])]


def bpe_encode(text: str, merges: list[list[int]]) -> list[int]:
    """§6: each chunk's bytes merged by repeatedly applying the lowest-index merge present."""
    rank: dict[tuple[int, ...], int] = {}
    for index, pair in enumerate(merges):
        rank.setdefault(tuple(pair), index)  # a repeated pair never fires: its first index is present first
    ids: list[int] = []
    for chunk in CHUNK.findall(text):
        tokens = list(chunk.encode("utf-8"))
        while len(tokens) > 1:
            pairs = [rank.get(pair, math.inf) for pair in itertools.pairwise(tokens)]
            best = min(pairs)
            if best == math.inf:
                break
            merged, i = [], 0
            while i < len(tokens):
                if i + 1 < len(tokens) and rank.get((tokens[i], tokens[i + 1])) == best:
                    merged.append(256 + int(best))
                    i += 2
                else:
                    merged.append(tokens[i])
                    i += 1
            tokens = merged
        ids += tokens
    return ids


def scores(params: dict, merges: list[list[int]], documents: list[str]) -> dict:
    """top1, bits_per_byte, perplexity and counts over every position of every document (§9)."""
    window = oracle.architecture(params["meta"])[0]["window"]
    contexts, targets = [], []
    for document in documents:
        ids = bpe_encode(document, merges)
        for i in range(len(ids)):
            contexts.append(ids[max(0, i - window) : i])
            targets.append(ids[i])
    target = np.asarray(targets)
    nats, hits, ties = 0.0, 0, 0
    for start in range(0, len(contexts), BATCH):
        lg = oracle.logits(params, contexts[start : start + BATCH])
        t = target[start : start + BATCH]
        nats -= float(oracle.log_probabilities(lg, t).sum())
        right = lg.argmax(axis=1) == t
        hits += int(right.sum())
        ties += int((~right & oracle.near_tie(lg)).sum())
    total_bytes = sum(len(d.encode("utf-8")) for d in documents)
    return {
        "positions": len(targets),
        "bytes": total_bytes,
        "top1": hits / len(targets),
        "top1_with_ties": (hits + ties) / len(targets),
        "bits_per_byte": nats / math.log(2) / total_bytes,
        "perplexity": math.exp(nats / len(targets)),
    }
