"""CharGPT Studio's desktop monitor: a thin PySide6 layer over the engine."""

from app import _refcount_guard  # noqa: F401  # before any Qt call: see its docstring
