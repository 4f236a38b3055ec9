"""The errors that are a person's to fix, or the machine's limits, not bugs of ours."""

from __future__ import annotations

import errno
from pathlib import Path


class InputError(Exception):
    """Bad input (a file, a setting, a folder): the message is one line that says what is wrong
    and what to do. The command line prints it alone and the window shows it without a
    traceback; any other exception is a bug, and keeps its traceback for the report."""


def out_of_memory(e: MemoryError) -> str:
    """What to tell a person when an allocation fails after all: the machine's memory, not a
    bug, ran out (other programs may have taken what was free when training started)."""
    return f"out of memory ({e or 'an allocation failed'}); lower the batch size, or close other programs"


def write_failure(path: Path, e: BaseException) -> str:
    """Why ``path`` could not be written, and what to do, in words: for the disk full,
    read-only or not ours, a person's remedy, not an errno."""
    code = e.errno if isinstance(e, OSError) else None
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return "the disk is full; free some space or save somewhere else"
    if code in (errno.EACCES, errno.EPERM):
        return "no permission to write in that folder; choose a folder you can write to"
    if code == errno.EROFS:
        return "the disk is read-only; choose another folder"
    if code == errno.ENOENT:
        if not path.parent.is_dir():
            return f"the folder {path.parent} does not exist; create it or choose another"
        return f"{path.parent} takes no new files or folders; choose another folder"  # /proc, say
    if code == errno.ENOTDIR:
        return f"{_file_in_the_way(path)} is not a folder but a file; choose another folder"
    if code == errno.EISDIR or path.is_dir():
        return "a folder has that name; choose a file name"
    detail = (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__
    return f"{detail}; try again or save somewhere else"


def _file_in_the_way(path: Path) -> Path:
    """The first of ``path``'s folders, outermost first, or ``path`` itself (a run folder),
    that is a file. It was the folder holding ``path``, which blamed "." for notes.txt."""
    for p in (*reversed(path.parents), path):
        if p.exists() and not p.is_dir():
            return p
    return path.parent  # taken away since the failure: the likeliest one


def read_failure(path: Path, e: OSError) -> str:
    """Why a file that is there could not be read, and what to do, in words."""
    if e.errno in (errno.EACCES, errno.EPERM):
        return "no permission to read it; check its permissions, or open it as its owner"
    if e.errno == errno.EISDIR or path.is_dir():
        return "a folder stands where this file should be"
    return f"{e.strerror or e}; check the disk and try again"
