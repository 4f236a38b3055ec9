"""The main window: composes the panel, plots and samples; menus, shortcuts and settings.

It owns at most one TrainingWorker (through a WorkerThread) and turns the worker's queued
signals into view updates. Engine work happens on the worker or a background task, never here.
"""

from __future__ import annotations

import html
import math
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyqtgraph as pg
import PySide6
from PySide6.QtCore import (
    QByteArray,
    QEvent,
    QEventLoop,
    QObject,
    QSettings,
    QSize,
    Qt,
    QTimer,
    QUrl,
    Slot,
    qVersion,
)
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QKeyEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QFileDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStyle,
    QWidget,
)

import engine
from app.metrics_store import MetricsStore, Pace
from app.plots import TrainingPlots, image_formats
from app.run_panel import RunPanel
from app.samples_view import CANCEL, GENERATE, SamplesView
from app.worker import (
    AUTO_THREADS,
    FAILED,
    FINISHED,
    IDLE,
    PAUSED,
    STOPPED,
    TRAINING,
    RunInfo,
    SessionFactory,
    SessionSetup,
    TrainingWorker,
    WorkerThread,
    named_for,
    run_in_background,
    wait_for_background,
)
from engine.blas import blas_info, cpu_count
from engine.config import PRESETS, ModelConfig, TrainConfig, format_count, format_duration, plural, preset_of
from engine.data import AbsentText, Corpus, CorpusError
from engine.default_corpus import data_dir
from engine.errors import InputError
from engine.memory import NotEnoughMemory, check_memory
from engine.runlog import CHECKPOINTS, FINAL

if TYPE_CHECKING:
    from engine.runlog import RunFollower
    from engine.session import TrainingSession
    from engine.trainer import Trainer

APP_NAME = "CharGPT Studio"
N = TypeVar("N", int, float)
KEPT_FIELDS = ("batch", "iters", "lr", "seed")  # the panel's fields a new session starts with
STARTING = "starting"  # the worker is building the run (reading a checkpoint, say)
BUSY = (STARTING, TRAINING, PAUSED)  # a run is on: its text and model are its own until it stops
CORPUS_REFUSED = "Cannot use this corpus"  # the title of that message box
SAMPLE_REFUSED = "Cannot sample"  # the title of that message box
LOAD_REFUSED = "Cannot load this checkpoint"  # the title of that message box
OTHER_SCALE = "its loss is not on this scale"  # the end of what a comparison on another text says
CHECKPOINT_FILTER = "Checkpoint: to resume, sample or load again (*.safetensors)"
WEIGHTS_FILTER = "Weights only, with PyTorch names (*.safetensors)"
FOLLOW_MS = 500  # how often an opened run directory is read for new records
# A run in view that has written nothing for this long, nor for 30 of its iterations, is said
# to be quiet: its process may have died (killed, a crash) and left it unfinished for good.
QUIET_S = 120.0
QUIET = "Nothing new in this run"
RECENT_RUNS = 8  # File → Recent runs
DEFAULT_SIZE = QSize(1320, 860)  # first launch (within the screen) and screenshots
# Below this the plots cannot be read. Short, as a laptop's screen at 125-150 % scale is (768
# pixels are 512 to 614): there the panel's settings scroll (see RunPanel).
MINIMUM_SIZE = QSize(800, 420)


def runs_dir() -> Path:
    """Where the window writes its run directories: the user's data folder, like the corpus cache."""
    return data_dir() / "runs"


class _EnabledMirror(QObject):
    """Enables each action exactly when its widget is enabled, whatever enables the widget,
    unless the action is held off (``hold_off``)."""

    def __init__(self, parent: QObject, pairs: Iterable[tuple[QWidget, QAction]]) -> None:
        super().__init__(parent)
        self._actions: dict[QWidget, list[QAction]] = {}
        self._held: set[QAction] = set()
        for widget, action in pairs:
            self._actions.setdefault(widget, []).append(action)
            action.setEnabled(widget.isEnabled())
            widget.installEventFilter(self)  # a widget in two pairs gets it twice: Qt keeps one

    def hold_off(self, action: QAction, held: bool) -> None:
        """Keep ``action`` disabled while ``held``, whatever its widget; else follow the widget."""
        (self._held.add if held else self._held.discard)(action)
        for widget, actions in self._actions.items():
            if action in actions:
                self._follow(widget)

    def _follow(self, widget: QWidget) -> None:
        for action in self._actions.get(widget, []):
            action.setEnabled(widget.isEnabled() and action not in self._held)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.EnabledChange and isinstance(watched, QWidget):
            self._follow(watched)
        return False


class _ShortcutsFirst(QObject):
    """The window's menu shortcuts go before its text fields' own keys. On X11, Qt's line edits
    and spin boxes take Ctrl+E (end of line) for themselves, so Export checkpoint's shortcut did
    nothing while one had the focus, as the threads box has after Start. (A filter on each
    field, not on the application: one there was still called as Python shut down, and crashed.)"""

    def __init__(self, window: QWidget, actions: Iterable[QAction]) -> None:
        super().__init__(window)
        self._keys = {a.shortcut().toString() for a in actions if not a.shortcut().isEmpty()}
        for field in [*window.findChildren(QLineEdit), *window.findChildren(QAbstractSpinBox)]:
            field.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and QKeySequence(event.keyCombination()).toString() in self._keys
        ):
            event.ignore()  # not claimed: the shortcut runs (when its action is enabled)
            return True
        return False


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else QSettings()
        self.setWindowTitle(APP_NAME)
        # within the screen with room for the window's frame: bounded by the screen alone, the
        # title bar of a window at 2x on a 768-pixel screen was under the taskbar
        self.setMinimumSize(MINIMUM_SIZE.boundedTo(self.screen().availableGeometry().size() * 0.9))
        self.setAcceptDrops(True)
        self.corpus: Corpus | None = None
        self.corpus_path: str = ""  # "" is the built-in corpus
        self._corpus_request = 0
        # What the window shows next: the newest of Start, Load checkpoint and Open run wins, and
        # a slower, older one (a checkpoint or a folder still being read) gives way when it lands.
        self._show_request = 0
        self._ready_text = ""  # the status bar's message when the run in the window was built
        self._said_not_learning = False  # once a run (_check_learning)
        self.handle: WorkerThread | None = None
        self.run_info: RunInfo | None = None
        self._cannot = ""  # the title of a failure to set up the run being launched
        self._launched_paused = False  # the run being launched is a checkpoint loaded, paused
        self._export_wait: QEventLoop | None = None  # closing waits here for its export
        self._export_ok = False
        self.state = IDLE
        self.confirm_close = True  # ask to save when closing mid-run (batch jobs turn it off)
        self._follower: RunFollower | None = None
        self._viewed_config: dict[str, Any] = {}  # a viewed run's config.json, read when it was opened
        self._written_at = 0.0  # when the run in view last grew (time.monotonic)
        self._pace = Pace()  # of the run training here, for its ETA
        self._said_quiet = False  # that it has not for a while (_say_if_quiet)
        self._dialogs: list[QMessageBox] = []

        self.store = MetricsStore()
        self.panel = RunPanel()
        self.plots = TrainingPlots(self.store)
        self.samples = SamplesView()
        # its width leaves room for the scroll bar of its settings, on a short screen
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        self.panel.setMinimumWidth(280 + bar)
        self.panel.setMaximumWidth(380 + bar)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.plots)
        right.addWidget(self.samples)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        right.setSizes([640, 240])
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.panel)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setContentsMargins(6, 6, 6, 0)
        self.setCentralWidget(self.splitter)

        self._build_status_bar()
        self._build_menus()
        self._connect()
        self._follow_timer = QTimer(self)
        self._follow_timer.setInterval(FOLLOW_MS)
        self._follow_timer.timeout.connect(self._poll_run)

        info = blas_info()
        cores = plural(cpu_count(), "core")
        self.panel.set_blas(f"{info.describe()}, {cores}" if info.found else f"BLAS {info.describe()}")
        self._restore_settings()
        self._set_state(IDLE)
        self.load_corpus(self.corpus_path or None)

    # -- building -------------------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.state_label = QLabel()
        self.iter_label = QLabel()
        self.eta_label = QLabel()
        self.speed_label = QLabel()
        self.step_label = QLabel()
        self.threads_label = QLabel()
        self._threads_in_force = 0  # what the worker reports; 0 until Auto has chosen
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        for w in (
            self.state_label,
            self.iter_label,
            self.eta_label,
            self.speed_label,
            self.step_label,
            self.threads_label,
        ):
            w.setContentsMargins(6, 0, 6, 0)
            bar.addPermanentWidget(w)
        bar.addPermanentWidget(self.progress)

    def _action(
        self, text: str, shortcut: QKeySequence | QKeySequence.StandardKey | str | None, slot: Any
    ) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    def _build_menus(self) -> None:
        S = QKeySequence.StandardKey
        self.open_corpus_action = self._action("Open &corpus…", S.Open, self.choose_corpus)
        self.builtin_action = self._action("Use the &built-in corpus", None, self.use_builtin_corpus)
        self.open_run_action = self._action("Open &run…", "Ctrl+Shift+O", self.choose_run)
        self.load_action = self._action("&Load checkpoint…", "Ctrl+L", self.choose_checkpoint)
        self.export_action = self._action("&Export checkpoint…", "Ctrl+E", self.choose_export)
        self.save_plots_action = self._action("Save plots as &image…", "Ctrl+Shift+S", self.save_plots)
        self.show_folder_action = self._action("S&how run folder", None, self.show_run_folder)
        quit_action = self._action("&Quit", S.Quit, self.close)
        self.start_action = self._action("&Start", "F5", self.start)
        self.pause_action = self._action("&Pause / Resume / Continue", "F6", self.toggle_pause)
        self.stop_action = self._action("S&top", "Shift+F5", self.stop)
        self.sample_action = self._action("&Generate sample", "Ctrl+G", self.samples.request)
        follow_action = self._action("&Follow newest", "Ctrl+F", self.plots.follow)
        self.compare_action = self._action("&Compare with run…", "Ctrl+Shift+C", self.choose_comparison)
        self.clear_compare_action = self._action("C&lear comparison", None, self.clear_comparison)
        guide_action = self._action("&Reading the plots", QKeySequence.StandardKey.HelpContents, self.guide)
        about_action = self._action("&About CharGPT Studio", None, self.about)

        menu = self.menuBar().addMenu("&File")
        for a in (
            self.open_corpus_action,
            self.builtin_action,
            self.open_run_action,
            self.load_action,
            self.export_action,
        ):
            menu.addAction(a)
        menu.addAction(self.save_plots_action)
        self.plots.set_context_actions([self.save_plots_action, follow_action])
        menu.addAction(self.show_folder_action)
        self.recent_menu = QMenu("Recent r&uns", self)  # beside Open run…
        menu.insertMenu(self.load_action, self.recent_menu)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._fill_recent_menu()
        menu.addSeparator()
        menu.addAction(quit_action)
        menu = self.menuBar().addMenu("&Run")
        for a in (self.start_action, self.pause_action, self.stop_action, self.sample_action):
            menu.addAction(a)
        menu = self.menuBar().addMenu("&View")
        for a in (follow_action, self.compare_action, self.clear_compare_action):
            menu.addAction(a)
        self.clear_compare_action.setEnabled(False)
        menu = self.menuBar().addMenu("&Help")
        menu.addAction(guide_action)
        menu.addAction(about_action)
        pairs = (
            (self.panel.start, self.start_action),
            (self.panel.pause, self.pause_action),
            (self.panel.stop, self.stop_action),
            (self.panel.export, self.export_action),
            (self.panel.load, self.load_action),
        )
        for button, action in pairs:
            if button not in (self.panel.pause, self.panel.load):  # whose tooltips the panel keeps
                button.setToolTip(f"{action.text().replace('&', '')} ({action.shortcut().toString()})")
        # A menu item and its shortcut can do what their button can, and only then: F5 while a
        # run was being built started a second one, and Ctrl+O mid-run relabelled the model.
        self._mirror = _EnabledMirror(
            self,
            [
                *pairs,
                (self.panel.open_corpus, self.open_corpus_action),
                (self.panel.open_corpus, self.builtin_action),  # Open…'s other choice
                (self.samples.generate_button, self.sample_action),
            ],
        )
        self._shortcuts_first = _ShortcutsFirst(self, self.findChildren(QAction))

    def _connect(self) -> None:
        p = self.panel
        p.start_clicked.connect(self.start)
        p.pause_toggled.connect(self._on_pause_toggled)
        p.continue_clicked.connect(self.continue_training)
        p.stop_clicked.connect(self.stop)
        p.export_clicked.connect(self.choose_export)
        p.load_clicked.connect(self.choose_checkpoint)
        p.open_corpus_clicked.connect(self.choose_corpus)
        p.threads_changed.connect(self._on_threads_spin)
        self.samples.sample_requested.connect(self._on_sample_requested)
        self.samples.cancel_requested.connect(self._on_sample_cancelled)

    # -- settings -------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = self.settings
        geometry = s.value("geometry")
        # first launch, or a setting that is not a geometry: a roomy window, but never larger
        # than the screen (a 1366x768 laptop)
        if not (isinstance(geometry, QByteArray) and self.restoreGeometry(geometry)):
            self.resize(DEFAULT_SIZE.boundedTo(self.screen().availableGeometry().size() * 0.9))
        self.panel.set_preset(str(s.value("preset", "tiny")))
        # then the Training box as it was left: a short demo run set up stays set up
        for key in KEPT_FIELDS:
            spin = getattr(self.panel, key)
            value = _number(s.value(key), spin.value())
            spin.setValue(min(max(value, spin.minimum()), spin.maximum()))  # a 32-bit field
        self.corpus_path = str(s.value("corpus", "") or "")
        threads = _number(s.value("threads"), AUTO_THREADS)
        self.panel.threads.setValue(max(AUTO_THREADS, min(threads, cpu_count())))

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("preset", self.panel.preset_name())
        s.setValue("corpus", self.corpus_path)
        s.setValue("threads", self.panel.threads.value())
        for key in KEPT_FIELDS:
            s.setValue(key, getattr(self.panel, key).value())
        s.sync()

    def _dialog_dir(self, key: str, fallback: Path | None) -> str:
        """The folder a file dialog opens in: the one last chosen for this kind of file (the
        setting ``key``), else ``fallback``, if they still exist; else "" (the working folder)."""
        for folder in (self.settings.value(key), fallback):
            if folder and Path(str(folder)).is_dir():
                return str(folder)
        return ""

    # -- corpus ---------------------------------------------------------------------------------
    @Slot()
    def choose_corpus(self) -> None:
        # the built-in corpus has no folder of the person's: their home, not the working folder
        here = Path(self.corpus_path).parent if self.corpus_path else Path.home()
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open a text file to train on",
            self._dialog_dir("corpus_dir", here),
            "Text files (*.txt *.md);;All files (*)",
        )
        if path:
            self.settings.setValue("corpus_dir", str(Path(path).parent))
            self.load_corpus(path)

    @Slot()
    def use_builtin_corpus(self) -> None:
        """Train on the built-in corpus again, this launch and the next (Open… picks only files)."""
        if self.panel.open_corpus.isEnabled():
            self.load_corpus(None)

    def load_corpus(self, path: str | None) -> None:
        """Read a corpus (None: the built-in one) off the GUI thread, then show it."""
        self.panel.corpus_label.setText("loading the corpus…")
        self._corpus_request += 1
        request = self._corpus_request  # a later choice wins over a slower earlier load

        def read() -> Corpus:
            if path:
                corpus = Corpus.from_file(path)
                # a text no model here can train on is refused now, not at Start
                shortest = min(PRESETS.values(), key=lambda p: p.model.context)
                corpus.check_context(
                    shortest.model.context,
                    f"use a longer text: {shortest.name}, the model with the shortest context, "
                    f"reads {shortest.model.context} characters at a time",
                )
                return corpus
            from engine.default_corpus import load_default_corpus

            return load_default_corpus()

        def done(corpus: Corpus) -> None:
            if request != self._corpus_request:
                return
            first = self.corpus is None
            self.corpus, self.corpus_path = corpus, path or ""
            self._show_corpus()
            if first and self.panel.start.isEnabled():
                self.panel.start.setFocus()  # Enter or Space starts training

        def failed(message: str, _details: str) -> None:
            if request == self._corpus_request:
                if self.corpus is None and path:  # nothing open yet: a text given at launch, or
                    # the past session's, moved or deleted since. The past session's, unless it
                    # is this one (a mistyped name at launch must not make the next one forget it)
                    instead = self.corpus_path if self.corpus_path != path else ""
                    name = Path(instead).name if instead else "The built-in corpus"
                    message += f"\n\n{name} is open instead; Open… chooses another."
                    self.load_corpus(instead or None)  # ready to train, as on a first launch
                else:
                    self._show_corpus()
            self._message(QMessageBox.Icon.Warning, CORPUS_REFUSED, message)

        run_in_background(read, done, failed)

    def _model_elsewhere(self) -> str:
        """The name of the text the model in memory was trained on, if another is open (and
        Start would train on that one): "" otherwise."""
        info, open_text = self.run_info, self.corpus
        if info is None or open_text is None or info.corpus.sha256 == open_text.sha256:
            return ""
        return info.corpus.name

    def _builtin_open(self) -> bool:
        """Whether the built-in text is the one Start would train on."""
        return self.corpus is not None and not self.corpus_path and not isinstance(self.corpus, AbsentText)

    def _show_corpus(self) -> None:
        self.samples.set_source(self._model_elsewhere())
        self._mirror.hold_off(self.builtin_action, self._builtin_open())  # nothing to go back to
        c = self.corpus
        if c is None:
            self.panel.set_corpus(None)
        else:
            self.panel.set_corpus(
                c.name,
                len(c.tokens),
                c.vocab_size,
                here=not isinstance(c, AbsentText),
                alphabet=c.tokenizer.chars,
            )
            if self.run_info is None and self._follower is None and self.state == IDLE:
                self.plots.set_vocabulary(c.vocab_size)  # where the next run will start

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():  # taken, or refused with the reason when dropped
            # a copy whatever was proposed: a drop taken as a move has its source delete the file
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()

    def dropEvent(self, event: QDropEvent) -> None:
        path, refused = self._dropped_path(event)
        if refused:
            self.statusBar().showMessage(refused, 10_000)  # a "no" cursor alone said nothing
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.open_path(path)

    def _dropped_path(self, event: QDropEvent) -> tuple[str, str]:
        """The one local file or folder dropped, and "", or why it is not taken: a run is on
        (its text and model are its own until it stops), several, or not a file here."""
        urls = event.mimeData().urls()
        if len(urls) != 1:
            return "", f"{len(urls)} files were dropped; drop one at a time"
        if not urls[0].isLocalFile():
            return "", f"{urls[0].toDisplayString()} is not a file on this computer; download it first"
        path = urls[0].toLocalFile()
        # a loaded model not trained on gives way to another model or run, not to a text of its
        # own (its Resume would train on the text it has)
        model = Path(path).is_dir() or path.lower().endswith(".safetensors")
        if self._holds_a_run() or (self.state in BUSY and not model):
            return "", "Stop the run in the window before opening a file dropped on it"
        return path, ""

    def open_path(self, path: str) -> None:
        """A folder opens as a run, a .safetensors file loads as a checkpoint, and any other
        file becomes the corpus: what Open run…, Load checkpoint… and Open corpus… do, for a
        path dropped on the window or given on the command line."""
        if Path(path).is_dir():
            self.open_run(path)
        elif path.lower().endswith(".safetensors"):
            self.load_checkpoint(path)
        else:
            self.load_corpus(path)

    # -- runs -----------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        """Train a new model with the panel's settings on the current corpus."""
        if self.corpus is None or self.state in BUSY:
            return
        self.panel.commit_typing()  # F5 while a rate is still being typed
        corpus = self.corpus
        model_cfg, train_cfg = self.panel.configs(corpus.vocab_size)
        try:  # before the run in the window gives way to one that cannot start
            corpus.check_context(model_cfg.context, "use a longer text, or a preset with a shorter context")
            check_memory(model_cfg, train_cfg)
        except (CorpusError, NotEnoughMemory) as e:
            self._message(QMessageBox.Icon.Warning, "Cannot start training", str(e))
            return
        base, threads = runs_dir(), self.panel.threads.value()

        def factory() -> SessionSetup:
            from engine.trainer import Trainer

            trainer = Trainer(model_cfg, train_cfg, corpus)
            return SessionSetup(_session_in_new_folder(trainer, base, threads=threads))

        self._launch(factory, start_paused=False, cannot="Cannot start training")

    def _launch(self, factory: SessionFactory, *, start_paused: bool, cannot: str) -> None:
        """Run ``factory``'s session on a new worker; ``cannot`` titles a failure to set it up."""
        self._cannot = cannot
        self._launched_paused = start_paused  # a loaded checkpoint, not a new model
        self._show_request += 1  # a checkpoint or a folder still being read gives way to this run
        self._stop_following()
        # a corpus still loading would replace the run's own text in the panel: the run has it
        self._corpus_request += 1
        self._show_corpus()
        self._shutdown_worker()
        self.store.clear()
        self.plots.reset()
        self.samples.clear()
        self._on_sample_ended()  # the last worker's, if it was making one
        self.run_info = None
        self._threads_in_force = 0  # the new worker's count is still to come
        worker = TrainingWorker(factory, threads=self.panel.threads.value(), start_paused=start_paused)
        worker.ready.connect(self._on_ready)
        worker.metrics.connect(self._on_metrics)
        worker.sample.connect(self._on_sample)
        worker.state_changed.connect(self._on_state)
        worker.nonfinite.connect(self._on_nonfinite)
        worker.threads_changed.connect(self._on_threads)
        worker.threads_marked.connect(self._on_threads_marked)
        worker.exported.connect(self._on_exported)
        worker.export_failed.connect(self._on_export_failed)
        worker.continue_failed.connect(self._on_continue_failed)
        worker.warned.connect(self._on_warned)
        worker.final_failed.connect(self._on_final_failed)
        worker.sample_failed.connect(self._on_sample_failed)
        worker.sample_progress.connect(self.samples.show_progress)
        worker.sample_ended.connect(self._on_sample_ended)
        worker.failed.connect(self._on_failed)
        self.handle = WorkerThread(worker)
        self._set_state(STARTING)
        self.handle.start()

    @Slot()
    def toggle_pause(self) -> None:
        self.panel.commit_typing()  # Continue waits while the settings differ from the model's
        if self.panel.pause.isEnabled():  # pause, resume, or continue: what the button says
            self.panel.pause.toggle()

    @Slot()
    def continue_training(self) -> None:
        """Train the finished or stopped model on to the Iterations total, in a new run folder."""
        if self.handle is None or self.state not in (FINISHED, STOPPED):
            return
        self._show_request += 1  # a checkpoint or folder still being read gives way to this run
        base = runs_dir()

        def make_session(trainer: Trainer, before: TrainingSession) -> TrainingSession:
            return _session_in_new_folder(trainer, base, **before.origin())

        self.handle.worker.continue_to(self.panel.iters.value(), make_session)

    @Slot(bool)
    def _on_pause_toggled(self, paused: bool) -> None:
        if self.handle is not None:
            if paused:
                self.handle.worker.pause()
            else:
                self.handle.worker.resume()

    @Slot()
    def stop(self) -> None:
        # While the run is being built too: the worker applies it once the run exists.
        if self.handle is not None and self.state in BUSY:
            self.handle.worker.stop()

    @Slot(int)
    def _on_threads_spin(self, n: int) -> None:
        if self.handle is not None and self.handle.is_running():
            self.handle.worker.set_threads(n)  # applied by the worker, between iterations
        self.threads_label.setText(self._threads_text())

    @Slot(str, int, float, object)
    def _on_sample_requested(self, prompt: str, n: int, temperature: float, top_k: object) -> None:
        if self.handle is not None and self.handle.is_running():
            self.handle.worker.request_sample(
                prompt, n, temperature, top_k if isinstance(top_k, int) else None
            )
            self._set_sampling(True)

    @Slot()
    def _on_sample_cancelled(self) -> None:
        if self.handle is not None and self.handle.is_running():
            self.handle.worker.cancel_sample()
            # what was made goes with it (half a sample is no picture of the model): say so, or
            # Cancel looked like a key that did nothing
            self.statusBar().showMessage("Sample cancelled", 5000)

    @Slot()
    def _on_sample_ended(self) -> None:
        self._set_sampling(False)

    def _set_sampling(self, busy: bool) -> None:
        self.samples.set_busy(busy)
        self.sample_action.setText(f"&{CANCEL if busy else GENERATE}")

    # -- export / load --------------------------------------------------------------------------
    @Slot()
    def choose_export(self) -> None:
        if self.handle is None or not self.handle.is_running():
            return
        path, weights_only, named_at = self._ask_export_path(weights_too=True)
        if path:
            # at the next iteration boundary, on the worker
            self.handle.worker.export(path, weights_only=weights_only, named_at=named_at)
            self.statusBar().showMessage(f"Exporting to {_short(path)}…")

    def _ask_export_path(self, *, weights_too: bool = False) -> tuple[str, bool, int | None]:
        """Ask where to export, suggesting a name that says what and how far, and (if
        ``weights_too``) whether the weights alone; "" if cancelled. And the iteration the
        suggested name gives, if it was kept (None if not): a run trains on behind the dialog,
        and the file is named for the iteration it holds (worker.named_for)."""
        named_at = self.store.last_iteration
        name = f"{self._file_stem()}.safetensors"
        start = str(Path(self._dialog_dir("export_dir", Path.home())) / name)
        filters = [CHECKPOINT_FILTER, *([WEIGHTS_FILTER] if weights_too else []), "All files (*)"]
        elsewhere = self._model_elsewhere()
        title = f"Export the model trained on {elsewhere}" if elsewhere else "Export checkpoint"
        path, chosen = QFileDialog.getSaveFileName(self, title, start, ";;".join(filters))
        if path and Path(path).suffix.lower() != ".safetensors":
            # what a checkpoint is known by: Load's filter, and a file dropped or named at launch
            # (without it, one opened as a text to train on)
            path += ".safetensors"
            target = Path(path)
            # the dialog asked about replacing the name as typed, not with the suffix
            if (
                target.exists()
                and QMessageBox.question(
                    self,
                    "Export checkpoint",
                    f"{target.name} already exists in {_short(target.parent)}. Replace it?",
                )
                != QMessageBox.StandardButton.Yes
            ):
                return "", False, None
        if path:
            # Load opens there next too: a checkpoint just exported is the likely one to load
            for key in ("export_dir", "checkpoint_dir"):
                self.settings.setValue(key, str(Path(path).parent))
        return path, chosen == WEIGHTS_FILTER, named_at if Path(path).name == name else None

    def _file_stem(self) -> str:
        """A file name for what the window shows: the model's preset (not the one the list
        shows now, which may be for the next run), or the run folder's name, and how far."""
        if self.run_info is not None:
            what = preset_of(self.run_info.model_cfg) or "custom"
        elif self._follower is not None:
            what = self._follower.run_dir.name
        else:
            what = self.panel.preset_name()
        return f"chargpt-{what}-iter{self.store.last_iteration}"

    @Slot()
    def save_plots(self) -> None:
        """Save the three plots as an image, named by the run and how far it got."""
        named_at = self.store.last_iteration
        name = f"{self._file_stem()}-plots.png"
        start = str(Path(self._dialog_dir("plots_dir", Path.home())) / name)
        path, _ = QFileDialog.getSaveFileName(
            self, "Save plots as image", start, "PNG image (*.png);;JPEG image (*.jpg *.jpeg);;All files (*)"
        )
        if path:
            self.settings.setValue("plots_dir", str(Path(path).parent))
            if Path(path).name == name:  # kept while a run went on: for how far the curves reach now
                path = str(named_for(Path(path), named_at, self.store.last_iteration))
            self.save_plots_image(path)

    def _plots_caption(self) -> str:
        """What the plots show, for the top of their image: the model, its text, how far, where."""
        done = self._iteration()
        if self.run_info is not None:
            info = self.run_info
            size = format_count(info.model_cfg.n_params)
            model = f"{preset_of(info.model_cfg) or 'custom model'} ({size} parameters)"
            shown = self.shown_run_dir()  # the folder that holds the model (not a new, empty one)
            folder = f" · {shown.name}" if shown != runs_dir() else ""
            return (
                f"{model} · {info.corpus.name} · iteration {done:,} of {info.train_cfg.max_iters:,}{folder}"
            )
        if self._follower is not None:
            return f"{_run_label(self._viewed_config, self._follower.run_dir.name)} · iteration {done:,}"
        return ""

    def save_plots_image(self, path: str) -> Path | None:
        """Write the plots to ``path`` in the image format its suffix names (PNG, with that
        suffix added, for a name without one Qt can write); say so, or why not."""
        from engine.checkpoint import write_atomic  # safetensors and all: not needed to start

        target = Path(path)
        fmt = target.suffix[1:].lower()
        if fmt not in image_formats():
            target, fmt = target.with_name(target.name + ".png"), "png"
        try:
            write_atomic(target, self.plots.image(fmt, self._plots_caption()), "plots")
        except InputError as e:
            self._message(QMessageBox.Icon.Warning, "Plots not saved", f"The plots were not saved: {e}")
            return None
        self.statusBar().showMessage(f"Saved the plots to {_short(target)}", 10_000)
        return target

    @Slot()
    def choose_checkpoint(self) -> None:
        if self._holds_a_run():
            return
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Load checkpoint",
            self._viewed_checkpoint() or self._dialog_dir("checkpoint_dir", runs_dir()),
            "Checkpoints (*.safetensors);;All files (*)",
        )
        if path:
            self.settings.setValue("checkpoint_dir", str(Path(path).parent))
            self.load_checkpoint(path)

    def _viewed_checkpoint(self) -> str:
        """Where Load checkpoint… starts while a run folder is in view: its final checkpoint, else
        its checkpoints folder, since loading one is how a viewed run trains on; "" otherwise
        (every run's checkpoints are under the folder of runs)."""
        if self._follower is None:
            return ""
        folder = self._follower.run_dir / CHECKPOINTS
        final = folder / FINAL
        return str(final) if final.is_file() else str(folder) if folder.is_dir() else ""

    def load_checkpoint(self, path: str) -> None:
        """Restore a checkpoint, paused and ready to resume. It is read off the GUI thread before
        the model in the window gives way to it: one that cannot be loaded (damaged, its text
        gone) leaves the window as it was."""
        if self._holds_a_run():
            return
        corpus = self.corpus
        base = runs_dir()
        self._show_request += 1
        request = self._show_request
        loading = f"Loading {Path(path).name}…"

        def build() -> tuple[Trainer, list[str], list[dict[str, Any]], str]:
            from engine.checkpoint import CheckpointError, read_settings, restore

            # From the header, before the tensors: a run too big to train here still loads,
            # to sample from and export.
            reasons = []
            try:
                check_memory(*read_settings(path), resuming=True)
            except NotEnoughMemory as e:
                reasons.append(str(e))
            # Its own text, reopened; else the open one, if the model can read it (with a warning
            # that it differs); else none: a checkpoint someone sent, whose text stayed with them,
            # or one whose text was edited since, still samples and exports.
            texts = [None] if corpus is None or isinstance(corpus, AbsentText) else [None, corpus]
            own = ""  # why its own text would not do
            for text in texts:
                try:
                    trainer, warnings = restore(path, text, memory_check=False)
                    break
                except (CheckpointError, CorpusError) as e:
                    own = own or str(e)
            else:  # (a damaged file fails here too, and says so)
                trainer, warnings = restore(path, memory_check=False, absent_text=True)
                reasons.append(f"{own}; open the text it was trained on (Corpus: Open…), then load it again")
            history = _history_beside(Path(path), trainer)
            return trainer, list(warnings), history, "; and ".join(reasons)

        def done(built: tuple[Trainer, list[str], list[dict[str, Any]], str]) -> None:
            self._clear_message(loading)
            if request != self._show_request or self._holds_a_run():
                return  # something newer is shown; nothing of this one is on disk

            def factory() -> SessionSetup:  # its run folder made on the worker, as Start's
                from engine.session import TrainingSession

                trainer, warnings, history, cannot_train = built
                try:
                    session = _session_in_new_folder(trainer, base, resumed_from=str(path))
                except InputError as e:  # runs/ not writable (full, read-only): it samples and exports
                    session = TrainingSession(trainer)
                    cannot_train = "; and ".join(filter(None, [cannot_train, str(e)]))
                return SessionSetup(session, warnings, history, cannot_train)

            self._launch(factory, start_paused=True, cannot=LOAD_REFUSED)

        def failed(message: str, details: str) -> None:
            self._clear_message(loading)
            if request == self._show_request:
                self._message(QMessageBox.Icon.Warning, LOAD_REFUSED, message, details)

        self.statusBar().showMessage(loading)
        run_in_background(build, done, failed)

    def _clear_message(self, text: str) -> None:
        """Take ``text`` off the status bar, if it is still what it says."""
        if self.statusBar().currentMessage() == text:
            self.statusBar().clearMessage()

    # -- opening a run directory ----------------------------------------------------------------
    @Slot()
    def choose_run(self) -> None:
        if self._holds_a_run():
            self._message(
                QMessageBox.Icon.Information, "Training", "Stop the current run before opening another."
            )
            return
        path = self._ask_run_folder("Open a run directory")
        if path:
            self.open_run(path)

    def _ask_run_folder(self, caption: str) -> str:
        """Ask for a run folder, starting where the last one was chosen; "" if cancelled."""
        start = self._dialog_dir("runs_parent_dir", runs_dir())
        path = QFileDialog.getExistingDirectory(self, caption, start)
        if path:
            self.settings.setValue("runs_parent_dir", str(Path(path).parent))
        return path

    def open_run(self, path: str) -> None:
        """Show a run directory's curves (with those of the runs it continued or resumed) and
        samples, and keep reading it while it grows."""
        from engine.runlog import RunFollower, history, read_run

        self._show_request += 1
        request = self._show_request

        def read() -> Any:
            run = read_run(path)
            return run, history(run)

        def done(read_back: Any) -> None:
            if request != self._show_request or self._holds_a_run():
                return  # a run started, or another folder or checkpoint asked for, since
            run, records = read_back
            self._shutdown_worker()
            self.run_info = None  # the window shows this run now, not the one it trained
            if isinstance(self.corpus, AbsentText):  # the text of a model gone with it: Start's again
                self.load_corpus(self.corpus_path or None)
            self.store.clear()
            self.plots.reset()
            self.samples.clear()
            self.store.extend(records)
            self._follower = RunFollower(path)
            self._written_at, self._said_quiet = time.monotonic(), False
            self._viewed_config = run.config
            self._follow_timer.start()
            self._poll_run()  # (which stops the timer if the folder cannot be read)
            self.plots.set_vocabulary(self._viewed_setting("model", "vocab_size") or None)
            configs = _configs(run.config)
            preset = preset_of(configs[0]) if configs is not None else None
            # the panel describes the run in view, as for a loaded one, when Start can train
            # its like: a model of no preset would be described, and another trained
            if configs is not None and preset is not None:
                self.panel.show_configs(*configs)
            self._set_state(f"viewing {Path(path).name}")
            self._remember_run(Path(path))
            self._update_status()
            if configs is not None and preset is None:  # else nothing says what it was
                m = configs[0]  # (short: the status bar leaves room for some 60 characters)
                self.statusBar().showMessage(
                    f"A model of no preset: {plural(m.n_layers, 'layer')} × {m.d_model}, "
                    f"{plural(m.n_heads, 'head')}, context {m.context}",
                    15_000,
                )
            # loading its checkpoint is how a viewed run trains on (unless why it cannot be read is said)
            elif self._follow_timer.isActive() and self._viewed_checkpoint():
                keys = self.load_action.shortcut().toString()
                hint = f"To sample from it or train it on: Load checkpoint… ({keys})"
                self.statusBar().showMessage(hint, 15_000)

        def failed(message: str, _details: str) -> None:
            if request == self._show_request:
                self._message(QMessageBox.Icon.Warning, "Cannot open this run", message)

        run_in_background(read, done, failed)

    def recent_runs(self) -> list[Path]:
        """The run folders trained or opened here lately, newest first, that still hold a run."""
        value = self.settings.value("recent_runs", [])
        # a list of one comes back from an INI file as a bare string
        paths = (
            [value] if isinstance(value, str) else [str(p) for p in value] if isinstance(value, list) else []
        )
        return [Path(p) for p in paths if p and (Path(p) / "config.json").is_file()]

    def _remember_run(self, folder: Path) -> None:
        if not (folder / "config.json").is_file():
            return  # nothing was trained in it: it is gone, or going
        runs = [folder.resolve(), *(p for p in self.recent_runs() if p.resolve() != folder.resolve())]
        self.settings.setValue("recent_runs", [str(p) for p in runs[:RECENT_RUNS]])

    @Slot()
    def _fill_recent_menu(self) -> None:
        """File → Recent runs: a run of an earlier session back in two clicks, by its folder."""
        self.recent_menu.clear()
        runs = self.recent_runs()
        for folder in runs:
            action = self.recent_menu.addAction(folder.name.replace("&", "&&"))  # no shortcut letter
            action.setToolTip(str(folder))
            action.setEnabled(not self._holds_a_run())  # a run on keeps the window until it stops
            action.triggered.connect(lambda _checked=False, f=folder: self.open_run(str(f)))
        if not runs:
            self.recent_menu.addAction("No runs yet").setEnabled(False)

    def shown_run_dir(self) -> Path:
        """The folder of the run in the window (viewed, training or loaded; it may be gone since),
        else of all runs."""
        if self._follower is not None:
            return self._follower.run_dir
        info = self.run_info
        if info is not None:
            # Until the model trains here, its new folder holds nothing of it (and goes away if
            # nothing is trained), while the folder it was loaded or continued from holds it all.
            trained = self.store.last_iteration > info.iteration
            if trained and info.run_dir is not None:
                return info.run_dir
            if not trained and info.came_from is not None:
                return info.came_from
            if info.run_dir is not None and info.run_dir.is_dir():  # (a new run's, before its first step)
                return info.run_dir
        return runs_dir()

    @Slot()
    def show_run_folder(self) -> None:
        """Open the run's folder in the desktop's file manager: under a hidden folder
        (~/.local/share), it is hard to find by hand."""
        folder = self.shown_run_dir()
        if folder == runs_dir():
            try:
                folder.mkdir(parents=True, exist_ok=True)  # runs/ before the first run
            except OSError as e:
                self._message(
                    QMessageBox.Icon.Warning,
                    "Run folder",
                    f"Cannot create the folder for runs, {folder}: {e.strerror or e}",
                )
                return
        elif not folder.is_dir():  # moved or deleted since: not to be made anew, empty
            self._message(QMessageBox.Icon.Information, "Run folder", f"The run folder {folder} is gone.")
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            said = f"Runs are kept in {folder}" if folder == runs_dir() else f"The run folder is {folder}"
            self._message(QMessageBox.Icon.Information, "Run folder", said)

    @Slot()
    def choose_comparison(self) -> None:
        path = self._ask_run_folder("Compare with the run in…")
        if path:
            self.compare_with(path)

    def compare_with(self, path: str) -> None:
        """Draw a run folder's smoothed loss (as far back as it continued or resumed) under
        the loss of the run in the window, whatever that one is doing."""
        from engine.runlog import history, read_run

        shown = self.shown_run_dir()  # (a loaded checkpoint's: the folder it came from)
        if shown != runs_dir() and Path(path).resolve() == shown.resolve():  # itself, a second curve
            message = f"{Path(path).name} is the run in the window; choose another run to compare with"
            self._message(QMessageBox.Icon.Information, "Nothing to compare", message)
            return

        def read() -> tuple[str, MetricsStore, dict[str, Any]]:
            run = read_run(path)  # a folder that is not a run: say so, rather than compare with nothing
            store = MetricsStore()
            store.extend(history(run))
            corpus = run.config.get("corpus")
            return _run_label(run.config, Path(path).name), store, corpus if isinstance(corpus, dict) else {}

        def done(read_back: tuple[str, MetricsStore, dict[str, Any]]) -> None:
            label, store, corpus = read_back
            if not len(store):
                message = f"{Path(path).name} has no iterations yet; choose a run that has trained"
                self._message(QMessageBox.Icon.Information, "Nothing to compare", message)
                return
            mine = self._shown_corpus_sha()
            if self.statusBar().currentMessage().endswith(OTHER_SCALE):
                self.statusBar().clearMessage()  # of the comparison this one replaces
            if mine and corpus.get("sha256") and corpus["sha256"] != mine:
                # a loss is in nats per character of its own text: two texts' do not line up
                label += " · another text"
                self.statusBar().showMessage(
                    f"{Path(path).name} is of another text ({corpus.get('name', '?')}): {OTHER_SCALE}", 15_000
                )
            self.plots.set_reference(label, store)
            self.clear_compare_action.setEnabled(True)

        def failed(message: str, _details: str) -> None:
            self._message(QMessageBox.Icon.Warning, "Cannot compare with this run", message)

        run_in_background(read, done, failed)

    def _shown_corpus_sha(self) -> str | None:
        """The sha256 of the text behind the curves in the window (a viewed run's, as recorded)."""
        if self._follower is not None:
            corpus = self._viewed_config.get("corpus")
            return corpus.get("sha256") if isinstance(corpus, dict) else None
        if self.run_info is not None:
            return self.run_info.corpus.sha256
        return self.corpus.sha256 if self.corpus is not None else None

    @Slot()
    def clear_comparison(self) -> None:
        self.plots.clear_reference()
        self.clear_compare_action.setEnabled(False)

    @Slot()
    def _poll_run(self) -> None:
        if self._follower is None:
            return
        try:
            records = self._follower.poll()
            samples = self._follower.poll_samples()  # those of a run still training too
        except Exception as e:  # the folder went away, a file it cannot read: stop following
            # (the follower stays: the run in view is still that folder's, gone or not)
            self._follow_timer.stop()
            self.statusBar().showMessage(f"Stopped following the run: {e}")  # until another says more
            return
        if records:
            self.store.extend(records)
            self._update_status()
            self._written_at = time.monotonic()
            if self._said_quiet and self.statusBar().currentMessage().startswith(QUIET):
                self.statusBar().clearMessage()  # it goes on after all (a long evaluation)
            self._said_quiet = False
        for it, text in samples:
            self.samples.add(it, text, "periodic")
        self._say_if_quiet()

    def _say_if_quiet(self) -> None:
        """Say once that a run in view stopped short of its end, if it has written nothing for a
        while: "72 % · viewing" of a run whose process was killed stayed up for good."""
        s, total = self.store, self._viewed_setting("train", "max_iters")
        if self._said_quiet or not len(s) or s.last_iteration >= total or self._follower is None:
            return
        quiet = time.monotonic() - self._written_at
        if quiet < QUIET_S:
            return
        typical = float(s.step_median.view()[-1])  # a slow run's iterations: over QUIET_S / 30
        if math.isfinite(typical) and quiet < 30 * typical:
            return
        self._said_quiet = True  # whatever it was: looked at once, not at every poll
        # stopped on purpose (Stop, Ctrl-C), it ended with its final checkpoint: nothing to say
        if not (self._follower.run_dir / CHECKPOINTS / FINAL).exists():
            self.statusBar().showMessage(
                f"{QUIET} for {format_duration(quiet)}: its training may have ended "
                f"at iteration {s.last_iteration:,} without finishing"
            )

    def _stop_following(self) -> None:
        self._follow_timer.stop()
        self._follower = None

    # -- worker signals -------------------------------------------------------------------------
    @Slot(object)
    def _on_ready(self, info: RunInfo) -> None:
        self.run_info = info
        self._said_not_learning = False
        if info.corpus is not self.corpus:  # a loaded checkpoint's text: shown, and Start's too
            self._corpus_request += 1  # a load still under way must not replace it
            self.corpus = info.corpus
            if not isinstance(info.corpus, AbsentText):  # (not a path on someone else's machine)
                self.corpus_path = str(info.corpus.path or "")  # the next launch's
            self._show_corpus()
        if info.history:
            self.store.extend(info.history)
            # the worker's setup holds the same list: as dicts, 1 KB an iteration (200 MB for a
            # long run loaded), against the store's 0.1
            info.history.clear()
        self.panel.show_configs(info.model_cfg, info.train_cfg)
        self.plots.set_vocabulary(info.model_cfg.vocab_size)
        self.panel.set_cannot_train(info.cannot_train)
        for w in info.warnings:
            self._message(QMessageBox.Icon.Warning, "Checkpoint loaded with warnings", w)
        if info.cannot_train:
            self._message(
                QMessageBox.Icon.Information,
                "Loaded to sample and export",
                "This model can generate samples and be exported here, but not train on: "
                f"{info.cannot_train}.",
            )
        self._ready_text = self._ready_message(info)
        self.statusBar().showMessage(self._ready_text, 8000)
        self._update_status()

    def _ready_message(self, info: RunInfo) -> str:
        """What the status bar says of a run just built: a new model, one loaded (finished or
        paused), or one that Continue trains on."""
        # the folder's name: its whole path did not fit beside the status fields (Show run folder)
        where = f" — run folder {info.run_dir.name}" if info.run_dir else ""
        n = f"{info.iteration:,}"
        if self.state != STARTING:  # Continue: the model in the window, trained on in a new folder
            return f"Training on from iteration {n} to {info.train_cfg.max_iters:,}{where}"
        if not self._launched_paused:
            return f"Training a new model{where}"
        # a loaded checkpoint's folder is named once it trains: until then it holds nothing
        if info.cannot_train:
            return f"Loaded at iteration {n}: to sample from and export"
        if info.iteration >= info.train_cfg.max_iters:
            return f"Loaded at iteration {n}, finished: to sample from and export, or Continue past it"
        return f"Loaded at iteration {n}, paused: Resume (F6) trains it on"

    @Slot(list)
    def _on_metrics(self, records: list[dict[str, Any]]) -> None:
        self.store.extend(records)
        if self.state == TRAINING:
            self._pace.add(time.monotonic(), self.store.last_iteration)
        self._update_status()
        self._check_learning()

    def _check_learning(self) -> None:
        """Say, once a run, when the loss has settled above what a uniform guess scores
        (engine.trainer.worse_than_a_guess)."""
        from engine.trainer import NOT_LEARNING_WINDOW, worse_than_a_guess

        info = self.run_info
        if info is None or self._said_not_learning:
            return
        if info.warnings:  # a checkpoint on another text: it may start worse than a guess, and adapt
            return
        s = self.store
        # after warmup and some time to settle, all in this run (not a loaded checkpoint's past)
        begun = s.last_iteration - max(info.train_cfg.warmup_iters, info.iteration)
        if self.state != TRAINING or begun < NOT_LEARNING_WINDOW:
            return
        mean = worse_than_a_guess(s["loss"], info.model_cfg.vocab_size)
        if mean is not None:
            chance = math.log(info.model_cfg.vocab_size)
            self._said_not_learning = True
            self._message(
                QMessageBox.Icon.Warning,
                "Not learning",
                f"Over the last {NOT_LEARNING_WINDOW} iterations the loss averaged "
                f"{mean:.3g}, above the {chance:.2f} of a uniform guess "
                f"(ln {info.model_cfg.vocab_size}): the model does worse than knowing nothing. "
                # (a short run may be over by the time this is read)
                "The learning rate is likely too high: lower it and Start again "
                "(Stop first, if the run is still going).",
            )

    @Slot(int, str, str)
    def _on_sample(self, iteration: int, text: str, origin: str) -> None:
        self.samples.add(iteration, text, origin)

    @Slot(str)
    def _on_state(self, state: str) -> None:
        ended = self.state in (TRAINING, PAUSED) and state in (FINISHED, STOPPED)
        begun = state == TRAINING and self.state != PAUSED  # (a Resume is neither)
        resumed = state == TRAINING and self.state == PAUSED
        if state != TRAINING:
            self._pace.clear()
        self._set_state(state)
        # at the start too: a run the process did not live to end (killed, a crash) is found there
        if (ended or begun) and self.run_info is not None and self.run_info.run_dir is not None:
            self._remember_run(self.run_info.run_dir)
        if ended or resumed:  # a short run ends, or a loaded one resumes, within its 8 s
            self._clear_message(self._ready_text)
        if state != TRAINING:
            self.plots.redraw()  # the final points of a run show at once, not at the next tick

    @Slot(int, str)
    def _on_nonfinite(self, iteration: int, what: str) -> None:
        self._message(
            QMessageBox.Icon.Warning,
            "Training paused",
            f"At iteration {iteration}, {what}, so training paused itself. "
            "Lower the learning rate and start again, or export the model as it was before.",
        )

    @Slot(int)
    def _on_threads(self, n: int) -> None:
        self._threads_in_force = n
        self.panel.set_threads(n)
        self.threads_label.setText(self._threads_text())

    @Slot(int, int, bool)
    def _on_threads_marked(self, iteration: int, n: int, auto: bool) -> None:
        self.plots.mark_threads(iteration, f"{'Auto: ' * auto}{plural(n, 'thread')}")

    def _threads_text(self) -> str:
        if self._follower is not None:  # a run in view trains nowhere here: no count to show
            return ""
        chosen, n = self.panel.threads.value(), self._threads_in_force
        if chosen != AUTO_THREADS:
            return plural(chosen, "thread")
        return f"auto: {plural(n, 'thread')}" if n else "auto threads"

    @Slot(str)
    def _on_warned(self, message: str) -> None:
        self.statusBar().showMessage(f"{message[:1].upper()}{message[1:]}; training goes on", 20000)

    @Slot(str)
    def _on_final_failed(self, message: str) -> None:
        self._message(
            QMessageBox.Icon.Warning,
            "Final checkpoint not saved",
            f"The run ended, but its final checkpoint was not saved: {message}\n\n"
            "The model is still here: Export checkpoint… saves it where there is room.",
        )

    @Slot(str)
    def _on_exported(self, path: str) -> None:
        self.statusBar().showMessage(f"Checkpoint exported to {_short(path)}", 15000)
        self._export_ok = True
        if self._export_wait is not None:
            self._export_wait.quit()

    @Slot(str)
    def _on_export_failed(self, message: str) -> None:
        self.statusBar().clearMessage()
        self._message(QMessageBox.Icon.Warning, "Export failed", f"The checkpoint was not saved: {message}")
        self._export_ok = False
        if self._export_wait is not None:
            self._export_wait.quit()

    @Slot(str, str)
    def _on_continue_failed(self, message: str, details: str) -> None:
        self.statusBar().clearMessage()
        self._message(
            QMessageBox.Icon.Warning,
            "Cannot train on",
            f"{message}\n\nThe model is as it was: Continue tries again, and Export checkpoint… saves it.",
            details,
        )

    @Slot(str, bool)
    def _on_sample_failed(self, message: str, unknown_characters: bool) -> None:
        elsewhere = self._model_elsewhere()
        if unknown_characters and elsewhere and self.corpus is not None:
            message += (
                f"\n\nThe model in memory was trained on {elsewhere}. {self.corpus.name}, which is "
                "open, is what Start trains a new model on."
            )
        self._message(QMessageBox.Icon.Warning, SAMPLE_REFUSED, message)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        title = self._cannot if self.run_info is None else "Training failed"
        self._message(QMessageBox.Icon.Critical, title, message, details)

    # -- status ---------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        has_model = self.run_info is not None and self.handle is not None and self.handle.is_running()
        panel_state = state if state in (TRAINING, PAUSED, STOPPED, FINISHED, FAILED) else IDLE
        if state == STARTING:
            panel_state = TRAINING
        done, replaceable = self._iteration(), self._replaceable()
        self.panel.set_state(panel_state, has_model=has_model, done=done, replaceable=replaceable)
        self.samples.generate_button.setEnabled(has_model)
        self.samples.set_source(self._model_elsewhere())
        self.state_label.setText(f"<b>{html.escape(state)}</b>")  # "viewing <a folder name>"
        self._update_status()

    def _replaceable(self) -> bool:
        """A checkpoint loaded, paused, and not trained on since: another checkpoint or a run
        folder may take its place (it is all in its file), without Stop first."""
        info = self.run_info
        if info is None or self.state != PAUSED or not self._launched_paused:
            return False
        return self.store.last_iteration <= info.iteration

    def _holds_a_run(self) -> bool:
        """A run is on, whose text and model are its own until it stops."""
        return self.state in BUSY and not self._replaceable()

    def _iteration(self) -> int:
        """The iteration of the model in the window: the curves' last, or where a checkpoint
        without curves (one exported out of its run folder) stood."""
        return max(self.store.last_iteration, self.run_info.iteration if self.run_info else 0)

    def _viewed_setting(self, section: str, key: str) -> int:
        """A whole-number setting of the viewed run's config.json (0 if none is viewed, or if it
        does not hold it)."""
        if self._follower is None:
            return 0
        part = self._viewed_config.get(section)
        return _number(part.get(key), 0) if isinstance(part, dict) else 0

    def _update_status(self) -> None:
        s = self.store
        total = (
            self.run_info.train_cfg.max_iters if self.run_info else self._viewed_setting("train", "max_iters")
        )
        done = self._iteration()
        self.iter_label.setText(f"iter {done:,} / {total:,}" if total else f"iter {done:,}")
        step = s.median_recent("step_s")
        tokens = s.median_recent("tokens_s")
        pace = self._pace.seconds_per_iteration()  # evaluations and all; the step alone at first
        per_iteration = pace if math.isfinite(pace) else step
        if self.state == TRAINING and total and math.isfinite(per_iteration):
            self.eta_label.setText(f"ETA {format_duration(per_iteration * max(total - done, 0))}")
        else:
            self.eta_label.setText("ETA –")
        self.speed_label.setText(f"{tokens:,.0f} tok/s" if math.isfinite(tokens) else "– tok/s")
        self.step_label.setText(f"{1e3 * step:.1f} ms/iter" if math.isfinite(step) else "– ms/iter")
        self.threads_label.setText(self._threads_text())
        # in thousandths, not iterations: a run's total may pass what a progress bar holds (2**31)
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000 * min(done, total) // total if total else 0)
        # the progress where a person sees it with the window behind others: the taskbar
        progress = f"{100 * min(done, total) // total} % · " if total else ""
        title = APP_NAME if self.state == IDLE else f"{progress}{self.state} — {APP_NAME}"
        if title != self.windowTitle():
            self.setWindowTitle(title)

    def _message(self, icon: QMessageBox.Icon, title: str, text: str, details: str = "") -> QMessageBox:
        """A non-blocking message box (details collapsible); the window stays usable behind it."""
        box = message_box(self, icon, title, text, details)
        self._track(box)
        box.open()
        return box

    def _track(self, box: QMessageBox) -> None:
        """Keep ``box`` in ``messages()`` until it closes."""
        box.finished.connect(lambda _r, b=box: self._dialogs.remove(b) if b in self._dialogs else None)
        self._dialogs.append(box)

    def messages(self) -> list[QMessageBox]:
        """The message boxes now open (tests and the screenshot command read them)."""
        return [b for b in self._dialogs if b.isVisible()]

    # -- help -----------------------------------------------------------------------------------
    @Slot()
    def guide(self) -> None:
        """What each curve means, for a student or a teacher in front of the window (one such
        window: F1 again brings it to the front)."""
        for open_box in self.messages():
            if open_box.windowTitle() == GUIDE_TITLE:
                open_box.raise_()
                open_box.activateWindow()
                return
        box = QMessageBox(QMessageBox.Icon.NoIcon, GUIDE_TITLE, GUIDE, QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setModal(False)
        self._track(box)
        box.show()

    @Slot()
    def about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}", about_text())

    # -- closing --------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        # A checkpoint or folder still being read is shown nowhere now: landing while the
        # question below is up, it replaced the model about to be exported.
        self._show_request += 1
        done = self.store.last_iteration
        # a model loaded and not trained since is in its checkpoint already: nothing to ask
        trained = self.run_info is not None and done > self.run_info.iteration
        if self.confirm_close and self.state in (TRAINING, PAUSED) and self.handle is not None and trained:
            answer = self.ask_before_closing(done)
            if answer == QMessageBox.StandardButton.Cancel:
                event.ignore()
                return
            if answer == QMessageBox.StandardButton.Save and not self._export_before_close():
                event.ignore()
                return
        self._stop_following()
        self._shutdown_worker()  # a run cut short keeps its final checkpoint: worth a Recent entry
        if self.run_info is not None and self.run_info.run_dir is not None:
            self._remember_run(self.run_info.run_dir)  # (a folder nothing was trained in is gone)
        wait_for_background()
        self.save_settings()
        event.accept()

    def ask_before_closing(self, done: int) -> QMessageBox.StandardButton:
        """Save (export first), Discard (close) or Cancel, for a model still training. The
        buttons say what they do: "Discard" read as if it deleted the run, which its folder keeps."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Export before closing?",
            f"The model is {self.state} at iteration {done:,}. Its run folder keeps it as "
            "final.safetensors; export a checkpoint elsewhere before closing?",
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.button(QMessageBox.StandardButton.Save).setText("Export…")
        box.button(QMessageBox.StandardButton.Discard).setText("Close without exporting")
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        return QMessageBox.StandardButton(box.exec())

    def _export_before_close(self) -> bool:
        """Export and wait for the result; False if the person gave up or it failed."""
        handle = self.handle
        path, _, named_at = self._ask_export_path()  # the whole state: this is to keep the run
        if not path or handle is None or self.handle is not handle:  # the run went while asking
            return False
        # The answer comes through _on_exported / _on_export_failed, on this thread, after the
        # failure's message box is up. (A callback connected to the worker's signal ran on the
        # worker's thread, could quit the loop before it ran, and raced the message box.)
        self._export_wait = loop = QEventLoop()
        self._export_ok = False
        self.handle.worker.export(path, named_at=named_at)
        loop.exec()
        self._export_wait = None
        return self._export_ok

    def _shutdown_worker(self) -> None:
        """Stop the worker at its next iteration boundary and join its thread."""
        if self.handle is not None:
            self.handle.shutdown()
            self.handle = None


def message_box(
    parent: QWidget, icon: QMessageBox.Icon, title: str, text: str, details: str = ""
) -> QMessageBox:
    """A message box for ``text`` as it is written (messages name files, and "<draft>.txt" is
    no tag), with ``details`` collapsible in a box wide enough to read a traceback.

    The box is left to size and wrap its text itself: a minimum width set on the text's label
    kept QMessageBox from wrapping it on a screen wider than 1024 pixels, and cut the message
    off at the right edge, where it says what to do."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    if details:
        box.setDetailedText(details)
        box.setStyleSheet("QTextEdit { min-width: 640px; min-height: 260px; }")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    return box


GUIDE_TITLE = "Reading the plots"
GUIDE = """
<h3>Reading the plots</h3>
<p><b>loss</b>: how surprised the model is by the next character, on average (in nats: the
negative log of the probability it gave the right one). Each iteration's, faint, is noisy, as
each sees another batch; the smoothed curve averages the iterations around each. The dashed
<i>uniform guess</i> line is the loss of giving every character of the text the same chance:
a new model starts there, and how far below it the curve goes is what it has learned. The
orange dots are the <b>validation</b> loss, on text kept out of training: while they fall
with the curve, the model learns the text's ways; if they rise while it falls, it learns
the training text by heart.</p>
<p><b>step time</b>: how long each iteration takes, and the median of the last 25. A dashed line
marks where the number of threads changed. Spikes are a checkpoint or a sample being
written, or the window repainting while the engine waited.</p>
<p><b>arena</b>: the memory the engine's per-iteration buffers use (in use) and hold (reserved),
and on the right axis the resident memory of the whole training process (RSS).</p>
<p>A purple curve is the smoothed loss of another run (View → Compare with run…). The line
under the plots gives the newest values as training goes, or those under the mouse. Drag or
scroll to look closer; Follow newest (Ctrl+F) returns. <b>Temperature</b> below 1 makes
samples safer, above 1 wilder; <b>top-k</b> samples only among the k likeliest characters.</p>
"""


def about_text() -> str:
    info = blas_info()
    return (
        f"<h3>{APP_NAME} {engine.__version__}</h3>"
        "<p>Train small character-level GPTs on your own machine and watch them learn, live.</p>"
        f"<p>Python {platform.python_version()}<br>NumPy {np.__version__}<br>"
        f"Qt {qVersion()} (PySide6 {PySide6.__version__})<br>pyqtgraph {pg.__version__}<br>"
        f"BLAS: {html.escape(info.describe_threads())}</p>"
    )


def _history_beside(checkpoint: Path, trainer: Trainer) -> list[dict[str, Any]]:
    """The metrics behind a checkpoint, up to its iteration, across the runs it continued or
    resumed: from the run folder it sits in, else from the one it recorded it trained in (a
    copy exported elsewhere), if that folder's run led to it (not one it was copied into)."""
    from engine.checkpoint import run_folders
    from engine.runlog import first_that_led_to, history

    try:  # history is a nicety; the checkpoint loaded fine without it
        m, t = trainer.model_cfg, trainer.train_cfg
        run = first_that_led_to(run_folders(checkpoint), m.to_dict(), t.seed, trainer.iteration)
        return history(run, trainer.iteration) if run is not None else []
    except Exception:
        return []


def _number(value: Any, default: N) -> N:
    """A setting read back as the type of ``default``, if it is a finite one; else ``default``."""
    try:
        number = type(default)(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


def _short(path: str | Path) -> str:
    """A path for the status bar: the home folder as ~, which leaves room for the rest."""
    p, home = Path(path), Path.home()
    return f"~/{p.relative_to(home)}" if p.is_relative_to(home) else str(p)


def _session_in_new_folder(trainer: Trainer, base: Path, **config: Any) -> TrainingSession:
    """A session of ``trainer`` writing a new run folder under ``base``, named by its preset;
    ``config`` joins its config.json. Built on the worker thread (it makes the folder)."""
    from engine.runlog import new_run_dir
    from engine.session import TrainingSession

    run_dir = new_run_dir(base, preset_of(trainer.model_cfg))
    every = trainer.train_cfg.checkpoint_interval
    return TrainingSession(trainer, run_dir, checkpoint_every=every, extra_config={**config, "by": APP_NAME})


def _configs(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig] | None:
    """The model and training settings a run folder's config.json records; None if it does not
    hold both whole (a run from another version, or a config written by hand)."""
    try:
        model, train = config["model"], config["train"]
        if set(model) != set(ModelConfig.__dataclass_fields__) or set(train) != set(
            TrainConfig.__dataclass_fields__
        ):
            return None  # settings it lacks would show as the defaults, as if they were its own
        return ModelConfig(**model), TrainConfig(**train)
    except (KeyError, TypeError, ValueError):
        return None


def _run_label(config: dict[str, Any], folder: str) -> str:
    """A run in a legend: its preset (by its model's shape, if it is one's) and its folder."""
    try:
        name = preset_of(ModelConfig(**config["model"]))
    except (KeyError, TypeError, ValueError):
        name = None
    return f"{name} · {folder}" if name and not folder.endswith(f"_{name}") else folder
