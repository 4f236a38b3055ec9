"""The errors that are a person's to fix, or the machine's limits, not bugs of ours."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (a file, a setting, a folder): the message is one line that says what is wrong
    and what to do. The command line prints it alone and the window shows it without a
    traceback; any other exception is a bug, and keeps its traceback for the report."""


def out_of_memory(e: MemoryError) -> str:
    """What to tell a person when an allocation fails after all: the machine's memory, not a
    bug, ran out (other programs may have taken what was free when training started)."""
    return f"out of memory ({e or 'an allocation failed'}); lower the batch size, or close other programs"
