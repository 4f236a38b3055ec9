"""What the command lines print to."""

from __future__ import annotations

import io
import sys


def printable_stdout() -> None:
    """Make standard output take every character a model may write, where it would raise
    UnicodeEncodeError instead: a file or a pipe gets UTF-8 (on Windows it would get the ANSI
    code page, which has no byte for most of them); a terminal keeps its own encoding and shows
    "?" for what it cannot show. (Standard error never raises: Python writes an escape there.)"""
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):  # not None (no console), nor a test's stand-in
        out.reconfigure(encoding=None if out.isatty() else "utf-8", errors="replace")
