"""Training and evaluation text (docs/FORMATS.md §9): the frozen default corpus (the Python documentation of
one interpreter, shipped as assets/corpus.json.xz so every Python gives the same documents) or the user's
own files, as a list of documents, and the deterministic splits by document."""

import ast
import hashlib
import json
import lzma
import platform
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError
from .pxi import atomic_write, read_text
from .resources import resource_dir

CORPUS_FILE = "corpus.json.xz"
FORMAT = "pxgl-corpus"
MAX_CORPUS_BYTES = 64 << 20
"""Decompressed size a corpus may reach (the shipped one is 2.3 MB)."""
SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
"""Installed third-party packages are not the stdlib; test suites are mostly fixtures, not prose."""
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
NON_BLANK = re.compile(r"\S")


@dataclass(frozen=True)
class Corpus:
    documents: list[str]
    info: dict[str, Any]
    """source, documents, bytes (and, for the frozen corpus, sha256): recorded in a trained model's meta."""


def default_corpus() -> Corpus:
    """The frozen corpus shipped with pxgl."""
    path = resource_dir("assets") / CORPUS_FILE
    raw = path.read_bytes()
    try:
        text = lzma.LZMADecompressor().decompress(raw, MAX_CORPUS_BYTES + 1)
    except lzma.LZMAError as e:
        raise PxglError(f"{path}: not an xz file ({e}); reinstall pxgl") from None
    if len(text) > MAX_CORPUS_BYTES:
        raise PxglError(f"{path}: decompresses past {MAX_CORPUS_BYTES} bytes; reinstall pxgl")
    doc = json.loads(text)
    if doc.get("format") != FORMAT or not isinstance(doc.get("documents"), list):
        raise PxglError(f"{path}: not a pxgl corpus; reinstall pxgl")
    documents = doc["documents"]
    info = describe(doc["source"], documents) | {"sha256": hashlib.sha256(raw).hexdigest()}
    return Corpus(documents, info)


def describe(source: str, documents: list[str]) -> dict[str, Any]:
    return {
        "source": source,
        "documents": len(documents),
        "bytes": sum(len(d.encode("utf-8", "surrogatepass")) for d in documents),
    }


def file_corpus(paths: list[Path]) -> Corpus:
    """The user's UTF-8 text files; blank lines separate documents."""
    documents: list[str] = []
    for path in paths:
        documents.extend(paragraphs(read_text(path, "text file")))
    return Corpus(documents, describe(", ".join(p.name for p in paths), documents))


def paragraphs(text: str) -> Iterator[str]:
    """A file's documents one at a time: its text between blank lines, blank ones left out."""
    start = 0
    for brk in PARAGRAPH_BREAK.finditer(text):
        if NON_BLANK.search(text, start, brk.start()):
            yield text[start : brk.start()]
        start = brk.end()
    if NON_BLANK.search(text, start):
        yield text[start:]


def held_out(documents: list[str], seed: int, fraction: float) -> tuple[list[str], list[str]]:
    """(rest, held-out): a seeded choice of round(fraction · D) whole documents (at least one on each side)."""
    if len(documents) < 2:
        raise PxglError(
            f"the corpus has {len(documents)} document(s); training needs at least 2 "
            "(one to learn from, one held out to evaluate), separated by a blank line"
        )
    k = min(len(documents) - 1, max(1, round(fraction * len(documents))))
    chosen = set(np.random.default_rng(seed).permutation(len(documents))[:k].tolist())
    rest = [d for i, d in enumerate(documents) if i not in chosen]
    return rest, [d for i, d in enumerate(documents) if i in chosen]


def split_documents(documents: list[str], seed: int, heldout_fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out) by FORMATS §9's rule (pixellm_v0 was trained on this split)."""
    return held_out(documents, seed, heldout_fraction)


def three_way_split(
    documents: list[str], seed: int, heldout_fraction: float, validation_fraction: float
) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, held-out) by FORMATS §9: validation is carved from what held-out leaves, with
    seed + 1, so choosing on it never looks at held-out text."""
    rest, heldout = held_out(documents, seed, heldout_fraction)
    train, validation = held_out(rest, seed + 1, validation_fraction)
    return train, validation, heldout


# --- building the frozen corpus (`make corpus`): the interpreter's own documentation ------------------


def interpreter_documents() -> Corpus:
    """One document per pydoc topic and one per stdlib source file (its docstrings in source order), of
    the running interpreter. The source is parsed with `ast`, never imported."""
    from pydoc_data.topics import topics

    documents = [topics[name] for name in sorted(topics)]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_DIRS.isdisjoint(path.relative_to(root).parts):
            text = _docstrings(path)
            if text:
                documents.append(text)
    source = f"pydoc topics + standard-library docstrings of Python {platform.python_version()}"
    return Corpus(documents, describe(source, documents))


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return ""
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, DOCUMENTED)), key=lambda n: getattr(n, "lineno", 0))
    return "\n\n".join(doc for doc in (ast.get_docstring(n) for n in nodes) if doc)


def write_corpus(path: Path, corpus: Corpus) -> None:
    doc = {"format": FORMAT, "version": 0, "source": corpus.info["source"], "documents": corpus.documents}
    data = lzma.compress(
        json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(), preset=9 | lzma.PRESET_EXTREME
    )
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
