"""The samples pane: newest first, each under its iteration and origin."""

from app.samples_view import SamplesView


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
