"""Training text: the default corpus every Python ships (pydoc topics + standard-library docstrings) or the
user's own files, as a list of documents, and the deterministic held-out split by document."""

import ast
import platform
import re
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PxglError

SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
"""Installed third-party packages are not the stdlib; test suites are mostly fixtures, not prose."""
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def default_documents() -> tuple[list[str], dict[str, Any]]:
    """One document per pydoc topic and one per stdlib source file (its docstrings in source order).

    The source is parsed with `ast`, never imported: importing arbitrary stdlib modules has side effects."""
    from pydoc_data.topics import topics

    documents = [topics[name] for name in sorted(topics)]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_DIRS.isdisjoint(path.relative_to(root).parts):
            text = _docstrings(path)
            if text:
                documents.append(text)
    source = f"pydoc topics + standard-library docstrings of Python {platform.python_version()}"
    return documents, _describe(source, documents)


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return ""
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, DOCUMENTED)), key=lambda n: getattr(n, "lineno", 0))
    return "\n\n".join(doc for doc in (ast.get_docstring(n) for n in nodes) if doc)


def file_documents(paths: list[Path]) -> tuple[list[str], dict[str, Any]]:
    """The user's UTF-8 text files; blank lines separate documents."""
    documents: list[str] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PxglError(f"{path}: no such training text file") from None
        except UnicodeDecodeError as e:
            raise PxglError(f"{path}: not UTF-8 text (byte {e.start}); training text must be UTF-8") from None
        except OSError as e:
            raise PxglError(f"{path}: cannot read ({e.strerror or e})") from None
        documents.extend(p for p in PARAGRAPH_BREAK.split(text) if p.strip())
    return documents, _describe(", ".join(p.name for p in paths), documents)


def _describe(source: str, documents: list[str]) -> dict[str, Any]:
    return {
        "source": source,
        "documents": len(documents),
        "bytes": sum(len(d.encode("utf-8", "surrogatepass")) for d in documents),
    }


def split_documents(documents: list[str], seed: int, heldout_fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded random choice of whole documents, at least one on each side."""
    if len(documents) < 2:
        raise PxglError(
            f"the corpus has {len(documents)} document(s); training needs at least 2 "
            "(one to learn from, one held out to evaluate), separated by a blank line"
        )
    n_heldout = min(len(documents) - 1, max(1, round(heldout_fraction * len(documents))))
    heldout = set(np.random.default_rng(seed).permutation(len(documents))[:n_heldout].tolist())
    train = [d for i, d in enumerate(documents) if i not in heldout]
    return train, [d for i, d in enumerate(documents) if i in heldout]
