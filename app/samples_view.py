"""Samples: the periodic ones from training and those asked for, newest first."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.config import TrainConfig

MAX_SHOWN = 100  # older samples stay in the run directory's samples.txt
SEPARATOR = "\n\n"
GENERATE, CANCEL = "Generate sample", "Cancel sample"
GENERATE_TIP = "Sample from the model as it is now (Ctrl+G)"
CANCEL_TIP = "Stop making this sample; training goes on when it ends (Ctrl+G)"


class SamplesView(QWidget):
    """The sample controls (prompt, temperature, top-k, length) and the list of samples."""

    sample_requested = Signal(str, int, float, object)  # prompt, n_tokens, temperature, top_k | None
    cancel_requested = Signal()  # the sample being made is not wanted after all

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lengths: list[int] = []  # each sample's cursor positions in the text, newest first
        self._busy = False  # a sample asked for is being made
        self._source = ""  # the text of the model sampled, if it is not the one open

        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("prompt (optional)")
        self.prompt.setToolTip("Text for the model to continue, in characters of the corpus; Enter generates")
        # a file dragged from a file manager also carries its name as text: dropped here, it
        # became "file:///…" in the prompt, where on the rest of the window it opens
        self.prompt.setAcceptDrops(False)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.8)
        self.temperature.setToolTip(
            "Temperature: below 1 the likelier characters win more often (safer text),\n"
            "above 1 the unlikely ones get their chance (wilder text)"
        )
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.top_k.setToolTip("Sample only from the k likeliest characters (off: all)")
        self.length = QSpinBox()
        self.length.setRange(1, 5000)
        self.length.setValue(200)
        self.length.setSuffix(" chars")
        self.length.setToolTip("How many characters to generate after the prompt")
        self.generate_button = QPushButton(GENERATE)
        self.generate_button.setToolTip(GENERATE_TIP)
        self.generate_button.setEnabled(False)

        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        # Its undo history took every insertion and trim, for good: 120 MB after 22,000 samples
        # of which the view kept 100.
        self.text.setUndoRedoEnabled(False)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        every = TrainConfig().sample_interval  # no preset changes it
        self.text.setPlaceholderText(
            f"Samples appear here every {every} iterations and at the end of a run, newest first; "
            "Generate sample makes one at any time."
        )

        form = QFormLayout()
        form.addRow("Prompt", self.prompt)
        knobs = QHBoxLayout()
        for knob in (self.temperature, self.top_k, self.length):
            knob.setMaximumWidth(130)  # stretched, "0.80" sat in a box 290 px wide
            knobs.addWidget(knob)
        knobs.addStretch(1)
        form.addRow("Temp · top-k · length", knobs)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.generate_button)
        layout.addWidget(self.text, 1)

        self.generate_button.clicked.connect(self.request)
        self.prompt.returnPressed.connect(self._generate)

    @Slot()
    def request(self) -> None:
        """Generate a sample, or cancel the one being made (the button and Ctrl+G)."""
        if not self.generate_button.isEnabled():
            return
        if self._busy:
            self.cancel_requested.emit()
        else:
            self._generate()

    @Slot()
    def _generate(self) -> None:
        if not self.generate_button.isEnabled() or self._busy:  # Enter must not cancel one
            return
        k = self.top_k.value()
        self.sample_requested.emit(
            self.prompt.text(), self.length.value(), self.temperature.value(), k or None
        )

    def set_busy(self, busy: bool) -> None:
        """Whether a sample asked for is being made: the button then cancels it."""
        self._busy = busy
        self._label_button()

    def set_source(self, text_name: str) -> None:
        """Name the text of the model that samples, when it is not the one open (a stopped run's,
        with another text opened for the next): "" when it is."""
        self._source = text_name
        self._label_button()

    @Slot(int, int)
    def show_progress(self, made: int, wanted: int) -> None:
        """How far the sample being made is: training waits for it, and 5,000 characters of a
        large model take minutes. On the button that cancels it, not in the status bar, whose
        messages (an export done, a warning) it would overwrite every slice."""
        if self._busy:
            self.generate_button.setText(f"{CANCEL} · {made:,} of {wanted:,} characters made")

    def _label_button(self) -> None:
        if self._busy:
            self.generate_button.setText(CANCEL)
            self.generate_button.setToolTip(CANCEL_TIP)
        else:
            # elided to a share of the pane's width: the button's width is the pane's least
            metrics = self.generate_button.fontMetrics()
            name = metrics.elidedText(
                self._source, Qt.TextElideMode.ElideMiddle, 30 * metrics.averageCharWidth()
            )
            self.generate_button.setText(f"{GENERATE} · model trained on {name}" if name else GENERATE)
            tip = f"\nThe model in memory was trained on {self._source}" if self._source else ""
            self.generate_button.setToolTip(GENERATE_TIP + tip)

    @property
    def busy(self) -> bool:
        return self._busy

    def add(self, iteration: int, text: str, origin: str) -> None:
        """Show a sample above the others, without moving the view of someone reading an older
        one (or what they selected in it): only one at the top sees the new sample come."""
        entry = f"── iter {iteration} · {origin} ──\n{_shown(text)}"
        bar = self.text.verticalScrollBar()
        top, lines = bar.value(), bar.maximum()
        cursor = QTextCursor(self.text.document())  # the view's own cursor and selection move along
        cursor.insertText(entry)
        # as Qt counts it: a CRLF is one position, an emoji two
        self._lengths.insert(0, cursor.position())
        if len(self._lengths) > 1:
            cursor.insertText(SEPARATOR)
        if top > 0:
            bar.setValue(top + bar.maximum() - lines)  # the lines just added above
        if len(self._lengths) > MAX_SHOWN:
            end = self.text.document().characterCount() - 1  # the last block's own end is not text
            cursor.setPosition(end - self._lengths.pop() - len(SEPARATOR))
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)  # not moved: that steps by glyph
            cursor.removeSelectedText()

    def clear(self) -> None:
        self._lengths.clear()
        self.text.clear()

    def count(self) -> int:
        return len(self._lengths)


def _shown(body: str) -> str:
    """A sample as written, its leading spaces kept (indented code, a verse); one of nothing
    but spaces and line breaks (a model that diverged) would look like no sample at all."""
    return body.rstrip() if body.strip() else "(only spaces and line breaks)"
