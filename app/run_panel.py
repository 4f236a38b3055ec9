"""The run controls: preset, corpus, settings, threads and the Start/Pause/Stop/Export/Load buttons."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal, Slot
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.worker import AUTO_THREADS, FINISHED, IDLE, PAUSED, STOPPED, TRAINING
from engine.blas import cpu_count
from engine.config import (
    MAX_BATCH_SIZE,
    MAX_ITERS,
    MAX_SEED,
    PRESETS,
    ModelConfig,
    TrainConfig,
    format_bytes,
    format_count,
    plural,
    preset_of,
)
from engine.memory import memory_for_training, memory_needed

DEFAULT_VOCAB = 65  # parameter counts before a corpus is known


class ScientificSpinBox(QDoubleSpinBox):
    """A spin box that shows and reads numbers like 3e-3: learning rates span decades."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        # The value is taken at Enter or on leaving the field, not at every keystroke: typing
        # "1e-9" went through "1", which stayed when 1e-9 itself was out of range.
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        try:
            value = float(text)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        ok = self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def fixup(self, text: str) -> str:
        """A number out of range becomes the nearest bound: 20 is 10, 1e-9 is 1e-07."""
        try:
            value = float(text)
        except ValueError:
            return text
        return self.textFromValue(min(max(value, self.minimum()), self.maximum()))

    def stepBy(self, steps: int) -> None:
        # One step multiplies or divides by 2: a linear step makes no sense across decades.
        self.setValue(self.value() * 2.0**steps)


class RunPanel(QWidget):
    start_clicked = Signal()
    pause_toggled = Signal(bool)  # True: pause, False: resume
    continue_clicked = Signal()  # train a finished or stopped model on to the Iterations total
    stop_clicked = Signal()
    export_clicked = Signal()
    load_clicked = Signal()
    open_corpus_clicked = Signal()
    threads_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vocab = DEFAULT_VOCAB
        self._state = IDLE
        self._has_model = False
        self._done = 0  # the iteration the model has reached
        self._corpus: tuple[str, int, int] | None = None  # name, characters, vocabulary; None: none yet
        self._held: tuple[Any, ...] | None = None  # the held model's settings, as shown
        self._cannot_train = ""  # why the held model may only sample and export ("": it trains)
        self._replaceable = False  # see set_state

        self.preset = QComboBox()
        for i, (name, preset) in enumerate(PRESETS.items()):
            self.preset.addItem(name, name)
            self.preset.setItemData(i, preset.description, Qt.ItemDataRole.ToolTipRole)
        self.preset.setToolTip("Model size; choosing one fills in its training settings")
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)

        self.corpus_label = QLabel("loading the built-in corpus…")
        self.corpus_label.setWordWrap(True)
        # a name on one line or two, its figures on one or two: room for four, so that a text
        # with a shorter name does not move the controls below
        self.corpus_label.setMinimumHeight(4 * self.corpus_label.fontMetrics().lineSpacing())
        self.open_corpus = QPushButton("Open…")
        self.open_corpus.setToolTip(
            "Train on a text file of your own, UTF-8 or UTF-16 (Ctrl+O)\n"
            "or drop one on the window; File → Use the built-in corpus goes back"
        )

        self.batch = QSpinBox()
        self.batch.setRange(1, MAX_BATCH_SIZE)
        self.iters = QSpinBox()
        self.iters.setRange(1, MAX_ITERS)
        self.iters.setSingleStep(100)
        self.lr = ScientificSpinBox()
        self.lr.setRange(1e-7, 10.0)
        self.seed = QSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed.setValue(TrainConfig().seed)  # a preset leaves it be: it is the person's
        self.batch.setToolTip(
            "Text windows per iteration: more smooths the gradient,\nand costs memory and time per iteration"
        )
        self.iters.setToolTip("Optimizer steps in all; after the last, raise it and Continue to train on")
        self.lr.setToolTip(
            "The peak learning rate, reached after a warmup;\n"
            "it then falls along a cosine to a tenth of it.\n"
            "Type it as 3e-3 or 0.003; the arrows double or halve it"
        )
        self.seed.setToolTip("The same seed and settings train the same model again")
        self.threads = QSpinBox()
        self.threads.setRange(AUTO_THREADS, cpu_count())
        self.threads.setSpecialValueText("Auto")  # shown for AUTO_THREADS
        self.threads.setToolTip(
            "BLAS threads; a change applies from the next iteration.\n"
            "Auto times the first iterations at each count and keeps the fastest."
        )
        self.blas_label = QLabel()
        self.blas_label.setWordWrap(True)

        self.start = QPushButton("Start")
        self.pause = QPushButton("Pause")
        self.pause.setCheckable(True)
        self.stop = QPushButton("Stop")
        self.export = QPushButton("Export checkpoint…")
        self.load = QPushButton("Load checkpoint…")

        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        form.addRow("Preset", self.preset)
        form.addRow(self.model_label)

        corpus_box = QGroupBox("Corpus")
        row = QHBoxLayout(corpus_box)
        row.addWidget(self.corpus_label, 1)
        row.addWidget(self.open_corpus)

        train_box = QGroupBox("Training")
        form = QFormLayout(train_box)
        form.addRow("Batch size", self.batch)
        form.addRow("Iterations", self.iters)
        form.addRow("Learning rate", self.lr)
        form.addRow("Seed", self.seed)
        form.addRow("BLAS threads", self.threads)
        form.addRow(self.blas_label)

        buttons = QGridLayout()
        buttons.addWidget(self.start, 0, 0)
        buttons.addWidget(self.pause, 0, 1)
        buttons.addWidget(self.stop, 0, 2)
        buttons.addWidget(self.export, 1, 0, 1, 3)
        buttons.addWidget(self.load, 2, 0, 1, 3)

        settings = QWidget()
        column = QVBoxLayout(settings)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(model_box)
        column.addWidget(corpus_box)
        column.addWidget(train_box)
        # On a short screen (1024 x 600, or 768 pixels at 150 %) the settings scroll, rather than
        # squeeze their spin boxes until the numbers are cut off; the buttons stay in view below.
        self.settings_scroll = _SettingsScroll(settings)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.settings_scroll)
        layout.addLayout(buttons)
        layout.addStretch(1)  # room to spare goes below the buttons, not between them and the rest

        self.preset.currentIndexChanged.connect(self._on_preset)
        self.threads.valueChanged.connect(self.threads_changed)
        # Continue needs Iterations past done and every other setting as the model has it
        for spin in (self.iters, self.batch, self.lr, self.seed):
            spin.valueChanged.connect(self._update_enabled)
        self.batch.valueChanged.connect(self._show_model)  # the memory training takes
        self.start.clicked.connect(self.start_clicked)
        self.pause.toggled.connect(self._on_pause)
        self.stop.clicked.connect(self.stop_clicked)
        self.export.clicked.connect(self.export_clicked)
        self.load.clicked.connect(self.load_clicked)
        self.open_corpus.clicked.connect(self.open_corpus_clicked)
        self._show_entries()
        self._on_preset()
        self.set_state(IDLE, has_model=False)

    # -- model -> view ------------------------------------------------------------------------
    def preset_name(self) -> str:
        return str(self.preset.currentData())

    def set_preset(self, name: str) -> None:
        i = self.preset.findData(name)
        if i >= 0:
            self.preset.setCurrentIndex(i)

    def set_corpus(
        self,
        name: str | None,
        characters: int = 0,
        vocab: int = 0,
        *,
        here: bool = True,
        alphabet: Sequence[str] = (),
    ) -> None:
        """Show the corpus and recount every preset's parameters. None: none usable yet; not
        ``here``: the text of a loaded model, which is not on this machine to train on;
        ``alphabet``: its characters, listed in the tooltip (what a prompt may use)."""
        self._corpus = (name, characters, vocab) if name is not None and here else None
        if name is None:
            self.corpus_label.setText("no corpus: open a text file")
            self.corpus_label.setToolTip("")
        else:
            self._vocab = vocab
            figures = f"{characters:,} characters" if here else "not on this machine"
            figures = _phrases(figures, f"vocabulary {vocab}")
            self.corpus_label.setText(f"<b>{breakable(name)}</b><br>{figures}")
            # whole, where the label breaks it, and what a prompt may be written in
            self.corpus_label.setToolTip(name + (f"\n\n{describe_alphabet(alphabet)}" if alphabet else ""))
        self._show_model()
        self._update_enabled()

    def set_blas(self, text: str) -> None:
        self.blas_label.setText(text)

    def set_threads(self, n: int) -> None:
        if self.threads.value() == AUTO_THREADS:
            return  # the count Auto chose is shown in the status bar; the choice stays Auto
        self.threads.blockSignals(True)  # model -> view: no echo back to the worker
        self.threads.setValue(n)
        self.threads.blockSignals(False)

    def set_state(self, state: str, *, has_model: bool, done: int = 0, replaceable: bool = False) -> None:
        """Enable what makes sense in ``state``; ``has_model``: a model exists to export or
        sample; ``done``: the iteration it has reached; ``replaceable``: a paused model that was
        loaded and not trained on since, which another checkpoint may replace.

        The middle button pauses a run, resumes a paused one, and continues a finished or
        stopped one to the Iterations total once that is raised past ``done``."""
        self._state, self._has_model, self._done = state, has_model, done
        self._replaceable = replaceable
        self.pause.blockSignals(True)
        self.pause.setChecked(state == PAUSED)
        self.pause.blockSignals(False)
        if self._can_continue_state():
            self.pause.setText("Continue")
        else:
            self.pause.setText("Resume" if state == PAUSED else "Pause")
        self._update_enabled()

    def show_configs(self, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
        """Show a loaded run's settings (its preset when the model matches one)."""
        name = preset_of(model_cfg)
        if name is not None:
            self.preset.blockSignals(True)
            self.set_preset(name)
            self.preset.blockSignals(False)
        # within the fields' ranges: a checkpoint written before the limits (engine.config
        # LIMITS) may hold more, which a 32-bit spin box refuses with an OverflowError
        t = train_cfg
        for field, value in ((self.batch, t.batch_size), (self.iters, t.max_iters), (self.seed, t.seed)):
            field.setValue(min(value, field.maximum()))
        self.lr.setValue(train_cfg.lr)
        # the list counts parameters at the run's vocabulary too: the corpus's disagreed with this
        self._show_entries(model_cfg.vocab_size)
        self.model_label.setText(_describe_model(model_cfg, train_cfg))
        self._held = self._settings()
        self._update_enabled()

    def set_cannot_train(self, reason: str) -> None:
        """The held model cannot train here (``reason``), only sample and export: no Resume or
        Continue. "" lifts it."""
        self._cannot_train = reason
        self._update_enabled()

    def _settings(self) -> tuple[Any, ...]:
        """What Continue would have to change to follow the controls: all but Iterations."""
        return (self.preset_name(), self.batch.value(), self.lr.value(), self.seed.value(), self._corpus)

    # -- view -> model ------------------------------------------------------------------------
    def configs(self, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
        """The model and training configuration the controls describe."""
        p = PRESETS[self.preset_name()]
        train = p.train_with(
            batch_size=self.batch.value(),
            max_iters=self.iters.value(),
            lr=self.lr.value(),
            seed=self.seed.value(),
        )
        return p.model_for(vocab_size), train

    def commit_typing(self) -> None:
        """Take a learning rate still being typed: it counts at Enter or on leaving the field,
        and a shortcut (F5, F6) does neither."""
        self.lr.interpretText()

    @Slot()
    def _on_preset(self) -> None:
        t = PRESETS[self.preset_name()].train
        self.batch.setValue(t.batch_size)
        self.iters.setValue(t.max_iters)
        self.lr.setValue(t.lr)  # the seed stays: it is the person's, not the model's
        self._show_model()
        self._update_enabled()

    def _show_entries(self, vocab: int | None = None) -> None:
        """Every preset's entry, with its parameter count at ``vocab`` (None: the corpus's)."""
        for i in range(self.preset.count()):
            self.preset.setItemText(i, PRESETS[self.preset.itemData(i)].summary(vocab or self._vocab))

    def _show_model(self) -> None:
        """The chosen model's description, and the memory training it at this batch takes."""
        self._show_entries()  # counted as the line below is, if a shown run's had been there
        self.model_label.setText(_describe_model(*self.configs(self._vocab)))

    @Slot(bool)
    def _on_pause(self, paused: bool) -> None:
        if self._can_continue_state():
            self.pause.blockSignals(True)
            self.pause.setChecked(False)  # a click, not a toggle, in this role
            self.pause.blockSignals(False)
            self.continue_clicked.emit()
            return
        self.pause.setText("Resume" if paused else "Pause")
        self.pause_toggled.emit(paused)

    def continue_blocker(self) -> str:
        """Why Continue is off for a model that could go on ("" if it is on, or cannot be)."""
        if not self._can_continue_state() or self._cannot_train or self._held is None:
            return ""
        if self.iters.value() <= self._done:
            return f"Raise Iterations above {self._done:,} to continue this model."
        names = ("the preset", "the batch size", "the learning rate", "the seed", "the corpus")
        changed = [n for n, now, held in zip(names, self._settings(), self._held, strict=True) if now != held]
        if changed:
            what = ", ".join(changed[:-1]) + (" and " if len(changed) > 1 else "") + changed[-1]
            return f"Continue keeps the model's own settings: {what} changed since. Set back, or Start anew."
        return ""

    def _can_continue_state(self) -> bool:
        return self._state in (FINISHED, STOPPED) and self._has_model

    def _can_continue(self) -> bool:
        """Continue trains the held model on with its own settings; other settings are for Start."""
        return (
            self._can_continue_state()
            and not self._cannot_train
            and self.iters.value() > self._done
            and self._settings() == self._held
        )

    @Slot()
    def _update_enabled(self) -> None:
        running = self._state in (TRAINING, PAUSED)
        for w in (self.preset, self.batch, self.iters, self.lr, self.seed, self.open_corpus):
            w.setEnabled(not running)
        self.start.setEnabled(not running and self._corpus is not None)
        self.pause.setEnabled((running and not self._cannot_train) or self._can_continue())
        blocker = self.continue_blocker()
        self.pause.setToolTip(PAUSE_TIP + (f"\n\n{blocker}" if blocker else ""))
        self.stop.setEnabled(running)
        self.export.setEnabled(self._has_model and self._state != IDLE)
        held = running and not self._replaceable
        self.load.setEnabled(not held)
        # why it is off, where a person looks: the window holds one run at a time
        self.load.setToolTip(LOAD_TIP + ("\n\nStop the run in the window first" if held else ""))


LOAD_TIP = "Load checkpoint… (Ctrl+L): a saved model, with its settings, text and curves"
PAUSE_TIP = (
    "Pause or resume (F6). After the last iteration or Stop: raise Iterations, then Continue\n"
    "trains the same model on, with its own settings and corpus (to change those, Start anew)"
)


def _describe_model(m: ModelConfig, train: TrainConfig) -> str:
    """Its size, its shape, and the memory training it takes (which the batch size sets)."""
    # two lines of two phrases: one of four wrapped in a narrow panel for some presets and not
    # others, and every control below moved under the pointer when the preset changed
    shape = (
        _phrases(f"{plural(m.n_layers, 'layer')} × {m.d_model}", plural(m.n_heads, "head"))
        + "<br>"
        + _phrases(f"MLP {m.d_ff}", f"context {m.context}")
    )
    need, room = memory_needed(m, train), memory_for_training()
    memory = _phrases(f"about {format_bytes(need)} to train", f"at batch {train.batch_size:,}", sep=" ")
    if need > room:  # Start would be refused: say so before
        # two phrases, so that a narrow panel wraps the line rather than cut it off
        spare = _phrases(f"more than the {format_bytes(room)}", "this machine can spare", sep=" ")
        memory += f"<br><b>{spare}</b>"
    return f"{m.n_params:,} parameters ({format_count(m.n_params)})<br>{shape}<br>{memory}"


def breakable(name: str) -> str:
    """A file name as rich text that can wrap: after _ - . / and inside long unbroken runs.
    Unbreakable, "shakespeare_complete_works.txt" was cut off at the panel's edge, and the
    lines under it with it."""
    text = re.sub(r"([_\-./\\])", "\\1\N{ZERO WIDTH SPACE}", name)
    text = re.sub(r"(\w{16})(?=\w)", "\\1\N{ZERO WIDTH SPACE}", text)
    return html.escape(text)  # a name may hold < or &


def _phrases(*phrases: str, sep: str = ", ") -> str:
    """Rich text that wraps between phrases, never inside one ("context / 32")."""
    return sep.join(p.replace(" ", "\N{NO-BREAK SPACE}") for p in phrases)


class _SettingsScroll(QScrollArea):
    """Scrolls the panel's settings when the window is too short for them, and takes no more
    height than they need otherwise (a scroll area's own size hint stops at 24 lines of text)."""

    def __init__(self, settings: QWidget) -> None:
        super().__init__()
        self.setWidget(settings)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Tab goes to its controls, not to it
        settings.installEventFilter(self)

    def sizeHint(self) -> QSize:
        settings = self.widget()
        return settings.sizeHint() if settings is not None else super().sizeHint()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:  # a description one line longer, say
            self.updateGeometry()
        return False


ALPHABET_SHOWN = 400  # characters in the tooltip: a text in Chinese has thousands


def describe_alphabet(chars: Sequence[str]) -> str:
    """The characters of a vocabulary as a person can read them, in lines of 40: a space, a line
    break, a tab, a mark that combines with the one before it, and the invisible ones, named."""
    names = {" ": "␣", "\n": "⏎", "\t": "⇥"}

    def shown(ch: str) -> str:
        kind = unicodedata.category(ch)
        if ch in names:
            return names[ch]
        if kind.startswith("M"):
            return f"◌{ch}"
        if kind[0] in "CZ":
            return f"[U+{ord(ch):04X}]"
        return ch

    listed = [shown(ch) for ch in chars[:ALPHABET_SHOWN]]
    lines = ["".join(listed[i : i + 40]) for i in range(0, len(listed), 40)]
    more = len(chars) - ALPHABET_SHOWN
    if more > 0:
        lines.append(f"… and {more:,} more")
    return f"Its {len(chars):,} characters (␣ a space, ⏎ a line break):\n" + "\n".join(lines)
