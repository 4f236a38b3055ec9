"""The one kind of error that is a person's to fix, not a bug of ours."""

from __future__ import annotations


class InputError(Exception):
    """Bad input (a file, a setting, a folder): the message is one line that says what is wrong
    and what to do. The command line prints it alone and the window shows it without a
    traceback; any other exception is a bug, and keeps its traceback for the report."""
