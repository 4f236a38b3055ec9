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

from engine.cli import STOP_SIGNALS

# SIGTERM: logout, systemd, kill; SIGHUP: the terminal it was started from closed; SIGINT:
# Ctrl-C there: the signals that stop `chargpt train`.
SIGNALS = tuple(STOP_SIGNALS)


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
        # one ignored stays ignored, as `chargpt train` leaves it: `nohup chargpt-studio &`
        # outlives the terminal it was started from
        self._before = {
            signum: signal.signal(signum, self._on_signal)
            for signum in SIGNALS
            if signal.getsignal(signum) != signal.SIG_IGN
        }

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
        for each in self._before:  # a second one ends the process at once, should closing hang
            signal.signal(each, signal.SIG_DFL)
        modal = QApplication.activeModalWidget()  # a question or a file dialog: no one will answer
        if modal is not None:
            modal.close()
        self._window.confirm_close = False
        QTimer.singleShot(0, self._window.close)  # once the dialog's own event loop has returned
