"""The built-in corpus: the standard library's docstrings, gathered without importing it."""

import ast
import errno
import os

import pytest

from engine import default_corpus
from engine.data import CorpusError

LONG = "x" * 40  # docstrings shorter than 40 characters are left out

SOURCE = f'''
"""Module: {LONG}"""
import sys

if sys.platform == "linux":
    def on_linux():
        """In an if: {LONG}"""
try:
    import fast
except ImportError:
    def fallback():
        """In an except: {LONG}"""

class Outer:
    """Class: {LONG}\tafter a tab, then é and a \x07bell"""

    def method(self):
        """Method: {LONG}"""
        def inner():
            """Nested: {LONG}"""
        return [lambda: "not a docstring"]

def short():
    """Too short."""

with open(__file__) as f:
    def in_with():
        """In a with: {LONG}"""
for i in range(2):
    pass
else:
    def in_for_else():
        """In a for-else: {LONG}"""
try:
    pass
finally:
    def in_finally():
        """In a finally: {LONG}"""
match sys.argv:
    case [_, "x"]:
        def in_case():
            """In a case: {LONG}"""
'''


def test_docstrings_come_in_walk_order_printable_and_long_enough(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(SOURCE, encoding="utf-8")
    docs = default_corpus._docstrings(path)
    walked = [
        n
        for n in ast.walk(ast.parse(SOURCE))
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    expected = [ast.get_docstring(n, clean=False) for n in walked]
    assert [d.split(":")[0] for d in docs] == [e.split(":")[0] for e in expected if e and len(e) >= 40]
    assert {d.split(":")[0] for d in docs} == {
        "Module",
        "In an if",
        "In an except",
        "Class",
        "Method",
        "Nested",
        "In a with",
        "In a for-else",
        "In a finally",
        "In a case",
    }
    (cls,) = (d for d in docs if d.startswith("Class"))
    assert "after a tab" in cls and "\t" not in cls and "é" not in cls and "\x07" not in cls
    assert all(c == "\n" or " " <= c <= "~" for d in docs for c in d)


def test_the_text_skips_test_folders_and_refuses_a_library_without_enough(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text(SOURCE, encoding="utf-8")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "b.py").write_text(f'"""From the tests: {LONG}"""', encoding="utf-8")
    with pytest.raises(CorpusError, match="too little documentation"):
        default_corpus.build_text(tmp_path)
    monkeypatch.setattr(default_corpus, "MIN_BYTES", 100)
    text = default_corpus.build_text(tmp_path)
    assert text.startswith("Module: ") and "Nested: " in text and "From the tests" not in text


def test_files_come_in_sorted_path_order_without_the_skipped_folders(tmp_path):
    for name in ("b.py", "b/c.py", "b/test/d.py", "a/z.py", "a.py", "tests/e.py", "a/notes.txt", "b/ab/f.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "a")  # a link to a folder is not followed
    expected = [
        p
        for p in sorted(tmp_path.rglob("*.py"))
        if not default_corpus._SKIP_DIRS.intersection(p.relative_to(tmp_path).parts)
    ]
    walked = list(default_corpus._python_files(tmp_path))
    assert walked == expected
    names = [p.relative_to(tmp_path).as_posix() for p in walked]
    # a folder comes before the file named after it, as in sorted paths
    assert names == ["a/z.py", "a.py", "b/ab/f.py", "b/c.py", "b.py"]


def test_a_cache_that_cannot_be_written_leaves_no_temp_file(tmp_path, monkeypatch):
    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    default_corpus._write_cache(tmp_path / "data" / "corpus.txt", "docs " * 1000)  # quietly
    assert list((tmp_path / "data").iterdir()) == []  # each launch left one, filling the disk
    monkeypatch.undo()
    default_corpus._write_cache(tmp_path / "data" / "corpus.txt", "docs")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["corpus.txt"]
    assert (tmp_path / "data" / "corpus.txt").read_text() == "docs"
