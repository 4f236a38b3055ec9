"""Closing the window when the system asks the process to end."""

from __future__ import annotations

import contextlib
import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication

if TYPE_CHECKING:
    from app.main_window import MainWindow

# SIGTERM: logout, systemd, kill; SIGHUP: the terminal it was started from closed; SIGINT:
# Ctrl-C there. (Windows has no SIGHUP.)
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


class SignalClose(QObject):
    """Closes ``window`` at SIGTERM, SIGHUP or SIGINT as its close button does, without asking:
    the run in it ends with its final checkpoint and joins Recent runs, as ``chargpt train``'s
    does at the same signals. Before, SIGTERM ended the process at once, and the run lost
    everything since its last best checkpoint.

    Python runs a signal's handler only between bytecodes of its own, and a window waiting for
    events runs none: the signal's byte on a socket (``signal.set_wakeup_fd``) wakes Qt, which
    calls into Python, and the handler runs there."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.signum: int | None = None  # the first signal received
        self._window = window
        self._receive, self._send = socket.socketpair()
        for end in (self._receive, self._send):
            end.setblocking(False)
        signal.set_wakeup_fd(self._send.fileno())
        self._notifier = QSocketNotifier(self._receive.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._drain)
        self._before = {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}

    def restore(self) -> None:
        """Put back the handlers there were before, once the window is gone: a later signal
        would close a window no longer there."""
        for signum, handler in self._before.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1)
        self._notifier.setEnabled(False)
        self._receive.close()
        self._send.close()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            self._receive.recv(256)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        for each in SIGNALS:  # a second one ends the process at once, should closing hang
            signal.signal(each, signal.SIG_DFL)
        modal = QApplication.activeModalWidget()  # a question or a file dialog: no one will answer
        if modal is not None:
            modal.close()
        self._window.confirm_close = False
        QTimer.singleShot(0, self._window.close)  # once the dialog's own event loop has returned
