"""The built-in corpus: the documentation of the Python standard library on this machine.

Nothing is shipped or downloaded: the text is gathered once from the docstrings
of the installed standard library's source files (read with ``ast``, never
imported) and cached in the user's data folder. It is real English prose about
programming, about 1.5 MB, in printable ASCII.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from engine.data import Corpus, CorpusError

NAME = "Python standard library docs (built in)"
TARGET_BYTES = 1_500_000
MIN_BYTES = 200_000
_VERSION = 1  # bump when the way the text is gathered changes
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo"}


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chargpt-studio"


def cache_path() -> Path:
    return data_dir() / f"default-corpus-v{_VERSION}.txt"


def load_default_corpus() -> Corpus:
    """The built-in corpus, gathered on first use and read from the cache after."""
    path = cache_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    if len(text) < MIN_BYTES:
        text = build_text()
        _write_cache(path, text)
    return Corpus(text, NAME)


def build_text(stdlib: Path | None = None, target: int = TARGET_BYTES) -> str:
    """Docstrings of the standard library's modules, classes and functions, in file order."""
    root = stdlib or Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for path in _python_files(root):
        for doc in _docstrings(path):
            parts.append(doc)
            size += len(doc) + 2
        if size >= target:
            break
    if size < MIN_BYTES:
        raise CorpusError(
            f"the Python standard library at {root} holds too little documentation for the "
            "built-in corpus; open a text file of your own instead"
        )
    return "\n\n".join(parts) + "\n"


def _docstrings(path: Path) -> list[str]:
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old escape sequences in some modules
            tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return []
    docs = []
    for node in _statements(tree):
        if isinstance(node, _DEFS):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                text = _printable(inspect.cleandoc(doc))
                if len(text) >= 40:  # one-liners like "Return x." teach little
                    docs.append(text)
    return docs


def _python_files(folder: Path) -> Iterator[Path]:
    """The ``.py`` files below ``folder`` in sorted path order, as ``sorted(rglob("*.py"))``
    gives them, but lazily and without entering the skipped folders: a sorted rglob lists the
    whole library first, site-packages included (0.5 s here), and the text is complete after
    a few hundred files."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):  # rglob does not follow links to folders either
            if entry.name not in _SKIP_DIRS:
                yield from _python_files(Path(entry.path))
        elif entry.name.endswith(".py"):
            yield Path(entry.path)


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """The module and its statements, in ``ast.walk``'s order, without the expressions, where
    no docstring can be: walking those too cost the first launch one to two seconds."""
    todo: list[ast.AST] = [tree]
    for node in todo:  # breadth first: the list grows behind the loop
        for field in _BODIES:
            todo.extend(getattr(node, field, ()))
        yield node


_DEFS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# The fields that hold statements, in the order of every node's _fields that has several
# (Try: body, handlers, orelse, finalbody; If, For, While: body, orelse); Match has cases,
# and an except handler and a case hold a body.
_BODIES = ("body", "handlers", "orelse", "finalbody", "cases")


def _printable(text: str) -> str:
    """Keep printable ASCII and newlines, so the vocabulary stays under a hundred characters."""
    return _UNPRINTABLE.sub("", text.replace("\t", "    "))


_UNPRINTABLE = re.compile(r"[^\n -~]")


def _write_cache(path: Path, text: str) -> None:
    """Write atomically; a read-only home only costs rebuilding next time, and a full disk
    keeps no part-written copy (one a launch filled the disk with the rest of)."""
    from engine.checkpoint import CheckpointError, write_atomic  # safetensors and all: first launch only

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"), "built-in corpus")
    except (OSError, CheckpointError):
        pass
