"""Standard output that takes every character a model may write."""

import io
import sys

import pytest

from engine.console import printable_stdout


class Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stdout", "written"),
    [
        (io.BytesIO, "天 é\n".encode()),  # a file or a pipe: UTF-8, whatever the code page
        (Terminal, b"? \xe9\n"),  # a terminal's own encoding, with "?" for what it cannot show
    ],
)
def test_standard_output_takes_characters_its_encoding_lacks(monkeypatch, stdout, written):
    out = io.TextIOWrapper(stdout(), encoding="cp1252", newline="\n")  # as on Windows
    monkeypatch.setattr(sys, "stdout", out)
    printable_stdout()
    out.write("天 é\n")
    out.flush()
    assert out.buffer.getvalue() == written
