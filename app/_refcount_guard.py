"""A guard against a reference-count bug of PySide6 6.12.0 on CPython 3.11 and older.

There, every ``SignalInstance.emit()`` called from Python gives back ``True`` without taking
a reference, and every wrapped C++ method returning void gives back ``None`` the same way.
Each call lowers the count of a singleton by one; after a few thousand calls (pyqtgraph makes
hundreds a second) CPython aborts with "Fatal Python error: none_dealloc" or "bool_dealloc".
CPython 3.12 made these singletons immortal, which is why the bug is invisible there.

The guard detects the bug by measuring it, and only then does what CPython 3.12 does: it
gives None, True and False a reference count so large that no leak can bring it to zero.
Without the bug (another PySide6, or Python 3.12+) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_IMMORTAL = 1 << 48  # far beyond anything a leak of one per call can spend in a lifetime


def pyside_leaks_singletons() -> bool:
    """Whether emitting a signal or calling a void method loses a reference to True/None."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(8):
        probe.ping.emit()
        probe.setObjectName("probe")
    leaked = sys.getrefcount(True) < true_before - 4 or sys.getrefcount(None) < none_before - 4
    del probe
    return leaked


def install() -> bool:
    """Make None, True and False immortal if this PySide6 leaks them; True if it did."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    if not pyside_leaks_singletons():
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object, at the object's address.
        ctypes.c_ssize_t.from_address(id(obj)).value += _IMMORTAL
    return True


INSTALLED = install()
