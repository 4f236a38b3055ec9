"""Fixtures for driving the real window: an isolated user (settings, data folder) and a small corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QSettings, Qt
from PySide6.QtWidgets import QMessageBox

from app.main_window import MainWindow
from app.worker import FINISHED, STOPPED, GuiThreadCollector

# A few kilobytes of varied text: enough for the tiny preset's context and a validation split.
LINES = [
    "the quick brown fox jumps over the lazy dog.",
    "a stitch in time saves nine, said the old tailor.",
    "to train a model, feed it text and let it guess the next letter.",
    "rain on the window, tea on the table, a cat asleep by the fire.",
    "numbers: 0 1 2 3 4 5 6 7 8 9; punctuation: ( ) [ ] { } ! ? ; :",
]


@pytest.fixture(scope="session", autouse=True)
def collector(qapp) -> Iterator[GuiThreadCollector]:
    """Garbage collected on the GUI thread, as in the app (app/main.py)."""
    c = GuiThreadCollector()
    yield c
    c.close()


@pytest.fixture(autouse=True)
def isolated_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings, the data folder (runs, corpus cache) and the organisation: all under tmp_path."""
    home = tmp_path / "user"
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(home / "settings"))
    QCoreApplication.setOrganizationName("chargpt-studio-tests")
    QCoreApplication.setApplicationName("chargpt-studio-tests")
    return home


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    text = "\n".join(LINES[(i * 7) % len(LINES)] for i in range(120)) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_window(qtbot, settings: QSettings, corpus_file: Path, monkeypatch: pytest.MonkeyPatch):
    """Windows on the small test corpus; each is closed (and its worker joined) at teardown."""
    windows: list[MainWindow] = []
    # Never a real modal question: closing mid-run discards unless a test answers otherwise.
    monkeypatch.setattr(MainWindow, "ask_before_closing", lambda *a, **k: QMessageBox.StandardButton.Discard)

    def make(corpus: Path | None = corpus_file, the_settings: QSettings = settings) -> MainWindow:
        if corpus is not None:
            the_settings.setValue("corpus", str(corpus))
        w = MainWindow(the_settings)  # closed below, not by qtbot: the worker must be joined first
        w.show()
        windows.append(w)
        if corpus is not None:
            qtbot.waitUntil(lambda: w.corpus is not None and w.panel.start.isEnabled(), timeout=10_000)
        return w

    yield make
    monkeypatch.setattr(MainWindow, "ask_before_closing", lambda *a, **k: QMessageBox.StandardButton.Discard)
    for w in windows:
        for box in w.messages():
            box.done(0)
        w.close()
        assert w.handle is None


def tiny(window: MainWindow, *, iters: int = 100_000, batch: int = 4, threads: int = 1) -> None:
    """Set the panel to the tiny preset with small batches, one BLAS thread (deterministic)."""
    p = window.panel
    p.preset.setCurrentIndex(p.preset.findData("tiny"))
    p.batch.setValue(batch)
    p.iters.setValue(iters)
    p.threads.setValue(threads)


def train_to_end(window: MainWindow, qtbot, *, timeout: int = 20_000, **settings: int) -> None:
    """Start a tiny run (``settings`` as for ``tiny``) with the Start button and wait for its end."""
    tiny(window, **settings)
    qtbot.mouseClick(window.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.state == FINISHED, timeout=timeout)


def last_iter(window: MainWindow) -> int:
    return window.store.last_iteration


def train_then_stop(window: MainWindow, qtbot, *, at: int = 5, **settings: int) -> None:
    """Start a tiny run (``settings`` as for ``tiny``) and Stop it once ``at`` iterations are in."""
    tiny(window, **settings)
    qtbot.mouseClick(window.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(window) >= at, timeout=20_000)
    qtbot.mouseClick(window.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.state == STOPPED, timeout=10_000)


def plotted(window: MainWindow) -> int:
    """How many loss points the plot item holds (its full data, before downsampling)."""
    x = window.plots.loss_raw.xData
    return 0 if x is None else len(x)


def boxes(window: MainWindow, title: str) -> list[QMessageBox]:
    return [b for b in window.messages() if b.windowTitle() == title]


WaitUntil = Callable[..., None]


def answer_close_questions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """Answer the window's "Export before closing?" with Close without exporting; the questions
    asked go in the list returned."""
    asked: list[tuple[object, ...]] = []

    def discard(*args: object, **kwargs: object) -> QMessageBox.StandardButton:
        asked.append(args)
        return QMessageBox.StandardButton.Discard

    monkeypatch.setattr(MainWindow, "ask_before_closing", discard)
    return asked


def run_qt_snippet(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh Python with the repository importable and ``env`` set (a Qt
    platform or scale that this process cannot change once Qt is up); return the JSON object
    its last line prints."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])
