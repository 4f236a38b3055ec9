"""The samples pane: newest first, each under its iteration and origin."""

from PySide6.QtCore import QPoint
from PySide6.QtGui import QTextCursor

from app.samples_view import MAX_SHOWN, SamplesView


def test_a_sample_keeps_its_leading_spaces_and_one_of_only_whitespace_says_so(qtbot):
    """Stripped, an indented sample lost its indent, and a diverged model's blank one showed as
    a header over nothing."""
    view = SamplesView()
    qtbot.addWidget(view)
    view.add(100, "    def f():\n        return 1\n\n", "periodic")
    view.add(200, " \n\n  \n", "periodic")
    lines = view.text.toPlainText().splitlines()
    assert lines[0] == "── iter 200 · periodic ──" and lines[1] == "(only spaces and line breaks)"
    assert lines[3:] == ["── iter 100 · periodic ──", "    def f():", "        return 1"]


def top_line(view: SamplesView) -> str:
    return view.text.cursorForPosition(QPoint(0, 0)).block().text()


def test_a_new_sample_leaves_the_reader_of_an_older_one_where_they_were(qtbot):
    """Rebuilt whole at each sample, the text jumped back to the top every 500 iterations."""
    view = SamplesView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    for it in range(1, 21):
        view.add(it, "\n".join(f"line {k} of sample {it}" for k in range(8)), "periodic")
    bar = view.text.verticalScrollBar()
    assert bar.value() == 0 and top_line(view) == "── iter 20 · periodic ──"  # at the top: sees the newest
    view.add(21, "new", "periodic")
    assert top_line(view) == "── iter 21 · periodic ──"
    bar.setValue(bar.maximum() // 2)
    reading = top_line(view)
    assert "sample" in reading
    cursor = view.text.textCursor()  # and a selection in it, about to be copied
    cursor.setPosition(view.text.toPlainText().index(reading))
    cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
    view.text.setTextCursor(cursor)
    view.add(22, "one\ntwo\nthree", "on demand · temperature 0.8")
    assert top_line(view) == reading
    assert view.text.textCursor().selectedText() == reading


def test_only_the_newest_samples_are_kept_whatever_their_characters(qtbot):
    view = SamplesView()
    qtbot.addWidget(view)
    for it in range(MAX_SHOWN + 5):
        # an emoji is two positions in Qt, a CRLF one (a model of an old checkpoint's CRs)
        view.add(it, f"sample {it} 🙂\r\n漢字 é", "periodic")
    text = view.text.toPlainText()
    assert view.count() == MAX_SHOWN == text.count("── iter")
    assert text.startswith(f"── iter {MAX_SHOWN + 4} ·") and text.endswith("sample 5 🙂\n漢字 é")
    assert view.text.document().availableUndoSteps() == 0  # nor kept as steps to undo, without end
