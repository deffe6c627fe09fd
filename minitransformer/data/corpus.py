"""Text corpora that need no download: the built-in default and any UTF-8 file.

The default corpus is gathered at run time from the docstrings of the Python standard library
installed with the interpreter (read as source text with `ast`, never imported), kept to printable
ASCII so the vocabulary stays small (about 95 characters).
"""
from __future__ import annotations

import ast
import os
import sysconfig
from pathlib import Path

DEFAULT_MAX_CHARS = 1_000_000
_PRINTABLE = set(chr(c) for c in range(32, 127)) | {"\n"}


def default_corpus(max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Docstrings of the standard library, in a fixed file order, up to `max_chars` characters."""
    pieces, total = [], 0
    for _, doc in stdlib_docstrings():
        pieces.append(doc + "\n\n")
        total += len(doc) + 2
        if total >= max_chars:
            break
    return "".join(pieces)[:max_chars]


def stdlib_docstrings():
    """(module, docstring) pairs of the standard library in a fixed file order: every module,
    class and function docstring longer than 40 characters, kept to printable ASCII. The module
    is the file's top-level name ("email" for email/message.py, "os" for os.py)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = False
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages") or any(part.startswith("test") for part in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        module = Path(rel[0]).stem
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    found = True
                    yield module, "".join(c for c in doc if c in _PRINTABLE)
    if not found:
        raise RuntimeError(f"no docstrings found under {root}; pass a text file with --data FILE")


def load_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file; a missing, empty or non-UTF-8 file raises a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist or is not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data file {str(path)!r} is not valid UTF-8 text (byte {err.start}: "
                         f"{raw[err.start:err.start + 1]!r}); convert it to UTF-8 first") from None
    if not text.strip():
        raise ValueError(f"data file {str(path)!r} is empty: expected some text to train on")
    return text


def shared_data_file(name: str) -> Path | None:
    """A data set from the `shared/data` folder beside the checkout, if present (benchmarks only)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / name
        if candidate.is_file():
            return candidate
    return None
