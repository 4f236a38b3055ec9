"""The line of values under the plots."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy


class Readout(QLabel):
    """One line of values, "a · b · c": as many as fit, whole, and "…" where the rest were
    left off (a line cut mid-word read "RSS 168 I"); the whole line is its tooltip. Its width
    is what the layout gives it: a long line must not widen the window."""

    SEP = " · "

    def __init__(self) -> None:
        super().__init__(" ")
        self._parts: list[str] = []
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    @property
    def line(self) -> str:
        """The whole line, shown or not."""
        return self.SEP.join(self._parts)

    def set_parts(self, parts: list[str]) -> None:
        self._parts = parts
        self.setToolTip(self.line)
        self._fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        room, metrics, parts = self.contentsRect().width(), self.fontMetrics(), self._parts

        def first(n: int) -> str:
            return self.SEP.join(parts[:n] + (["…"] if n < len(parts) else []))

        n = len(parts)
        while n > 1 and metrics.horizontalAdvance(first(n)) > room:
            n -= 1
        self.setText(first(n) or " ")
