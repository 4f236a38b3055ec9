"""The errors that are a person's to fix, or the machine's limits, not bugs of ours."""

from __future__ import annotations

import io
import sys


class InputError(Exception):
    """Bad input (a file, a setting, a folder): the message is one line that says what is wrong
    and what to do. The command line prints it alone and the window shows it without a
    traceback; any other exception is a bug, and keeps its traceback for the report."""


def out_of_memory(e: MemoryError) -> str:
    """What to tell a person when an allocation fails after all: the machine's memory, not a
    bug, ran out (other programs may have taken what was free when training started)."""
    return f"out of memory ({e or 'an allocation failed'}); lower the batch size, or close other programs"


def any_text_streams() -> None:
    """Make standard output take every character a model may write, and standard error every
    path and message, where they would raise UnicodeEncodeError instead: a file or a pipe gets
    UTF-8 (on Windows it gets the ANSI code page, which has no byte for most of them); a terminal
    keeps its own encoding, showing "?" for what it cannot show; standard error writes that as
    an escape (\\u4e2d)."""
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        if isinstance(stream, io.TextIOWrapper):  # not None (no console), nor a test's stand-in
            to_file = stream is sys.stdout and not stream.isatty()
            stream.reconfigure(encoding="utf-8" if to_file else None, errors=errors)
