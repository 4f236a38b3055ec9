"""The window, driven through its widgets as a person would (pytest-qt, offscreen)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import safetensors.numpy
from PySide6.QtCore import (
    QByteArray,
    QEvent,
    QKeyCombination,
    QMimeData,
    QPoint,
    QPointF,
    QSettings,
    Qt,
    QUrl,
)
from PySide6.QtGui import QDesktopServices, QDropEvent, QImage, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QLineEdit, QMenu, QMessageBox

from app import worker as worker_module
from app.main_window import CHECKPOINT_FILTER, DEFAULT_SIZE, WEIGHTS_FILTER, MainWindow, _short, runs_dir
from app.worker import FAILED, FINISHED, IDLE, PAUSED, STOPPED, TRAINING, RunInfo
from engine import blas, checkpoint
from engine.blas import set_blas_threads
from engine.config import PRESETS
from engine.data import Corpus
from engine.runlog import RunLog
from engine.trainer import Trainer
from tests.app.conftest import (
    answer_close_questions,
    boxes,
    last_iter,
    plotted,
    run_qt_snippet,
    tiny,
    train_then_stop,
    train_to_end,
)
from tests.conftest import fail_steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pyqtgraph")


def drop_of(mime: QMimeData) -> QDropEvent:
    left, none = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    return QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, left, none)


def train_then_pause(window, qtbot, at: int) -> None:
    """Start with the button, train to at least iteration ``at``, pause with the button."""
    qtbot.mouseClick(window.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(window) >= at, timeout=20_000)
    qtbot.mouseClick(window.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.state == PAUSED, timeout=5_000)


def test_each_preset_shows_its_parameter_count_and_fills_the_settings(make_window):
    w = make_window()
    vocab = w.corpus.vocab_size
    seen = set()
    for name, preset in PRESETS.items():
        w.panel.preset.setCurrentIndex(w.panel.preset.findData(name))
        n = preset.model_for(vocab).n_params
        assert f"{n:,} parameters" in w.panel.model_label.text()
        assert name in w.panel.preset.currentText() and "×" in w.panel.preset.currentText()
        assert w.panel.batch.value() == preset.train.batch_size
        assert w.panel.iters.value() == preset.train.max_iters
        assert w.panel.lr.value() == pytest.approx(preset.train.lr)
        index = w.panel.preset.currentIndex()
        assert w.panel.preset.itemData(index, Qt.ItemDataRole.ToolTipRole) == preset.description
        seen.add(w.panel.model_label.text())
    assert len(seen) == len(PRESETS)


def test_start_pause_hold_resume(make_window, qtbot):
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: plotted(w) >= 20, timeout=20_000)
    assert w.state == TRAINING and "training" in w.state_label.text()
    assert w.plots.chance.isVisible()  # the loss of a uniform guess over the corpus's characters
    assert w.plots.chance.value() == pytest.approx(math.log(w.corpus.vocab_size))
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=5_000)
    assert w.panel.pause.text() == "Resume"
    held, held_plotted = last_iter(w), plotted(w)
    qtbot.wait(500)  # events processed all along: nothing more may arrive while paused
    assert last_iter(w) == held and plotted(w) == held_plotted
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) > held + 5, timeout=10_000)
    assert w.state == TRAINING
    qtbot.waitUntil(lambda: plotted(w) > held_plotted, timeout=5_000)  # the plot redraws at its own pace


def assert_same_as_a_straight_run(ckpt: checkpoint.Checkpoint, corpus_file: Path) -> None:
    """The checkpoint's parameters equal, bit for bit, those of a fresh trainer taken straight
    to the checkpoint's iteration, here, with one BLAS thread."""
    set_blas_threads(1)
    trainer = Trainer(ckpt.model_cfg, ckpt.train_cfg, Corpus.from_file(corpus_file))
    while trainer.iteration < ckpt.iteration:
        trainer.step()
    for name, value in ckpt.params.items():
        np.testing.assert_array_equal(value, trainer.model.params[name], err_msg=name)


def test_export_while_training_matches_the_trainer_at_that_iteration(
    make_window, qtbot, tmp_path, corpus_file, monkeypatch
):
    w = make_window()
    tiny(w)
    target = tmp_path / "exports" / "tiny.safetensors"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 10, timeout=20_000)
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "exported" in w.statusBar().currentMessage(), timeout=10_000)
    assert w.state == TRAINING  # export did not stop anything
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    ckpt = checkpoint.load(target)
    assert ckpt.iteration >= 10
    assert_same_as_a_straight_run(ckpt, corpus_file)
    # the stopped model can still be exported; the next export suggests the same folder
    suggested: list[str] = []
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda _w, _c, start, *a: (suggested.append(start), ("", ""))[1]
    )
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    assert suggested == [str(target.parent / f"chargpt-tiny-iter{last_iter(w)}.safetensors")]
    # and Load opens where the checkpoint went
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", lambda _w, _c, start, *a: (suggested.append(start), ("", ""))[1]
    )
    qtbot.mouseClick(w.panel.load, Qt.MouseButton.LeftButton)
    assert suggested[-1] == str(target.parent)


def training_with_dialogs_in(make_window, qtbot, key: str, folder: Path) -> MainWindow:
    """A window training tiny, whose file dialog for ``key`` opens in ``folder``."""
    w = make_window()
    tiny(w)
    w.settings.setValue(key, str(folder))
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    return w


def test_an_export_under_the_suggested_name_is_named_for_the_iteration_it_holds(make_window, qtbot, tmp_path):
    """Training goes on while the name is chosen: chargpt-small-iter115 held iteration 292."""
    w = training_with_dialogs_in(make_window, qtbot, "export_dir", tmp_path)

    def slow_to_choose(_parent, _caption, start, *args):
        qtbot.wait(400)  # iterations go by
        return start, CHECKPOINT_FILTER

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QFileDialog, "getSaveFileName", slow_to_choose)
        qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "exported" in w.statusBar().currentMessage(), timeout=10_000)
    [saved] = tmp_path.glob("chargpt-tiny-iter*.safetensors")
    assert saved.name == f"chargpt-tiny-iter{checkpoint.load(saved).iteration}.safetensors"


def test_plots_saved_under_the_suggested_name_are_named_for_how_far_they_reach(make_window, qtbot, tmp_path):
    w = training_with_dialogs_in(make_window, qtbot, "plots_dir", tmp_path)
    suggested: list[str] = []

    def slow_to_choose(_parent, _caption, start, *args):
        suggested.append(Path(start).name)
        shown = last_iter(w)
        qtbot.waitUntil(lambda: last_iter(w) > shown, timeout=10_000)  # the curves go on
        return start, ""

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QFileDialog, "getSaveFileName", slow_to_choose)
        w.save_plots()
    [saved] = tmp_path.glob("*.png")
    assert saved.name != suggested[0] and saved.name.startswith("chargpt-tiny-iter")


def test_an_export_named_without_its_suffix_is_given_it(make_window, qtbot, tmp_path, monkeypatch):
    """Without it, Load's filter hid the file, and dropped on the window it opened as a text."""
    w = make_window()
    train_to_end(w, qtbot, iters=5)
    typed = tmp_path / "poems"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(typed), ""))
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    written = tmp_path / "poems.safetensors"
    qtbot.waitUntil(written.exists, timeout=10_000)
    assert not typed.exists() and checkpoint.load(written).iteration == 5
    # the dialog asked about "poems", not "poems.safetensors": that one is asked about here
    before = written.stat().st_mtime_ns
    asked: list[str] = []
    monkeypatch.setattr(
        QMessageBox, "question", lambda _w, _t, text, *a: asked.append(text) or QMessageBox.StandardButton.No
    )
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.wait(300)
    assert len(asked) == 1 and "poems.safetensors already exists" in asked[0]
    assert written.stat().st_mtime_ns == before and not boxes(w, "Export failed")


def test_export_into_a_read_only_folder_says_so_and_training_goes_on(
    make_window, qtbot, tmp_path, monkeypatch
):
    w = make_window()
    tiny(w)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / "tiny.safetensors"
    if os.access(locked, os.W_OK):  # root ignores permissions: a "folder" that is a file fails alike
        (tmp_path / "a-file").write_text("x")
        target = tmp_path / "a-file" / "tiny.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(boxes(w, "Export failed")), timeout=10_000)
    assert str(target.parent.name) in boxes(w, "Export failed")[0].text()
    at_error = last_iter(w)
    qtbot.waitUntil(lambda: last_iter(w) > at_error + 5, timeout=10_000)
    assert w.state == TRAINING and not target.exists()
    locked.chmod(0o700)


def test_the_plots_are_saved_as_an_image_from_the_menu_and_from_a_right_click(
    make_window, qtbot, tmp_path, monkeypatch
):
    w = make_window()
    train_to_end(w, qtbot, iters=30)
    # a right click on a plot offers the window's actions, and no longer pyqtgraph's menu
    popped: list[QPoint] = []
    monkeypatch.setattr(w.plots.context_menu, "popup", popped.append)
    click = SimpleNamespace(
        button=lambda: Qt.MouseButton.RightButton, accept=lambda: None, screenPos=lambda: QPointF(40, 50)
    )
    for view in [p.getViewBox() for p in w.plots.plots] + w.plots._right_views:
        view.mouseClickEvent(click)
        assert not view.menu.isVisible()
    assert popped == [QPoint(40, 50)] * 4
    assert [a.text() for a in w.plots.context_menu.actions()] == ["Save plots as &image…", "&Follow newest"]

    chosen = [str(tmp_path / "loss"), str(tmp_path / "loss.jpg")]
    suggested: list[str] = []

    def ask(_parent, _caption, start, *_):
        suggested.append(start)
        return chosen.pop(0), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", ask)
    w.panel.preset.setCurrentIndex(w.panel.preset.findData("small"))  # the next run's, not this one's
    w.save_plots_action.trigger()
    assert suggested == [str(Path.home() / "chargpt-tiny-iter30-plots.png")]  # named by its model
    png = QImage(str(tmp_path / "loss.png"))  # a name without a suffix gets .png
    assert png.width() == w.plots.canvas.width() and not png.isNull()
    assert png.height() > w.plots.canvas.height()  # with a caption line on top
    assert w._plots_caption().startswith("tiny (42K parameters) · corpus.txt · iteration 30 of 30 · ")
    assert "Saved the plots" in w.statusBar().currentMessage()
    w.save_plots_action.trigger()
    assert (tmp_path / "loss.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, as its name says
    assert suggested[1].startswith(str(tmp_path))  # the next dialog opens where the last one saved

    (tmp_path / "a-file").write_text("x")
    assert w.save_plots_image(str(tmp_path / "a-file" / "plots.png")) is None
    [box] = boxes(w, "Plots not saved")
    assert "cannot save the plots to" in box.text() and "a-file" in box.text()
    assert (tmp_path / "a-file").read_text() == "x"


def test_pause_and_resume_end_with_the_same_parameters_as_a_straight_run(
    make_window, qtbot, tmp_path, corpus_file, monkeypatch
):
    w = make_window()
    tiny(w, iters=40)
    train_then_pause(w, qtbot, at=10)
    qtbot.wait(200)
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=20_000)
    assert w.progress.value() == w.progress.maximum()  # all of it
    target = tmp_path / "end.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)  # after finishing, too
    qtbot.waitUntil(target.exists, timeout=10_000)
    ckpt = checkpoint.load(target)
    assert ckpt.iteration == 40
    assert_same_as_a_straight_run(ckpt, corpus_file)


def test_a_checkpoint_loads_in_a_fresh_window_with_its_history_and_resumes(
    make_window, qtbot, isolated_user, monkeypatch, corpus_file, tmp_path
):
    first = make_window()
    tiny(first, iters=500)
    train_then_pause(first, qtbot, at=15)
    k = last_iter(first)
    run_dir = first.run_info.run_dir
    assert run_dir is not None and run_dir.is_relative_to(isolated_user)  # never the real home
    target = run_dir / "checkpoints" / "by-hand.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(first.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(target.exists, timeout=10_000)
    first.close()

    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text(encoding="utf-8").upper(), encoding="utf-8")
    second = make_window(corpus=other)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(second.panel.load, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: second.state == PAUSED, timeout=10_000)
    assert second.panel.preset_name() == "tiny" and second.panel.iters.value() == 500
    # the text it trains on is the run's, not the one open before
    assert "corpus.txt" in second.panel.corpus_label.toolTip() and second.corpus_path == str(corpus_file)
    assert second.panel.batch.value() == 4
    assert last_iter(second) == k  # the history of the run the checkpoint sits in
    qtbot.waitUntil(lambda: plotted(second) == k, timeout=5_000)
    assert second.panel.pause.isEnabled() and second.panel.pause.text() == "Resume"
    assert "paused: Resume (F6) trains it on" in second.statusBar().currentMessage()
    qtbot.mouseClick(second.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(second) >= k + 10, timeout=20_000)
    assert second.state == TRAINING
    assert "paused" not in second.statusBar().currentMessage()  # said for 8 s, while it trained


def test_a_loaded_checkpoint_not_trained_on_gives_way_to_another_without_stop(
    make_window, qtbot, monkeypatch, tmp_path
):
    """Loaded from the middle of a run, it came up paused, and Load, Open run and drops waited
    for Stop: one loaded only to look at held the window."""
    first = make_window()
    tiny(first, iters=500)
    train_then_pause(first, qtbot, at=15)
    run = first.run_info.run_dir
    middle = tmp_path / "middle.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(middle), ""))
    qtbot.mouseClick(first.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(middle.exists, timeout=10_000)
    first.close()
    w = make_window()
    w.load_checkpoint(str(middle))
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)
    assert w.panel.load.isEnabled() and "Stop the run" not in w.panel.load.toolTip()
    w.open_run(str(run))  # another run in view, no Stop asked
    qtbot.waitUntil(lambda: w.state.startswith("viewing"), timeout=10_000)
    w.load_checkpoint(str(middle))
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)
    text = tmp_path / "other.txt"
    text.write_text("zebra quagga okapi\n" * 40, encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(text))])
    w.dropEvent(drop_of(mime))  # a text is not for it: Resume would train on the one it has
    assert "Stop the run" in w.statusBar().currentMessage()
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)  # Resume: now it trains here
    qtbot.waitUntil(lambda: last_iter(w) > w.run_info.iteration + 1, timeout=20_000)
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)
    assert not w.panel.load.isEnabled()  # what it trained would go: Stop first


def test_a_checkpoint_copied_into_another_runs_folder_loads_without_that_runs_curves(
    make_window, qtbot, monkeypatch, tmp_path
):
    """Copied into a small run's checkpoints/, a tiny model's checkpoint drew the small run's
    curves as its past, and a Continue recorded them as such."""
    w = make_window()
    train_to_end(w, qtbot, iters=10)
    small = tmp_path / "small-run"
    model = PRESETS["small"].model_for(w.corpus.vocab_size)
    with RunLog(small) as log:
        log.write_config({"model": model.to_dict(), "start_iteration": 0})
        for i in range(1, 401):
            log.append({"iter": i, "loss": 2.0})
    copied = small / "checkpoints" / "mine.safetensors"  # (RunLog made the folder)
    shutil.copy(w.run_info.run_dir / "checkpoints" / "final.safetensors", copied)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(copied), ""))
    qtbot.mouseClick(w.panel.load, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Loaded" in w.statusBar().currentMessage(), timeout=10_000)
    assert list(w.store["iter"]) == list(range(1, 11))  # its own run's, none of the small run's 400


ASK_BEFORE_CLOSING = MainWindow.ask_before_closing  # the real one: make_window answers for it


def test_closing_mid_run_asks_with_buttons_that_say_what_they_do(make_window, monkeypatch):
    w = make_window()
    seen: list[list[str]] = []

    def answer(box: QMessageBox) -> int:  # in place of its modal loop
        seen.append(sorted(b.text() for b in box.buttons()))
        return QMessageBox.StandardButton.Cancel

    monkeypatch.setattr(QMessageBox, "exec", answer)
    assert ASK_BEFORE_CLOSING(w, 5) == QMessageBox.StandardButton.Cancel
    assert seen == [["Cancel", "Close without exporting", "Export…"]]  # "Discard" read as deleting the run


def test_a_checkpoint_loaded_only_to_sample_closes_without_a_question_or_a_folder(
    make_window, qtbot, monkeypatch
):
    first = make_window()
    train_then_stop(first, qtbot, iters=500)
    final = first.run_info.run_dir / "checkpoints" / "final.safetensors"
    first.close()
    before = sorted(runs_dir().iterdir())
    w = make_window()
    w.load_checkpoint(str(final))
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)  # ready to resume, but not resumed
    w.samples.request()
    qtbot.waitUntil(lambda: w.samples.count() == 1, timeout=10_000)
    asked = answer_close_questions(monkeypatch)
    w.close()
    assert not asked  # the model is in the checkpoint it came from
    assert sorted(runs_dir().iterdir()) == before  # and no run folder was left for it


def test_stop_right_after_start_stops_the_run_being_built(make_window, qtbot):
    """The click lands while the worker still builds the run: it must not be dropped."""
    w = make_window()
    tiny(w, iters=100_000)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    assert w.state == "starting" and w.panel.stop.isEnabled()
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    assert not w.store["iter"].size  # stopped before its first iteration: nothing trained,
    assert not w.run_info.run_dir.exists()  # so no run folder either
    assert w.shown_run_dir() == runs_dir()  # Show run folder does not make it again


def test_a_loss_that_settles_above_a_uniform_guess_is_said_once(make_window, qtbot):
    w = make_window()
    tiny(w, iters=600)
    w.panel.lr.setValue(10.0)  # clipping keeps the numbers finite; the loss climbs all the same
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(boxes(w, "Not learning")), timeout=30_000)
    [box] = boxes(w, "Not learning")
    assert "above the" in box.text() and "learning rate is likely too high" in box.text()
    assert w.state == TRAINING  # said, not stopped: the person decides
    box.accept()
    at = last_iter(w)
    qtbot.waitUntil(lambda: last_iter(w) > at + 150, timeout=20_000)
    assert not boxes(w, "Not learning")  # once a run


def test_a_checkpoint_on_another_text_is_not_said_to_be_not_learning(make_window, corpus_file):
    w = make_window()
    corpus = w.corpus
    model = PRESETS["tiny"].model_for(corpus.vocab_size)
    for warnings, said in ((["another text than the checkpoint's"], False), ([], True)):
        w.run_info = RunInfo(model, PRESETS["tiny"].train, 1000, corpus, None, None, warnings)
        w.store.clear()
        w.store.extend([{"iter": i, "loss": 9.0} for i in range(1, 1201)])  # far above a guess
        w.state = TRAINING
        w._said_not_learning = False
        w._check_learning()
        assert bool(boxes(w, "Not learning")) is said  # adapting to a new text is no sign of a bad rate
    w.state, w.run_info = IDLE, None


def test_a_run_that_learns_is_not_said_to_be_not_learning(make_window, qtbot):
    w = make_window()
    train_to_end(w, qtbot, iters=400)
    assert not boxes(w, "Not learning")


def test_a_nan_loss_pauses_the_run_and_says_so(make_window, qtbot, monkeypatch):
    # The injection: from iteration 5 the trainer reports a NaN loss, as a diverging run would.
    real_step = Trainer.step

    def diverging(self: Trainer):
        m = real_step(self)
        return dataclasses.replace(m, loss=math.nan) if m.iteration >= 5 else m

    monkeypatch.setattr(Trainer, "step", diverging)
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=20_000)
    assert last_iter(w) == 5
    [box] = boxes(w, "Training paused")
    assert "nan" in box.text() and "iteration 5" in box.text()
    assert w.panel.export.isEnabled() and w.panel.pause.text() == "Resume"


@pytest.mark.parametrize(
    ("error", "says", "traceback"),
    [
        (RuntimeError("the kettle boiled over"), "the kettle boiled over", True),  # a bug: for a report
        (
            MemoryError("Unable to allocate 3.1 GiB"),
            "out of memory (Unable to allocate 3.1 GiB); lower",
            False,
        ),
    ],
)
def test_a_failure_in_the_worker_is_shown_and_the_window_stays_usable(
    make_window, qtbot, monkeypatch, error, says, traceback
):
    real_step = Trainer.step
    fail_steps(monkeypatch, error, at=3, after=True)
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == FAILED, timeout=20_000)
    [box] = boxes(w, "Training failed")
    assert says in box.text()
    assert ("Traceback" in box.detailedText() and "failing" in box.detailedText()) == traceback  # collapsible
    assert w.panel.export.isEnabled()  # the iterations done can still be saved
    box.accept()
    monkeypatch.setattr(Trainer, "step", real_step)
    assert w.panel.start.isEnabled()
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    assert w.state == TRAINING


def test_closing_mid_training_joins_the_worker_without_errors(make_window, qtbot, qtlog, monkeypatch):
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    thread = w.handle.thread
    asked = answer_close_questions(monkeypatch)
    w.close()
    assert asked, "closing mid-training asks whether to save"
    assert thread.isFinished() and w.handle is None
    problems = [
        r.message
        for r in qtlog.records
        if "propagateSizeHints" not in r.message  # the offscreen platform's own remark
    ]
    assert not [m for m in problems if "QThread" in m or "rror" in m], problems


def test_closing_mid_training_can_save_first(make_window, qtbot, tmp_path, monkeypatch):
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    target = tmp_path / "on-close.safetensors"
    monkeypatch.setattr(MainWindow, "ask_before_closing", lambda *a, **k: QMessageBox.StandardButton.Save)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    w.close()
    assert checkpoint.load(target).iteration >= 5
    assert w.handle is None


def test_closing_with_a_save_that_fails_keeps_the_window_and_the_training(
    make_window, qtbot, tmp_path, monkeypatch
):
    w = make_window()
    tiny(w)
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / "a-file" / "on-close.safetensors"  # a folder that is a file: saving fails
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    monkeypatch.setattr(MainWindow, "ask_before_closing", lambda *a, **k: QMessageBox.StandardButton.Save)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    assert not w.close()  # the close is refused
    assert boxes(w, "Export failed") and w.handle is not None
    at_refusal = last_iter(w)
    qtbot.waitUntil(lambda: last_iter(w) > at_refusal + 3, timeout=10_000)
    assert w.state == TRAINING


def test_open_a_run_that_chargpt_train_is_writing(make_window, qtbot, tmp_path, corpus_file, monkeypatch):
    run_dir = tmp_path / "cli-run"
    cmd = [sys.executable, "-m", "engine.cli", "train", "--preset", "tiny", "--corpus", str(corpus_file)]
    cmd += ["--iters", "150", "--batch", "4", "--threads", "1", "--eval-every", "50"]
    cmd += ["--run-dir", str(run_dir)]
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            w = make_window()
            w.panel.preset.setCurrentIndex(w.panel.preset.findData("small"))  # for the next run
            qtbot.waitUntil(lambda: (run_dir / "config.json").exists(), timeout=30_000)
            monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run_dir))
            w.open_run_action.trigger()  # File → Open run…
            qtbot.waitUntil(lambda: plotted(w) >= 1, timeout=20_000)
            assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()  # leaving the block waits for it and closes its pipe
    qtbot.waitUntil(lambda: plotted(w) == 150, timeout=10_000)  # followed to the end
    assert list(w.plots.loss_val.xData) == [50, 100, 150]
    assert "150" in w.iter_label.text()
    # the panel shows the settings of the run in view
    assert (w.panel.preset_name(), w.panel.batch.value(), w.panel.iters.value()) == ("tiny", 4, 150)
    vocab = len(set(corpus_file.read_text(encoding="utf-8")))
    assert w.plots.chance.value() == pytest.approx(math.log(vocab))  # the run's vocabulary, from its config


def test_before_the_first_run_the_loss_plot_shows_where_a_new_model_starts(make_window, corpus_file):
    w = make_window()
    vocab = len(set(corpus_file.read_text(encoding="utf-8")))
    assert w.plots.chance_loss == pytest.approx(math.log(vocab))
    assert w.plots.loss_plot.viewRange()[1][1] > math.log(vocab)  # the line is in view


def test_recent_runs_bring_back_a_run_of_an_earlier_session(make_window, qtbot):
    first = make_window()
    first.recent_menu.aboutToShow.emit()
    assert [a.text() for a in first.recent_menu.actions()] == ["No runs yet"]
    train_to_end(first, qtbot, iters=10)
    trained = first.run_info.run_dir
    first.close()
    later = make_window()  # the next session, with the same settings
    later.recent_menu.aboutToShow.emit()
    [action] = later.recent_menu.actions()
    assert action.text() == trained.name and action.isEnabled()
    action.trigger()
    qtbot.waitUntil(lambda: later.state == f"viewing {trained.name}", timeout=10_000)
    assert last_iter(later) == 10
    shutil.rmtree(trained)  # a folder deleted since is not offered
    later.recent_menu.aboutToShow.emit()
    assert [a.text() for a in later.recent_menu.actions()] == ["No runs yet"]


def copy_of_run(run_dir: Path, to: Path, section: str = "", **changes: int) -> Path:
    """A copy of the run folder ``run_dir`` at ``to``, another run to view, with ``changes`` to
    the ``section`` of its config.json ("model" or "train")."""
    shutil.copytree(run_dir, to)
    if changes:
        config = json.loads((to / "config.json").read_text())
        config[section].update(changes)
        (to / "config.json").write_text(json.dumps(config))
    return to


def test_a_viewed_run_of_no_presets_model_says_what_model_it_was(make_window, qtbot, tmp_path):
    """The panel keeps the next run's preset (tiny here), and nothing said the run was not one."""
    w = make_window()
    train_to_end(w, qtbot, iters=5)
    viewed = copy_of_run(
        w.run_info.run_dir,
        tmp_path / "custom-run",
        "model",
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_ff=64,
        context=16,
    )
    w.open_run(str(viewed))
    qtbot.waitUntil(lambda: w.state == "viewing custom-run", timeout=10_000)
    said = w.statusBar().currentMessage()
    assert said == "A model of no preset: 2 layers × 32, 4 heads, context 16"
    assert w.panel.preset_name() == "tiny"


def test_show_run_folder_opens_the_folder_of_the_run_in_the_window(make_window, qtbot, tmp_path, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    w = make_window()
    w.show_folder_action.trigger()  # no run yet: the folder all runs go to, made for the occasion
    assert opened == [str(runs_dir())] and runs_dir().is_dir()
    with monkeypatch.context() as no_file_manager:
        no_file_manager.setattr(QDesktopServices, "openUrl", lambda url: False)
        w.show_folder_action.trigger()  # not "the run folder": no run is there yet
        assert boxes(w, "Run folder")[-1].text() == f"Runs are kept in {runs_dir()}"
    train_to_end(w, qtbot, iters=10)
    trained = w.run_info.run_dir
    w.show_folder_action.trigger()
    viewed = copy_of_run(trained, tmp_path / "viewed", "train", max_iters=99)  # as if stopped at 10 of 99
    w.open_run(str(viewed))
    qtbot.waitUntil(lambda: w.state.startswith("viewing"), timeout=10_000)
    assert w.iter_label.text() == "iter 10 / 99"  # the viewed run's, not the one trained before
    w.show_folder_action.trigger()
    assert opened[1:] == [str(trained), str(viewed)]
    # a desktop without a file manager: the path is said instead
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)
    w.show_folder_action.trigger()
    assert boxes(w, "Run folder")[-1].text() == f"The run folder is {viewed}"
    # moved away while in view: said, not made anew and empty under its old name, nor the
    # folder of all runs called the run folder once the window stopped following it
    viewed.rename(tmp_path / "moved")
    qtbot.waitUntil(lambda: "Stopped following" in w.statusBar().currentMessage(), timeout=10_000)
    w.show_folder_action.trigger()
    assert f"The run folder {viewed} is gone" in boxes(w, "Run folder")[-1].text() and not viewed.exists()
    # and a run trained here, its folder deleted after it ended
    train_to_end(w, qtbot, iters=10)
    shutil.rmtree(w.run_info.run_dir)
    w.show_folder_action.trigger()
    assert f"The run folder {w.run_info.run_dir} is gone" in boxes(w, "Run folder")[-1].text()


def test_a_viewed_run_says_how_to_train_it_on_and_load_starts_at_its_final_checkpoint(
    make_window, qtbot, tmp_path, monkeypatch
):
    """A run trained by chargpt, opened in the window, had Start and Continue for other models
    only, and nothing said that Load checkpoint… on its final one trains it on."""
    w = make_window()
    train_to_end(w, qtbot, iters=10)
    viewed = copy_of_run(w.run_info.run_dir, tmp_path / "viewed")
    w.open_run(str(viewed))
    qtbot.waitUntil(lambda: w.state.startswith("viewing"), timeout=10_000)
    assert "Load checkpoint… (Ctrl+L)" in w.statusBar().currentMessage()
    assert w.threads_label.text() == ""  # not the count of the run trained before
    asked: list[str] = []
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", lambda _w, _t, start, _f: asked.append(start) or ("", "")
    )
    w.load_action.trigger()
    assert asked == [str(viewed / "checkpoints" / "final.safetensors")]


def test_a_viewed_run_that_stops_short_of_its_end_is_said_to_be_quiet(
    make_window, qtbot, tmp_path, monkeypatch
):
    """A run whose process was killed showed "72 % · viewing" for good."""
    import app.main_window

    w = make_window()
    train_to_end(w, qtbot, iters=10)
    stopped = copy_of_run(w.run_info.run_dir, tmp_path / "stopped", "train", max_iters=99)
    viewed = copy_of_run(stopped, tmp_path / "viewed")
    (viewed / "checkpoints" / "final.safetensors").unlink()  # 10 of 99 written, and no end
    monkeypatch.setattr(app.main_window, "QUIET_S", 0.3)
    for ended in (w.run_info.run_dir, stopped):  # finished; stopped with its final checkpoint
        w.open_run(str(ended))
        qtbot.waitUntil(lambda e=ended: w.state == f"viewing {e.name}", timeout=10_000)
        qtbot.wait(1000)
        assert "Nothing new" not in w.statusBar().currentMessage()
    w.open_run(str(viewed))
    qtbot.waitUntil(lambda: "Nothing new in this run" in w.statusBar().currentMessage(), timeout=10_000)
    assert "ended at iteration 10 without finishing" in w.statusBar().currentMessage()
    with (viewed / "metrics.jsonl").open("a") as f:  # it was only slow: the message goes
        f.write(json.dumps({"iter": 11, "loss": 3.0, "step_s": 0.01}) + "\n")
    qtbot.waitUntil(lambda: last_iter(w) == 11, timeout=10_000)
    assert "Nothing new" not in w.statusBar().currentMessage()


def test_show_run_folder_says_why_it_cannot_make_the_folder_for_runs(make_window, monkeypatch):
    w = make_window()
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: True)

    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    w.show_folder_action.trigger()  # it raised, and only stderr saw it
    [box] = boxes(w, "Run folder")
    assert "Read-only file system" in box.text() and str(runs_dir()) in box.text()


def test_a_viewed_run_whose_samples_cannot_be_read_is_left_with_a_message(
    make_window, qtbot, tmp_path, monkeypatch
):
    """An unreadable samples.txt stopped the opening half-way, with a traceback on stderr only."""
    from engine.runlog import RunFollower

    w = make_window()
    train_to_end(w, qtbot, iters=10)
    viewed = copy_of_run(w.run_info.run_dir, tmp_path / "viewed")

    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(viewed / "samples.txt"))

    monkeypatch.setattr(RunFollower, "poll_samples", unreadable)
    w.open_run(str(viewed))
    qtbot.waitUntil(lambda: w.state.startswith("viewing"), timeout=10_000)
    assert "Stopped following the run" in w.statusBar().currentMessage()
    assert "Permission denied" in w.statusBar().currentMessage()
    assert last_iter(w) == 10  # its curves are shown all the same
    assert str(viewed) in [str(p) for p in w.recent_runs()]


def test_dropping_a_file_that_is_not_text_is_refused_with_a_message(make_window, qtbot, tmp_path):
    w = make_window()
    good = w.corpus
    bad = tmp_path / "<b>picture.bin"  # shown as it is named, not as markup
    bad.write_bytes(b"\x89PNG\x00\x00\x01binary")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(bad))])
    w.dropEvent(drop_of(mime))  # Qt delivers synthetic drops only during a real drag
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot use this corpus")), timeout=10_000)
    [box] = boxes(w, "Cannot use this corpus")
    assert "<b>picture.bin looks binary" in box.text()
    assert box.textFormat() == Qt.TextFormat.PlainText
    assert w.corpus is good and w.panel.start.isEnabled()


def test_a_remembered_corpus_that_is_gone_gives_way_to_the_built_in_one(
    make_window, qtbot, tmp_path, corpus_file, monkeypatch
):
    import engine.default_corpus

    builtin = Corpus(corpus_file.read_text(encoding="utf-8"), engine.default_corpus.NAME)
    monkeypatch.setattr(engine.default_corpus, "load_default_corpus", lambda: builtin)  # not the stdlib's
    w = make_window(corpus=tmp_path / "moved-away.txt")  # waits until a corpus is open
    assert w.corpus is builtin and w.panel.start.isEnabled()
    [box] = boxes(w, "Cannot use this corpus")
    assert "moved-away.txt" in box.text() and "built-in corpus is open instead" in box.text()


def test_file_menu_goes_back_to_the_built_in_corpus_for_this_launch_and_the_next(
    make_window, qtbot, settings, corpus_file, monkeypatch
):
    """Open… picks only files: once one was opened, the built-in text was gone for good."""
    import engine.default_corpus

    builtin = Corpus("built in text, " * 200, engine.default_corpus.NAME)
    monkeypatch.setattr(engine.default_corpus, "load_default_corpus", lambda: builtin)  # not the stdlib's
    w = make_window()
    assert w.corpus.name == "corpus.txt" and w.builtin_action.isEnabled()
    assert "Ctrl+O" in w.panel.open_corpus.toolTip()
    w.builtin_action.trigger()
    qtbot.waitUntil(lambda: w.corpus is builtin, timeout=10_000)
    assert w.panel.start.isEnabled()
    assert not w.builtin_action.isEnabled()  # it is open: nothing to go back to
    w.save_settings()
    assert settings.value("corpus") == ""
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=10_000)
    assert not w.builtin_action.isEnabled()  # a run's text is its own until it stops
    w.stop()
    qtbot.waitUntil(lambda: w.panel.open_corpus.isEnabled(), timeout=10_000)
    assert not w.builtin_action.isEnabled()  # still the built-in text
    w.load_corpus(str(corpus_file))
    qtbot.waitUntil(lambda: w.corpus.name == "corpus.txt", timeout=10_000)
    assert w.builtin_action.isEnabled()


def test_a_mistyped_text_at_launch_leaves_the_remembered_one_open(make_window, qtbot, settings, corpus_file):
    """`chargpt-studio typo.txt` opened the built-in text, and the next launch remembered that."""
    settings.setValue("corpus", str(corpus_file))
    w = make_window(corpus=None)  # the remembered text is still being read when the typo comes
    w.open_path(str(corpus_file.with_name("typo.txt")))
    qtbot.waitUntil(lambda: w.corpus is not None and bool(boxes(w, "Cannot use this corpus")), timeout=10_000)
    [box] = boxes(w, "Cannot use this corpus")
    assert "typo.txt" in box.text() and "corpus.txt is open instead" in box.text()
    assert w.corpus.name == "corpus.txt" and w.panel.start.isEnabled()
    w.save_settings()
    assert settings.value("corpus") == str(corpus_file)


def test_dropping_a_text_file_makes_it_the_corpus(make_window, qtbot, tmp_path):
    w = make_window()
    other = tmp_path / "other.txt"
    other.write_text("zebra quagga okapi\n" * 40, encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(other))])
    # dragged with Shift, a move: taken as a copy, or the file manager deletes the file
    both, shift = Qt.DropAction.CopyAction | Qt.DropAction.MoveAction, Qt.KeyboardModifier.ShiftModifier
    drop = QDropEvent(QPointF(50, 50), both, mime, Qt.MouseButton.LeftButton, shift)
    assert drop.proposedAction() == Qt.DropAction.MoveAction
    w.dropEvent(drop)  # Qt delivers synthetic drops only during a real drag
    assert drop.isAccepted() and drop.dropAction() == Qt.DropAction.CopyAction
    qtbot.waitUntil(lambda: "other.txt" in w.panel.corpus_label.toolTip(), timeout=10_000)
    # phrases are held together by no-break spaces, so a narrow panel wraps only between them
    assert "vocabulary\N{NO-BREAK SPACE}14" in w.panel.corpus_label.text()


def test_dropping_a_run_folder_opens_it_and_dropping_a_checkpoint_loads_it(make_window, qtbot):
    trained = make_window()
    train_to_end(trained, qtbot, iters=12)
    run_dir = trained.run_info.run_dir
    w = make_window()

    def drop(path: Path) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        w.dropEvent(drop_of(mime))

    drop(run_dir)  # as File → Open run…
    qtbot.waitUntil(lambda: w.state == f"viewing {run_dir.name}" and plotted(w) == 12, timeout=10_000)
    drop(run_dir / "checkpoints" / "final.safetensors")  # as Load checkpoint…
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=10_000)  # the run's end: Continue goes on
    assert last_iter(w) == 12 and w.panel.pause.text() == "Continue"
    assert not boxes(w, "Cannot use this corpus")  # neither was taken for a text to train on


def test_the_command_line_opens_a_corpus_and_a_run_in_the_window(make_window, qtbot, tmp_path):
    from app.main import build_parser, open_given

    trained = make_window()
    train_to_end(trained, qtbot, iters=12)
    run_dir = trained.run_info.run_dir
    other = tmp_path / "other.txt"
    other.write_text("zebra quagga okapi\n" * 40, encoding="utf-8")
    w = make_window()
    open_given(w, build_parser().parse_args(["--corpus", str(other), str(run_dir)]))
    qtbot.waitUntil(lambda: w.corpus_path == str(other), timeout=10_000)
    qtbot.waitUntil(lambda: w.state == f"viewing {run_dir.name}" and plotted(w) == 12, timeout=10_000)


def test_every_control_says_what_it_does_under_the_pointer(make_window):
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QSlider

    w = make_window()
    controls = [
        c
        for kind in (QAbstractSpinBox, QComboBox, QLineEdit, QAbstractButton, QSlider)
        for c in w.findChildren(kind)
        if c.isVisibleTo(w) and not isinstance(c.parent(), QAbstractSpinBox | QComboBox)  # their own editors
    ]
    assert len(controls) > 15
    assert [c for c in controls if not c.toolTip()] == []


def test_sample_on_demand_comes_first_with_its_iteration(make_window, qtbot):
    w = make_window()
    train_to_end(w, qtbot, iters=30)
    w.samples.prompt.setText("the ")
    w.samples.length.setValue(40)
    assert w.samples.count() == 1  # the one a run ends with
    qtbot.mouseClick(w.samples.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.samples.count() == 2, timeout=10_000)
    first_line = w.samples.text.toPlainText().splitlines()[0]
    assert "iter 30" in first_line and "on demand · temperature 0.8" in first_line
    assert "top-k" not in first_line  # off
    assert w.samples.text.toPlainText().splitlines()[1].startswith("the ")
    w.samples.temperature.setValue(0.1)
    w.samples.top_k.setValue(5)
    qtbot.mouseClick(w.samples.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.samples.count() == 3, timeout=10_000)
    assert "on demand · temperature 0.1 · top-k 5" in w.samples.text.toPlainText().splitlines()[0]


def slow_samples(
    monkeypatch, *, fail_at: int | None = None, error: type[BaseException] = MemoryError
) -> list[str]:
    """Make each sampled character take 10 ms (and the ``fail_at``-th raise ``error``), so that
    a sample is still being made when a test acts; the characters made go in the list returned."""
    made: list[str] = []
    real = Trainer.generate_iter

    def slow(self, *args, **kwargs):
        for i, ch in enumerate(real(self, *args, **kwargs)):
            if i == fail_at:
                raise error("the arena could not grow")
            time.sleep(0.01)
            made.append(ch)
            yield ch

    monkeypatch.setattr(Trainer, "generate_iter", slow)
    return made


def ask_for_a_sample(w: MainWindow, qtbot, length: int) -> None:
    w.samples.length.setValue(length)
    qtbot.mouseClick(w.samples.generate_button, Qt.MouseButton.LeftButton)
    assert w.samples.busy and w.samples.generate_button.text() == "Cancel sample"
    qtbot.waitUntil(lambda: "characters made" in w.samples.generate_button.text(), timeout=10_000)


def test_a_long_sample_lets_pause_act_at_once_and_can_be_cancelled(make_window, qtbot, monkeypatch):
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 3, timeout=20_000)
    slow_samples(monkeypatch)
    ask_for_a_sample(w, qtbot, 5000)  # 50 s
    qtbot.waitUntil(lambda: w.store.last_iteration == w.handle.worker._trainer.iteration)  # no plot behind
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=5_000)
    assert w.samples.busy  # paused while the sample is still being made, not after it
    w.sample_action.trigger()  # Ctrl+G, now "Cancel sample"
    qtbot.waitUntil(lambda: not w.samples.busy, timeout=5_000)
    assert w.samples.generate_button.text() == "Generate sample" == w.sample_action.text().replace("&", "")
    qtbot.wait(200)
    assert w.samples.count() == 0  # nothing half made was shown
    assert w.statusBar().currentMessage() == "Sample cancelled"  # and that is said
    w.samples.length.setValue(20)
    w.samples.prompt.setText("the")
    w.samples.prompt.returnPressed.emit()  # Enter generates; while one is made, it does not cancel
    w.samples.prompt.returnPressed.emit()
    qtbot.waitUntil(lambda: w.samples.count() == 1 and not w.samples.busy, timeout=10_000)
    assert w.samples.text.toPlainText().splitlines()[1].startswith("the")


def test_stop_threads_and_export_while_a_sample_is_made(make_window, qtbot, tmp_path, monkeypatch):
    """Stop frees the arena and a thread count may start helpers while the sample waits between
    slices; it still comes whole, and what the export says is not overwritten by its progress."""
    w = make_window()
    tiny(w, batch=8)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 3, timeout=20_000)
    made = slow_samples(monkeypatch)
    ask_for_a_sample(w, qtbot, 300)
    w.panel.threads.setValue(2)
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    target = tmp_path / "mid-sample.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    w.export_action.trigger()
    qtbot.waitUntil(lambda: "exported" in w.statusBar().currentMessage(), timeout=10_000)
    assert w.samples.busy
    qtbot.wait(200)  # slices go on
    assert "exported" in w.statusBar().currentMessage()
    qtbot.waitUntil(lambda: not w.samples.busy, timeout=20_000)
    shown = w.samples.text.toPlainText()
    assert shown.startswith("── iter") and "on demand" in shown.splitlines()[0], repr(shown[:300])
    assert len(made) == 300 and shown.split("──\n", 1)[1].startswith("".join(made)[:20])
    assert not boxes(w, "Cannot sample")


def test_a_sample_that_runs_out_of_memory_is_refused_and_the_run_goes_on(make_window, qtbot, monkeypatch):
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 3, timeout=20_000)
    slow_samples(monkeypatch, fail_at=30)
    ask_for_a_sample(w, qtbot, 500)
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot sample")), timeout=10_000)
    assert "out of memory" in boxes(w, "Cannot sample")[0].text()
    assert not w.samples.busy and w.sample_action.text() == "&Generate sample"
    held = last_iter(w)
    qtbot.waitUntil(lambda: last_iter(w) > held, timeout=10_000)
    assert w.state == TRAINING


def test_a_bug_in_the_middle_of_a_sample_leaves_no_cancel_button(make_window, qtbot, monkeypatch):
    w = make_window()
    train_then_stop(w, qtbot)
    slow_samples(monkeypatch, fail_at=30, error=RuntimeError)
    ask_for_a_sample(w, qtbot, 500)
    qtbot.waitUntil(lambda: w.state == FAILED, timeout=10_000)
    qtbot.waitUntil(lambda: not w.samples.busy, timeout=5_000)
    assert w.samples.generate_button.text() == "Generate sample"


def test_closing_while_a_sample_is_made_does_not_wait_for_it(make_window, qtbot, monkeypatch):
    w = make_window()
    train_then_stop(w, qtbot)
    made = slow_samples(monkeypatch)
    ask_for_a_sample(w, qtbot, 2000)  # 20 s
    w.close()  # joins the worker
    assert w.handle is None and len(made) < 2000


def test_pause_cuts_an_evaluation_short(make_window, qtbot, monkeypatch):
    """The large preset's evaluation takes 16 s, which Pause used to wait for."""
    import threading

    inside, asked = threading.Event(), threading.Event()
    real = Corpus.batch

    def batch(self, rng, split, *args):
        if split == "val" and not inside.is_set():
            inside.set()
            asked.wait(10)  # the first validation batch waits until Pause is asked for
        return real(self, rng, split, *args)

    monkeypatch.setattr(Corpus, "batch", batch)
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(inside.is_set, timeout=30_000)
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    asked.set()
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)
    evaluated_at = PRESETS["tiny"].train.eval_interval
    assert last_iter(w) == evaluated_at  # paused at the end of the iteration it evaluated at
    assert len(w.store.val_iter) == 0  # whose evaluation gave way after one batch


def test_settings_are_remembered(make_window, qtbot, settings):
    w = make_window()
    room = w.screen().availableGeometry()
    assert w.width() <= room.width() and w.height() <= room.height()  # first launch fits the screen
    least = w.minimumSize()  # and the least it may be leaves room for the frame (800 x 800 here)
    assert least.width() <= 0.9 * room.width() and least.height() <= 0.9 * room.height()
    w.panel.preset.setCurrentIndex(w.panel.preset.findData("small"))
    w.panel.threads.setValue(1)
    # the Training box as a short demo set it up: it came back as the preset fills it
    w.panel.iters.setValue(600)
    w.panel.batch.setValue(8)
    w.panel.lr.setValue(0.004)
    w.panel.seed.setValue(7)
    w.resize(w.width() - 20, w.height() - 10)
    size = w.size()
    corpus = w.corpus_path
    w.close()
    again = make_window(corpus=None)
    assert again.size() == size
    assert again.panel.preset_name() == "small"
    assert again.panel.threads.value() == 1
    p = again.panel
    assert (p.iters.value(), p.batch.value(), p.lr.value(), p.seed.value()) == (600, 8, 0.004, 7)
    qtbot.waitUntil(lambda: again.corpus is not None, timeout=10_000)
    assert again.corpus_path == corpus


def test_about_names_the_versions(make_window, monkeypatch):
    w = make_window()
    shown = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    # by its title, not QAction.menu(): PySide6 6.6 hands that back already deleted
    help_menu = next(m for m in w.menuBar().findChildren(QMenu) if m.title() == "&Help")
    [about] = [a for a in help_menu.actions() if "About" in a.text()]
    about.trigger()
    text = shown[0]
    for word in ("Python", "NumPy", "Qt", "pyqtgraph", "BLAS", np.__version__):
        assert word in text


def test_shortcuts_start_and_pause(make_window, qtbot):
    w = make_window()
    tiny(w)
    assert w.start_action.shortcut().toString() == "F5"
    w.activateWindow()
    qtbot.keyClick(w, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: last_iter(w) >= 3, timeout=20_000)
    qtbot.keyClick(w, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=5_000)
    assert w.export_action.shortcut().toString() == "Ctrl+E"
    # the panel names Load's shortcut itself, with why it is off (RunPanel.LOAD_TIP)
    assert f"({w.load_action.shortcut().toString()})" in w.panel.load.toolTip()


def test_the_menus_shortcuts_go_before_a_text_fields_own_keys(make_window, qtbot, monkeypatch):
    """On X11 a line edit or spin box takes Ctrl+E (end of line): Export's shortcut did nothing
    while one had the focus, as the threads box has after Start. The offscreen platform binds
    no such key, so the prompt here claims it as X11's fields do."""
    from app import samples_view

    class X11Field(QLineEdit):
        def event(self, e: QEvent) -> bool:
            ctrl_e = QKeyCombination(Qt.KeyboardModifier.ControlModifier, Qt.Key.Key_E)
            override = e.type() == QEvent.Type.ShortcutOverride
            if override and isinstance(e, QKeyEvent) and e.keyCombination() == ctrl_e:
                e.accept()  # "mine: the end of the line"
                return True
            return super().event(e)

    monkeypatch.setattr(samples_view, "QLineEdit", X11Field)
    w = make_window()
    assert isinstance(w.samples.prompt, X11Field)
    train_to_end(w, qtbot, iters=5)
    w.activateWindow()
    w.samples.prompt.setFocus()
    qtbot.waitUntil(w.samples.prompt.hasFocus)
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: asked.append("export") or ("", ""))
    qtbot.keyClick(w.samples.prompt, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert asked == ["export"]


def test_the_built_in_corpus_is_ready_at_startup(make_window, qtbot):
    w = make_window(corpus=None)
    qtbot.waitUntil(lambda: w.corpus is not None, timeout=90_000)
    assert "built in" in w.panel.corpus_label.text()
    assert w.panel.start.isEnabled()


def test_a_short_window_scrolls_the_panel_rather_than_squeeze_its_controls(make_window, qtbot):
    """On a 1024 x 600 screen the panel's spin boxes were squeezed until their numbers were cut."""
    w = make_window()
    w.resize(900, 420)
    qtbot.waitUntil(lambda: w.height() == 420)  # it fits a short screen
    p = w.panel
    controls = (p.preset, p.batch, p.iters, p.lr, p.seed, p.threads, p.start, p.export, p.load)
    for c in controls:
        qtbot.waitUntil(lambda c=c: c.height() >= c.minimumSizeHint().height())
    scroll = p.settings_scroll
    assert scroll.verticalScrollBar().maximum() > 0  # what is below the fold is reachable
    scroll.ensureWidgetVisible(p.threads)
    assert p.threads.visibleRegion().boundingRect().height() == p.threads.height()
    for button in (p.start, p.pause, p.stop, p.export, p.load):  # in view without scrolling
        assert button.visibleRegion().boundingRect().height() == button.height()
    # Tab goes from the samples to the panel's first control, not to the scroll area itself
    w.activateWindow()
    w.samples.text.setFocus()
    qtbot.waitUntil(lambda: w.samples.text.hasFocus())
    qtbot.keyClick(w.samples.text, Qt.Key.Key_Tab)
    qtbot.waitUntil(lambda: p.preset.hasFocus())
    # and from the plots' last control to the prompt, with no stop on the plots between
    w.plots.log_loss.setFocus()
    qtbot.waitUntil(lambda: w.plots.log_loss.hasFocus())
    qtbot.keyClick(w.plots.log_loss, Qt.Key.Key_Tab)
    qtbot.waitUntil(lambda: w.samples.prompt.hasFocus())


def test_a_thread_count_changed_mid_run_is_marked_on_the_step_time_plot(make_window, qtbot):
    w = make_window()
    tiny(w, threads=1)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    assert not w.plots._thread_marks  # the count it started with is no change
    w.pause_action.trigger()
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)
    w.panel.threads.setValue(2)
    w.panel.threads.setValue(1)  # and back, before any step ran on two
    w.pause_action.trigger()
    at = last_iter(w)
    qtbot.waitUntil(lambda: last_iter(w) > at + 5, timeout=10_000)
    assert not w.plots._thread_marks
    w.panel.threads.setValue(2)
    qtbot.waitUntil(lambda: bool(w.plots._thread_marks), timeout=10_000)
    [mark] = w.plots._thread_marks
    assert mark.label.format == "2 threads" and mark.value() > at + 5  # where the steps on two began
    assert mark in w.plots.time_plot.items
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    w.start_action.trigger()  # a new run: the marks were the last run's
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=10_000)
    assert not w.plots._thread_marks and mark not in w.plots.time_plot.items


def test_auto_threads_is_the_default_and_settles_on_a_count(make_window, qtbot):
    w = make_window()
    assert w.panel.threads.value() == 0
    assert w.panel.threads.text() == "Auto"
    tiny(w, threads=0)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.threads_label.text().startswith("auto: "), timeout=30_000)
    chosen = int(w.threads_label.text().split()[1])
    assert 1 <= chosen <= (os.cpu_count() or 1)
    qtbot.waitUntil(lambda: bool(w.plots._thread_marks), timeout=5_000)  # its own signal, next
    mark = w.plots._thread_marks[0]  # where its trials ended, on the step-time plot
    assert mark.label.format == f"Auto: {chosen} thread{'s' * (chosen > 1)}"
    assert w.panel.threads.text() == "Auto"  # the choice stays Auto; the count shows in the status bar


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_auto_moves_to_another_count_when_the_machine_gets_busy_and_marks_it(make_window, qtbot, monkeypatch):
    """Auto chose two threads; then another program took a core, and two became the slower."""
    counts: list[int] = []

    class Busy(blas.ThreadTuner):
        """Two threads take 1 ms a step, then 4 from the 30th step on; one thread takes 2."""

        def __init__(self, apply):
            super().__init__([1, 2], apply=lambda n: counts.append(n) or apply(n), window=5)
            self.steps = 0

        def after_step(self, seconds):
            self.steps += 1
            n = counts[-1] if counts else 1
            return super().after_step(0.002 if n == 1 else 0.004 if self.steps >= 30 else 0.001)

    monkeypatch.setattr(worker_module, "ThreadTuner", Busy)
    w = make_window()
    tiny(w, threads=0, iters=60)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=30_000)
    assert [m.label.format for m in w.plots._thread_marks] == ["Auto: 2 threads", "Auto: 1 thread"]
    assert w.threads_label.text() == "auto: 1 thread" and w.panel.threads.text() == "Auto"
    assert 30 < w.plots._thread_marks[1].value() < 40  # where it moved, a few steps after


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_a_run_that_ends_while_auto_times_again_continues_on_autos_choice(make_window, qtbot, monkeypatch):
    """The run ended on a count Auto was only timing; Continue then named that count as the
    one in force, for the rest of the run, while the choice went on."""
    counts: list[int] = []

    class Busy(blas.ThreadTuner):
        """Two threads take 1 ms a step but 4 in steps 14 to 17 (a busy spell); one takes 2."""

        def __init__(self, apply):
            super().__init__([1, 2], apply=lambda n: counts.append(n) or apply(n), window=5, recheck_s=1e9)
            self.steps = 0

        def after_step(self, seconds):
            self.steps += 1
            busy = 14 <= self.steps < 18
            return super().after_step(0.002 if counts[-1] == 1 else 0.004 if busy else 0.001)

    monkeypatch.setattr(worker_module, "ThreadTuner", Busy)
    w = make_window()
    tiny(w, threads=0, iters=17)  # chosen 2 at step 8; timing again from step 17, on one thread
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=30_000)
    assert counts[-1] == 1 and w.threads_label.text() == "auto: 2 threads"
    w.panel.iters.setValue(40)
    w.pause_action.trigger()  # Continue
    qtbot.waitUntil(lambda: w.state == FINISHED and last_iter(w) == 40, timeout=30_000)
    assert w.threads_label.text() == "auto: 2 threads" and counts[-1] == 2
    assert [m.label.format for m in w.plots._thread_marks] == ["Auto: 2 threads"]


def test_auto_threads_on_one_core_shows_its_count_at_once(make_window, qtbot, monkeypatch):
    """With one core (an affinity or a CPU quota of one) Auto has nothing to time."""
    monkeypatch.setattr(blas, "cpu_count", lambda: 1)  # the tuner's candidates
    w = make_window()
    train_to_end(w, qtbot, threads=0, iters=3, timeout=30_000)
    assert w.threads_label.text() == "auto: 1 thread"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_each_run_gets_the_blas_threads_it_asks_for(make_window, qtbot):
    # Each run's worker is a new thread, and OpenBLAS has one process-wide count: the count
    # must follow each run (tests/engine/test_blas.py has the threadpoolctl case that broke it).
    w = make_window()
    for threads in (1, 2, 1):
        # tiny batches are not split: BLAS threads do the work
        train_to_end(w, qtbot, iters=3, threads=threads, timeout=30_000)
        assert w._threads_in_force == threads
        assert w.panel.threads.value() == threads
        assert w.threads_label.text() == {1: "1 thread", 2: "2 threads"}[threads]


def test_file_dialogs_open_where_that_kind_of_file_was_last_chosen(
    make_window, qtbot, tmp_path, corpus_file, monkeypatch
):
    opened_in: list[str] = []

    def dialog_answering(path: Path | str):
        def ask(_parent, _caption, folder, *_filters):
            opened_in.append(folder)
            return str(path), ""

        return ask

    w = make_window()
    texts = tmp_path / "texts"
    other = texts / "other.txt"
    texts.mkdir()
    other.write_text(corpus_file.read_text())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", dialog_answering(other))
    w.open_corpus_action.trigger()  # at first beside the corpus in use
    qtbot.waitUntil(lambda: w.corpus_path == str(other), timeout=10_000)
    w.open_corpus_action.trigger()
    assert opened_in == [str(corpus_file.parent), str(texts)]

    opened_in.clear()
    runs_dir().mkdir(parents=True)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "not-a-checkpoint.safetensors").write_text("text")
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", dialog_answering(saved / "not-a-checkpoint.safetensors")
    )
    w.load_action.trigger()  # at first where the runs are
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot load this checkpoint")), timeout=10_000)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", dialog_answering(""))
    w.load_action.trigger()
    (saved / "not-a-checkpoint.safetensors").unlink()
    saved.rmdir()
    w.load_action.trigger()  # a folder that has gone: back to the runs
    assert opened_in == [str(runs_dir()), str(saved), str(runs_dir())]

    opened_in.clear()
    w.settings.remove("corpus_dir")
    w.corpus_path = ""  # the built-in corpus, and no text chosen yet
    w.open_corpus_action.trigger()
    assert opened_in == [str(Path.home())]


def test_a_damaged_checkpoint_is_refused_in_one_plain_message(make_window, qtbot, tmp_path, monkeypatch):
    w = make_window()
    train_to_end(w, qtbot, iters=20)
    trained = w.run_info
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 64)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(damaged), ""))
    qtbot.mouseClick(w.panel.load, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot load this checkpoint")), timeout=10_000)
    [box] = boxes(w, "Cannot load this checkpoint")
    assert "damaged.safetensors" in box.text() and "choose" in box.text()
    assert box.detailedText() == ""  # the person's to fix: no traceback
    text = box.findChild(QLabel, "qt_msgbox_label")
    assert text.geometry().left() < 120  # beside its icon, not pushed right by a wide icon label
    box.accept()
    assert w.panel.start.isEnabled()
    # refused before the model in the window gave way: it is still there to sample and export
    assert w.state == FINISHED and w.run_info is trained and last_iter(w) == 20
    assert w.samples.generate_button.isEnabled() and w.panel.export.isEnabled()


def test_a_run_started_while_a_checkpoint_is_read_wins_over_it(make_window, qtbot):
    w = make_window()
    train_to_end(w, qtbot, iters=20)
    first = w.run_info.run_dir
    w.panel.iters.setValue(100_000)
    w.load_checkpoint(str(first / "checkpoints" / "final.safetensors"))
    w.start_action.trigger()  # before the checkpoint is read
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=20_000)
    qtbot.waitUntil(lambda: not worker_module._pending, timeout=20_000)  # the reading ends, and gives way
    assert w.state == TRAINING and w.run_info.iteration == 0
    assert sorted(runs_dir().iterdir()) == sorted([first, w.run_info.run_dir])  # no folder left for it
    assert not w.statusBar().currentMessage().startswith("Loading")


def test_the_newest_of_a_folder_and_a_checkpoint_asked_for_is_shown(make_window, qtbot):
    w = make_window()
    train_to_end(w, qtbot, iters=20)
    run = w.run_info.run_dir
    final = str(run / "checkpoints" / "final.safetensors")
    w.open_run(str(run))
    w.load_checkpoint(final)  # asked for last: shown, whichever reading ends first
    qtbot.waitUntil(lambda: not worker_module._pending and w.state == FINISHED, timeout=20_000)
    assert w.run_info is not None and w._follower is None
    w.load_checkpoint(final)
    w.open_run(str(run))  # and the other way round
    qtbot.waitUntil(lambda: not worker_module._pending and w.state.startswith("viewing"), timeout=20_000)
    assert w.run_info is None and w.handle is None
    assert not w.statusBar().currentMessage().startswith("Loading")  # it stayed, for good


def test_continue_wins_over_a_checkpoint_still_being_read(make_window, qtbot, monkeypatch):
    import engine.checkpoint

    w = make_window()
    train_to_end(w, qtbot, iters=10)
    real = engine.checkpoint.restore

    def slow(*args, **kwargs):
        time.sleep(1.0)  # a big checkpoint
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.checkpoint, "restore", slow)
    w.load_checkpoint(str(w.run_info.run_dir / "checkpoints" / "final.safetensors"))
    w.panel.iters.setValue(30)
    w.pause_action.trigger()  # Continue, asked for after the load
    qtbot.waitUntil(lambda: not worker_module._pending and w.state == FINISHED, timeout=20_000)
    qtbot.waitUntil(lambda: last_iter(w) == 30, timeout=20_000)
    qtbot.wait(100)
    assert last_iter(w) == 30 and w.state == FINISHED  # the model trained on stays


def test_a_run_closed_mid_training_is_among_the_recent_runs_of_the_next_session(make_window, qtbot, tmp_path):
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    folder = w.run_info.run_dir
    w.close()  # the commonest end of a long run
    fresh = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)  # read from the file
    later = make_window(the_settings=fresh)
    assert later.recent_runs() == [folder.resolve()]


def test_a_run_is_among_the_recent_runs_from_its_start_should_the_process_not_live_to_end_it(
    make_window, qtbot, settings
):
    """A run killed (kill -9, a crash) had never joined Recent runs: only its end or closing did."""
    w = make_window()
    tiny(w)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=20_000)
    settings.sync()  # what a process killed now would leave
    assert w.recent_runs() == [w.run_info.run_dir]


def test_remembered_fields_that_are_not_numbers_or_out_of_reach_give_the_presets(make_window, settings):
    settings.setValue("preset", "small")
    for key, value in (("iters", "lots"), ("batch", 10**12), ("lr", "nan"), ("seed", -5)):
        settings.setValue(key, value)
    p = make_window().panel
    assert p.iters.value() == PRESETS["small"].train.max_iters and p.lr.value() == PRESETS["small"].train.lr
    assert p.batch.value() == p.batch.maximum() and p.seed.value() == p.seed.minimum()


def test_a_remembered_size_that_is_not_a_geometry_opens_the_first_launch_size(make_window, settings):
    settings.setValue("geometry", QByteArray(b"garbage"))
    w = make_window()
    room = w.screen().availableGeometry().size() * 0.9
    assert w.size() == DEFAULT_SIZE.boundedTo(room).expandedTo(w.minimumSize())  # not 892 x 512


def test_a_thread_count_the_blas_cannot_take_is_no_change_on_the_plot(make_window, qtbot, monkeypatch):
    import engine.trainer

    monkeypatch.setattr(engine.trainer, "set_blas_threads", lambda n: 1)  # NumPy on a BLAS it cannot limit
    w = make_window()
    tiny(w, threads=1)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: last_iter(w) >= 5, timeout=20_000)
    w.panel.threads.setValue(2)
    at = last_iter(w)
    qtbot.waitUntil(lambda: last_iter(w) > at + 10, timeout=20_000)
    assert not w.plots._thread_marks  # "2 threads" was drawn though the run stayed on one


def test_closing_while_a_checkpoint_is_read_starts_nothing_and_leaves_no_folder(make_window, qtbot):
    w = make_window()
    train_to_end(w, qtbot, iters=20)
    first = w.run_info.run_dir
    w.load_checkpoint(str(first / "checkpoints" / "final.safetensors"))
    w.close()  # before the reading ends: it started a worker on the closed window, which aborted
    qtbot.waitUntil(lambda: not worker_module._pending, timeout=20_000)
    qtbot.wait(50)
    assert w.handle is None
    assert list(runs_dir().iterdir()) == [first]


def test_a_checkpoint_whose_corpus_is_gone_loads_to_sample_with_no_text_open(
    make_window, qtbot, tmp_path, corpus_file, monkeypatch
):
    import engine.default_corpus
    from engine.data import CorpusError

    text = tmp_path / "moved.txt"
    text.write_text(corpus_file.read_text(encoding="utf-8"), encoding="utf-8")
    corpus = Corpus.from_file(text)
    preset = PRESETS["tiny"]
    train = dataclasses.replace(preset.train, batch_size=4)
    saved = checkpoint.save(
        Trainer(preset.model_for(corpus.vocab_size), train, corpus), tmp_path / "c.safetensors"
    )
    text.unlink()

    def no_builtin() -> Corpus:
        raise CorpusError("no standard library here")

    monkeypatch.setattr(engine.default_corpus, "load_default_corpus", no_builtin)
    w = make_window(corpus=None)  # no corpus open at all
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot use this corpus")), timeout=10_000)
    boxes(w, "Cannot use this corpus")[0].accept()
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(saved), ""))
    w.load_action.trigger()
    qtbot.waitUntil(lambda: bool(boxes(w, "Loaded to sample and export")), timeout=10_000)
    [box] = boxes(w, "Loaded to sample and export")
    assert "moved.txt" in box.text() and "Open…" in box.text()
    assert w.samples.generate_button.isEnabled() and not w.panel.start.isEnabled()


def test_a_batch_too_big_for_the_memory_cannot_start(make_window, qtbot, monkeypatch):
    import psutil

    w = make_window()
    train_to_end(w, qtbot, iters=20)
    tiny(w, batch=64)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=2 * 10**6))
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    [box] = boxes(w, "Cannot start training")
    assert "lower the batch size to" in box.text() and box.detailedText() == ""
    box.accept()
    # refused before anything was torn down: the finished run is still there, to sample and export
    assert w.state == FINISHED and len(w.store) == 20 and w.panel.export.isEnabled()
    assert w.panel.start.isEnabled()


def test_a_checkpoint_whose_text_is_not_here_loads_to_sample_and_export(
    make_window, qtbot, monkeypatch, corpus_file, tmp_path
):
    """A checkpoint someone sent: its text stayed on their machine. It was refused, blaming
    the built-in text, whose characters the model does not know."""
    from engine.default_corpus import NAME as BUILTIN_NAME

    w = make_window()
    train_to_end(w, qtbot, iters=10)
    final = w.run_info.run_dir / "checkpoints" / "final.safetensors"
    moved = corpus_file.rename(tmp_path / "elsewhere.txt")
    w.load_corpus(None)
    qtbot.waitUntil(lambda: w.corpus is not None and w.corpus.name == BUILTIN_NAME, timeout=10_000)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(final), ""))
    qtbot.mouseClick(w.panel.load, Qt.MouseButton.LeftButton)
    title = "Loaded to sample and export"
    qtbot.waitUntil(lambda: w.state == FINISHED and bool(boxes(w, title)), timeout=10_000)
    [box] = boxes(w, title)
    assert "corpus.txt" in box.text() and "open the text it was trained on (Corpus: Open…)" in box.text()
    box.accept()
    assert w.panel.corpus_label.toolTip().startswith("corpus.txt\n\nIts 50 characters")
    assert "not on this machine" in w.panel.corpus_label.text().replace("\xa0", " ")
    assert not w.panel.pause.isEnabled()  # no Continue
    qtbot.mouseClick(w.samples.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.samples.count() >= 1, timeout=10_000)
    target = tmp_path / "kept.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(target.exists, timeout=10_000)
    assert checkpoint.load(target).metadata["corpus"] == checkpoint.load(final).metadata["corpus"]
    assert not w.panel.start.isEnabled()  # nothing to train on, until a text is opened
    # loaded again while its stand-in is what the window has open: still not to train on
    qtbot.mouseClick(w.panel.load, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(boxes(w, title)), timeout=10_000)
    assert not w.panel.pause.isEnabled()
    w.save_settings()  # the next launch opens the text open before, not a path of the sender's
    assert w.settings.value("corpus") == ""
    w.load_corpus(str(moved))
    qtbot.waitUntil(w.panel.start.isEnabled, timeout=10_000)


def test_a_run_opened_after_a_model_whose_text_is_not_here_describes_itself_and_can_start(
    make_window, qtbot, monkeypatch, corpus_file, tmp_path
):
    """The Corpus box went on naming the loaded model's absent text, Start stayed off, and the
    preset list counted parameters at that text's vocabulary, against the line under it."""
    from engine.default_corpus import NAME as BUILTIN_NAME

    w = make_window()
    train_to_end(w, qtbot, iters=10)
    run = w.run_info.run_dir
    corpus_file.rename(tmp_path / "elsewhere.txt")
    w.load_corpus(None)
    qtbot.waitUntil(lambda: w.corpus is not None and w.corpus.name == BUILTIN_NAME, timeout=10_000)
    w.load_checkpoint(str(run / "checkpoints" / "final.safetensors"))
    qtbot.waitUntil(lambda: bool(boxes(w, "Loaded to sample and export")), timeout=10_000)
    boxes(w, "Loaded to sample and export")[0].accept()
    w.open_run(str(run))
    qtbot.waitUntil(lambda: w.corpus is not None and w.corpus.name == BUILTIN_NAME, timeout=10_000)
    assert "not on this machine" not in w.panel.corpus_label.text().replace("\xa0", " ")
    assert w.panel.start.isEnabled()
    count = w.panel.preset.currentText().rsplit(" ", 1)[1]  # "tiny: 1 × 64, 45K"
    assert f"({count})" in w.panel.model_label.text()  # the run's model, at its vocabulary of 50


def test_a_checkpoint_from_before_the_limits_loads_with_its_settings_in_the_fields_reach(
    make_window, qtbot, corpus_file, tmp_path
):
    """A seed or total past what a 32-bit field holds (an older command line allowed them) raised
    OverflowError in the middle of showing the run, which then showed stale settings."""
    w = make_window()
    corpus = Corpus.from_file(corpus_file)
    past = 3_000_000_000  # 2**31 is 2,147,483,648
    train = dataclasses.replace(PRESETS["tiny"].train, batch_size=2, seed=past, max_iters=past)
    trainer = Trainer(PRESETS["tiny"].model_for(corpus.vocab_size), train, corpus)
    trainer.step()
    old = checkpoint.save(trainer, tmp_path / "old.safetensors")
    trainer.close()
    w.open_path(str(old))
    qtbot.waitUntil(lambda: w.state == PAUSED, timeout=10_000)
    assert w.panel.seed.value() == w.panel.seed.maximum() and w.panel.batch.value() == 2
    assert w.iter_label.text() == "iter 1 / 3,000,000,000" and w.windowTitle().startswith("0 % · paused")


def test_a_checkpoint_whose_text_was_edited_since_loads_to_sample(make_window, qtbot, corpus_file):
    """Its text now holds characters the model never saw: it was refused, even to sample from."""
    w = make_window()
    train_to_end(w, qtbot, iters=5)
    final = w.run_info.run_dir / "checkpoints" / "final.safetensors"
    with corpus_file.open("a", encoding="utf-8") as f:
        f.write("§ ¶\n")
    w.load_corpus(None)  # the built-in text, which the model cannot read either
    qtbot.waitUntil(lambda: w.corpus is not None and w.corpus.name != "corpus.txt", timeout=10_000)
    w.open_path(str(final))
    title = "Loaded to sample and export"
    qtbot.waitUntil(lambda: bool(boxes(w, title)), timeout=10_000)
    assert "characters not in the model's vocabulary: '§' (U+00A7) '¶' (U+00B6)" in boxes(w, title)[0].text()
    assert w.samples.generate_button.isEnabled() and not w.panel.pause.isEnabled()


def test_a_checkpoint_too_big_to_train_here_loads_to_sample_and_export(
    make_window, qtbot, monkeypatch, tmp_path
):
    from engine import memory

    w = make_window()
    tiny(w, iters=500)
    train_then_pause(w, qtbot, at=10)
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    k = last_iter(w)
    final = w.run_info.run_dir / "checkpoints" / "final.safetensors"
    monkeypatch.setattr(memory, "available_memory", lambda: 10**6)  # as on a machine far smaller
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(final), ""))
    qtbot.mouseClick(w.panel.load, Qt.MouseButton.LeftButton)
    title = "Loaded to sample and export"
    qtbot.waitUntil(lambda: w.state == PAUSED and bool(boxes(w, title)), timeout=10_000)
    [box] = boxes(w, title)
    assert "not train on: training at batch 4 needs about" in box.text()
    box.accept()
    # no Resume, by button or key; Generate sample and Export work
    assert not w.panel.pause.isEnabled()
    w.pause_action.trigger()
    qtbot.wait(200)
    assert w.state == PAUSED
    qtbot.mouseClick(w.samples.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.samples.count() >= 1, timeout=10_000)
    assert f"iter {k}" in w.samples.text.toPlainText().splitlines()[0]
    target = tmp_path / "kept.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(target.exists, timeout=10_000)
    assert checkpoint.load(target).iteration == k
    # Stop ends it without evaluating (a batch it has no room for), and, as it trained nothing,
    # without a run folder (the model is in its checkpoint); Continue stays off
    evaluated: list[int] = []
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: evaluated.append(1) or 0.0)
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    assert not evaluated and not w.run_info.run_dir.exists()
    assert not boxes(w, "Training failed") and not w.panel.pause.isEnabled()
    # with the memory back, a new run trains as usual
    monkeypatch.undo()
    train_to_end(w, qtbot, iters=20)
    assert w.panel.pause.text() == "Continue"
    w.panel.iters.setValue(30)
    assert w.panel.pause.isEnabled()


def test_a_final_checkpoint_that_cannot_be_written_leaves_the_model_to_export(
    make_window, qtbot, tmp_path, monkeypatch
):
    real_save = checkpoint.save

    def disk_full(trainer, path, run_dir=None):
        if Path(path).name == "final.safetensors":
            raise checkpoint.CheckpointError(f"cannot write {path}: no space left on device")
        return real_save(trainer, path, run_dir)

    monkeypatch.setattr(checkpoint, "save", disk_full)
    w = make_window()
    tiny(w, iters=12)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    # the message comes just before the state: wait for both
    qtbot.waitUntil(
        lambda: w.state == FINISHED and bool(boxes(w, "Final checkpoint not saved")), timeout=20_000
    )
    [box] = boxes(w, "Final checkpoint not saved")
    assert "no space left" in box.text() and "Export checkpoint…" in box.text()
    box.accept()
    assert w.panel.export.isEnabled()
    target = tmp_path / "elsewhere.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(target.exists, timeout=10_000)
    assert checkpoint.load(target).iteration == 12


def test_a_finished_run_continues_to_a_larger_total(make_window, qtbot, monkeypatch):
    w = make_window()
    train_to_end(w, qtbot, iters=20)
    first = w.run_info.run_dir
    assert w.panel.pause.text() == "Continue"
    assert not w.panel.pause.isEnabled()  # until the total is raised past iteration 20
    w.panel.iters.setValue(35)
    assert w.panel.pause.isEnabled()
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == FINISHED and last_iter(w) == 35, timeout=20_000)
    assert list(w.store["iter"]) == list(range(1, 36))  # one curve on, no gap and no restart
    second = w.run_info.run_dir
    assert second != first and w.iter_label.text() == "iter 35 / 35"
    assert first.name.endswith("_tiny") and second.name.endswith("_tiny")  # folders named by preset
    assert checkpoint.load(second / "checkpoints" / "final.safetensors").iteration == 35
    config = json.loads((second / "config.json").read_text())
    assert config["continued_from"] == str(first) and config["preset"] == "tiny"  # by the model's shape
    assert w.panel.pause.text() == "Continue" and not w.panel.pause.isEnabled()
    assert "raise Iterations" in w.panel.pause.toolTip()  # how to enable it, through every state
    assert w.windowTitle() == "100 % · finished — CharGPT Studio"  # in the taskbar too
    # later, the continued run's checkpoint shows the curves of both runs
    later = make_window()
    final = second / "checkpoints" / "final.safetensors"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(final), ""))
    qtbot.mouseClick(later.panel.load, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: later.state == FINISHED, timeout=10_000)
    assert list(later.store["iter"]) == list(range(1, 36))
    assert later.run_info.history == []  # in the store's columns, not kept as dicts as well


def test_a_continue_that_cannot_make_its_run_folder_leaves_the_model_to_continue_later(
    make_window, qtbot, monkeypatch
):
    """A full disk at Continue failed the run: the model stayed, but Continue was gone for good."""
    import app.main_window
    from engine.runlog import RunLogError

    w = make_window()
    train_to_end(w, qtbot, iters=20)
    real = app.main_window._session_in_new_folder

    def full(*args, **kwargs):
        raise RunLogError("cannot write the run folder runs/x: No space left on device")

    monkeypatch.setattr(app.main_window, "_session_in_new_folder", full)
    w.panel.iters.setValue(35)
    w.pause_action.trigger()  # Continue
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot train on")), timeout=10_000)
    [box] = boxes(w, "Cannot train on")
    assert "No space left on device" in box.text() and not box.detailedText()  # no traceback
    assert w.state == FINISHED and last_iter(w) == 20
    assert w.panel.pause.text() == "Continue" and w.panel.pause.isEnabled()
    monkeypatch.setattr(app.main_window, "_session_in_new_folder", real)  # space freed
    w.pause_action.trigger()
    qtbot.waitUntil(lambda: w.state == FINISHED and last_iter(w) == 35, timeout=20_000)


def test_a_checkpoint_loads_to_sample_and_export_where_no_run_folder_can_be_made(
    make_window, qtbot, monkeypatch
):
    """With the runs folder read-only or full, Load checkpoint… refused the model altogether."""
    import app.main_window
    from engine.runlog import RunLogError

    w = make_window()
    train_to_end(w, qtbot, iters=20)
    final = w.run_info.run_dir / "checkpoints" / "final.safetensors"

    def read_only(*args, **kwargs):
        raise RunLogError("cannot create the run folder runs/y: Read-only file system")

    monkeypatch.setattr(app.main_window, "_session_in_new_folder", read_only)
    later = make_window()
    later.load_checkpoint(str(final))
    qtbot.waitUntil(lambda: later.state == FINISHED, timeout=10_000)
    [box] = boxes(later, "Loaded to sample and export")
    assert "Read-only file system" in box.text()
    assert later.run_info.run_dir is None and not later.panel.pause.isEnabled()
    assert later.samples.generate_button.isEnabled() and later.panel.export.isEnabled()
    # not "Training a new model": it has no run folder to have come from
    assert later.statusBar().currentMessage() == "Loaded at iteration 20: to sample from and export"


def test_continue_is_offered_only_while_the_other_settings_are_the_models(make_window, qtbot, tmp_path):
    w = make_window()
    train_to_end(w, qtbot, iters=20)
    w.panel.iters.setValue(35)
    assert w.panel.pause.isEnabled()
    # a setting the model cannot take is for a new run: Continue would silently ignore it
    w.panel.lr.setValue(0.01)
    assert not w.panel.pause.isEnabled() and w.panel.start.isEnabled()
    w.panel.lr.setValue(0.003)
    assert w.panel.pause.isEnabled()
    w.panel.preset.setCurrentIndex(w.panel.preset.findData("small"))
    assert not w.panel.pause.isEnabled()
    tiny(w, iters=35)
    assert w.panel.pause.isEnabled()
    other = tmp_path / "other.txt"
    other.write_text("zebra quagga okapi\n" * 40, encoding="utf-8")
    w.load_corpus(str(other))
    qtbot.waitUntil(lambda: "other.txt" in w.panel.corpus_label.toolTip(), timeout=10_000)
    assert not w.panel.pause.isEnabled()


def test_a_stopped_run_continues_with_f6(make_window, qtbot):
    w = make_window()
    train_then_stop(w, qtbot, iters=60)
    stopped_at = last_iter(w)
    assert stopped_at < 60 and w.panel.pause.text() == "Continue" and w.panel.pause.isEnabled()
    # no validation loss taken at Stop: it would be on no plot, yet make this the best checkpoint
    assert not (w.run_info.run_dir / "checkpoints" / "best.safetensors").exists()
    assert (w.run_info.run_dir / "checkpoints" / "final.safetensors").exists()
    w.pause_action.trigger()  # F6
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=20_000)
    assert list(w.store["iter"]) == list(range(1, 61))


def test_the_eta_goes_by_the_wall_time_per_iteration_evaluations_and_all(make_window, qtbot, monkeypatch):
    """It went by the median step alone, which leaves out evaluations, samples and checkpoints:
    a fifth to a third short."""
    from app.metrics_store import Pace
    from engine.config import format_duration

    monkeypatch.setattr(Pace, "seconds_per_iteration", lambda self: 2.0)
    w = make_window()
    tiny(w, iters=100_000)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: w.eta_label.text() == f"ETA {format_duration(2.0 * (100_000 - last_iter(w)))}", timeout=20_000
    )


def test_status_bar_paths_show_the_home_folder_as_a_tilde():
    assert _short(Path.home() / "runs" / "a") == "~/runs/a"
    assert _short("/elsewhere/a") == "/elsewhere/a"


def test_compare_with_another_run_draws_its_loss_and_a_folder_that_is_not_a_run_says_so(
    make_window, qtbot, tmp_path, monkeypatch
):
    from engine.runlog import RunLog

    run = tmp_path / "tiny-run"
    with RunLog(run) as log:
        log.write_config({"model": PRESETS["tiny"].model_for(65).to_dict(), "train": {"max_iters": 50}})
        for i in range(1, 51):
            log.append({"iter": i, "loss": 4.0 - i / 50})
    w = make_window()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run))
    w.compare_action.trigger()  # View → Compare with run…
    qtbot.waitUntil(lambda: w.plots.loss_reference is not None, timeout=10_000)
    assert list(w.plots.loss_reference.xData) == list(range(1, 51))
    assert "tiny · tiny-run" in [label.text for _, label in w.plots.loss_plot.legend.items]
    assert w.clear_compare_action.isEnabled()
    w.clear_compare_action.trigger()
    assert w.plots.loss_reference is None and not w.clear_compare_action.isEnabled()

    other = tmp_path / "other-text"
    with RunLog(other) as log:
        log.write_config({"model": {}, "train": {}, "corpus": {"name": "poems.txt", "sha256": "0" * 64}})
        log.append({"iter": 1, "loss": 3.0})
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(other))
    w.compare_action.trigger()
    qtbot.waitUntil(lambda: w.plots.loss_reference is not None, timeout=10_000)
    assert any(
        label.text.endswith("other-text · another text") for _, label in w.plots.loss_plot.legend.items
    )
    assert (
        w.statusBar().currentMessage()
        == "other-text is of another text (poems.txt): its loss is not on this scale"
    )
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run))
    w.compare_action.trigger()  # one of no other text replaces it: what was said of that one goes
    qtbot.waitUntil(lambda: list(w.plots.loss_reference.xData) == list(range(1, 51)), timeout=10_000)
    assert w.statusBar().currentMessage() == ""

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path))
    w.compare_action.trigger()
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot compare with this run")), timeout=10_000)
    assert "not a run folder" in boxes(w, "Cannot compare with this run")[0].text()

    w.open_run(str(run))  # the run in the window itself: nothing to compare, and said at once
    qtbot.waitUntil(lambda: w.state == "viewing tiny-run", timeout=10_000)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run))
    w.compare_action.trigger()
    [box] = boxes(w, "Nothing to compare")
    assert "tiny-run is the run in the window" in box.text()


def test_compare_with_the_run_a_loaded_checkpoint_came_from_says_it_is_the_one_in_view(
    make_window, qtbot, monkeypatch
):
    w = make_window()
    train_to_end(w, qtbot, iters=10)
    trained = w.run_info.run_dir
    later = make_window()
    later.load_checkpoint(str(trained / "checkpoints" / "final.safetensors"))
    qtbot.waitUntil(lambda: later.state == FINISHED, timeout=10_000)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(trained))
    later.compare_action.trigger()  # its curves are in view already, from that folder
    [box] = boxes(later, "Nothing to compare")
    assert f"{trained.name} is the run in the window" in box.text()


def test_the_weights_alone_export_with_pytorch_names(make_window, qtbot, tmp_path, monkeypatch):
    w = make_window()
    train_to_end(w, qtbot, iters=15)
    full, weights = tmp_path / "full.safetensors", tmp_path / "weights.safetensors"
    for target, kind in ((full, ""), (weights, WEIGHTS_FILTER)):
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, t=target, k=kind, **kw: (str(t), k))
        qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(target.exists, timeout=10_000)
    ckpt = checkpoint.load(full)
    exported = safetensors.numpy.load_file(weights)
    assert set(exported) == {checkpoint.torch_name(n) for n in ckpt.params}
    for name, value in ckpt.params.items():
        np.testing.assert_array_equal(exported[checkpoint.torch_name(name)], value)
    with pytest.raises(checkpoint.CheckpointError):  # weights alone cannot resume
        checkpoint.load(weights)


def test_a_complete_checkpoint_without_curves_continues_only_past_its_iteration(
    make_window, qtbot, tmp_path, monkeypatch
):
    w = make_window()
    train_to_end(w, qtbot, iters=12)
    alone = tmp_path / "elsewhere" / "done.safetensors"  # outside any run folder
    alone.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(alone), ""))
    qtbot.mouseClick(w.panel.export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(alone.exists, timeout=10_000)
    run = w.run_info.run_dir
    w.close()
    shutil.rmtree(run)  # and the run it recorded is gone: no history
    later = make_window()
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(alone), ""))
    qtbot.mouseClick(later.panel.load, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: later.state == FINISHED, timeout=10_000)
    assert len(later.store) == 0 and later.panel.iters.value() == 12
    assert later.iter_label.text() == "iter 12 / 12"
    assert later.progress.value() == later.progress.maximum()  # not 0 of 12
    assert later.windowTitle().startswith("100 %")
    assert later.panel.pause.text() == "Continue" and not later.panel.pause.isEnabled()
    later.panel.iters.setValue(20)
    qtbot.mouseClick(later.panel.pause, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: later.state == FINISHED and last_iter(later) == 20, timeout=20_000)
    assert list(later.store["iter"]) == list(range(13, 21))


def _helper_processes() -> list[psutil.Process]:
    """This process's training helpers (engine.parallel) that are still running."""
    alive = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "engine.parallel" in " ".join(child.cmdline()):
                alive.append(child)
    return alive


def start_split(window: MainWindow, qtbot, *, iters: int) -> None:
    """Start a run that splits its batch across this process and one helper."""
    p = window.panel
    p.preset.setCurrentIndex(p.preset.findData("small"))  # big enough at batch 16 to split on two
    p.batch.setValue(16)
    p.iters.setValue(iters)
    p.threads.setValue(2)
    qtbot.mouseClick(p.start, Qt.MouseButton.LeftButton)


def test_a_run_that_ends_lets_its_helper_processes_go_and_continue_brings_them_back(make_window, qtbot):
    w = make_window()
    p = w.panel
    start_split(w, qtbot, iters=6)
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=30_000)
    qtbot.waitUntil(lambda: not _helper_processes(), timeout=10_000)  # the model alone stays
    p.threads.setValue(1)
    p.threads.setValue(2)  # a count for the run to come: no helpers for a model only shown
    qtbot.wait(300)
    assert not _helper_processes()
    p.iters.setValue(400)
    qtbot.mouseClick(p.pause, Qt.MouseButton.LeftButton)  # Continue, on two processes again
    qtbot.waitUntil(lambda: w.state == TRAINING and len(_helper_processes()) == 1, timeout=20_000)
    qtbot.mouseClick(p.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=20_000)
    qtbot.waitUntil(lambda: not _helper_processes(), timeout=10_000)


def test_a_checkpoint_loaded_mid_run_waits_to_train_before_it_starts_helpers_or_a_folder(make_window, qtbot):
    first = make_window()
    start_split(first, qtbot, iters=500)
    qtbot.waitUntil(lambda: last_iter(first) >= 2, timeout=30_000)
    qtbot.mouseClick(first.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: first.state == STOPPED, timeout=20_000)
    stopped_at, origin = last_iter(first), first.run_info.run_dir
    first.close()
    w = make_window()
    train_to_end(w, qtbot, iters=5)  # one thread in force before the load
    w.open_run(str(w.run_info.run_dir))  # and no worker to take the next count
    qtbot.waitUntil(lambda: w.state.startswith("viewing"), timeout=10_000)
    w.panel.threads.setValue(2)
    w.load_checkpoint(str(origin / "checkpoints" / "final.safetensors"))
    qtbot.waitUntil(lambda: w.state == PAUSED and w._threads_in_force == 2, timeout=10_000)
    assert not _helper_processes()  # loaded to sample from, maybe: no second process yet
    assert not w.plots._thread_marks  # the count this run starts with is no change
    assert w.shown_run_dir() == origin  # the model is there; its new folder holds nothing yet
    qtbot.mouseClick(w.panel.pause, Qt.MouseButton.LeftButton)  # Resume: now it trains on two
    qtbot.waitUntil(lambda: len(_helper_processes()) == 1 and last_iter(w) > stopped_at, timeout=20_000)
    assert w.shown_run_dir() == w.run_info.run_dir != origin
    qtbot.mouseClick(w.panel.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=20_000)


def test_menu_items_and_their_shortcuts_can_do_what_their_buttons_can(make_window, qtbot):
    w = make_window()
    tiny(w)
    w.start_action.trigger()  # F5
    assert not w.start_action.isEnabled()  # while the run is built: a second F5 started another
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=20_000)
    assert not w.open_corpus_action.isEnabled()  # Ctrl+O mid-run relabelled the running model
    assert not w.load_action.isEnabled() and w.stop_action.isEnabled()
    w.stop_action.trigger()
    qtbot.waitUntil(lambda: w.state == STOPPED, timeout=10_000)
    assert w.start_action.isEnabled() and w.open_corpus_action.isEnabled() and w.load_action.isEnabled()
    assert [p.name for p in runs_dir().iterdir()] == [w.run_info.run_dir.name]  # one run, one folder


def test_a_run_followed_in_the_window_shows_its_samples_as_they_are_written(make_window, qtbot, tmp_path):
    log = RunLog(tmp_path / "live")
    log.write_config({"model": PRESETS["tiny"].model_for(40).to_dict(), "train": {"max_iters": 1000}})
    for i in range(1, 501):
        log.append({"iter": i, "loss": 3.0})
    log.add_sample(500, "first words")
    w = make_window()
    w.panel.preset.setCurrentIndex(w.panel.preset.findData("small"))
    w.open_run(str(tmp_path / "live"))
    qtbot.waitUntil(lambda: plotted(w) == 500 and w.samples.count() == 1, timeout=10_000)
    # its config holds one training setting: the others would show as defaults, as if its own
    assert w.panel.preset_name() == "small"
    for i in range(501, 1001):  # as chargpt train goes on writing it
        log.append({"iter": i, "loss": 2.0})
    log.add_sample(1000, "later words")
    qtbot.waitUntil(lambda: w.samples.count() == 2, timeout=10_000)
    assert w.samples.text.toPlainText().splitlines()[1] == "later words"  # newest first
    log.close()


def test_a_text_too_short_for_any_model_is_refused_when_opened_and_one_too_short_for_this_one_at_start(
    make_window, qtbot, tmp_path
):
    w = make_window()
    good = w.corpus
    short = tmp_path / "short.txt"
    short.write_text("ten chars!", encoding="utf-8")
    w.load_corpus(str(short))
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot use this corpus")), timeout=10_000)
    [box] = boxes(w, "Cannot use this corpus")
    assert (
        "10 characters" in box.text() and "tiny, the model with the shortest context, reads 32" in box.text()
    )
    assert w.corpus is good
    box.accept()
    fifty = tmp_path / "fifty.txt"
    fifty.write_text("abcde" * 10, encoding="utf-8")
    w.load_corpus(str(fifty))
    qtbot.waitUntil(lambda: "fifty.txt" in w.panel.corpus_label.toolTip(), timeout=10_000)
    w.panel.preset.setCurrentIndex(w.panel.preset.findData("small"))  # context 64
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    [box] = boxes(w, "Cannot start training")
    assert "fewer than the context 64" in box.text() and "a preset with a shorter context" in box.text()
    assert w.state == IDLE and w.run_info is None


def test_help_explains_the_plots_without_blocking_the_window(make_window, qtbot):
    w = make_window()
    help_menu = next(m for m in w.menuBar().findChildren(QMenu) if m.title() == "&Help")
    [action] = [a for a in help_menu.actions() if "plots" in a.text()]
    assert action.shortcut() == QKeySequence(QKeySequence.StandardKey.HelpContents)  # F1
    action.trigger()
    [box] = boxes(w, "Reading the plots")
    for term in ("uniform guess", "validation", "step time", "arena", "RSS", "Temperature"):
        assert term in box.text()
    assert QApplication.activeModalWidget() is None  # the window stays in use beside it
    action.trigger()  # again: the one there is comes to the front
    assert boxes(w, "Reading the plots") == [box]


def test_a_prompt_the_model_cannot_read_is_refused_with_the_characters(make_window, qtbot):
    w = make_window()
    train_to_end(w, qtbot, iters=10)
    w.samples.prompt.setText("☺ and ☂")
    w.sample_action.trigger()
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot sample")), timeout=10_000)
    [box] = boxes(w, "Cannot sample")
    assert "'☺'" in box.text() and "'☂'" in box.text()
    assert not w.statusBar().currentMessage()  # "Generating a sample…" stayed behind the refusal
    assert w.samples.count() == 1  # the run's last, alone


def test_with_another_text_opened_sampling_and_export_name_the_model_they_use(
    make_window, qtbot, tmp_path, monkeypatch
):
    w = make_window()
    train_to_end(w, qtbot, iters=10)
    assert w.samples.generate_button.text() == "Generate sample"
    greek = tmp_path / "greek.txt"
    greek.write_text("αβγ δεζ ηθι κλμ νξο πρσ τυφ χψω\n" * 40, encoding="utf-8")
    w.load_corpus(str(greek))
    qtbot.waitUntil(lambda: w.corpus is not None and w.corpus.name == "greek.txt", timeout=10_000)
    assert w.panel.corpus_label.toolTip().endswith("⏎␣αβγδεζηθικλμνξοπρστυφχψω")  # its characters
    # the model in memory is the finished run's, on corpus.txt: its button says so
    assert w.samples.generate_button.text() == "Generate sample · model trained on corpus.txt"
    w.samples.prompt.setText("αβγ")
    w.sample_action.trigger()
    qtbot.waitUntil(lambda: bool(boxes(w, "Cannot sample")), timeout=10_000)
    [box] = boxes(w, "Cannot sample")
    assert "The model in memory was trained on corpus.txt. greek.txt, which is open" in box.text()
    titles = []
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda _w, title, *a: (titles.append(title), ("", ""))[1]
    )
    w.export_action.trigger()
    assert titles == ["Export the model trained on corpus.txt"]
    tiny(w, iters=5)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)  # a model of greek.txt now
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=20_000)
    assert w.samples.generate_button.text() == "Generate sample"


def test_a_new_runs_message_names_its_folder_and_goes_when_the_run_ends(make_window, qtbot):
    w = make_window()
    tiny(w, iters=20)
    qtbot.mouseClick(w.panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.statusBar().currentMessage().startswith("Training a new model"), timeout=10_000)
    assert w.statusBar().currentMessage().endswith(f"run folder {w.run_info.run_dir.name}")
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=20_000)
    assert not w.statusBar().currentMessage()  # it said "training" still


def test_a_learning_rate_still_being_typed_is_the_one_f5_starts_with(make_window, qtbot):
    w = make_window()
    tiny(w, iters=20)
    w.panel.lr.lineEdit().selectAll()
    qtbot.keyClicks(w.panel.lr.lineEdit(), "0.0005")  # no Enter, and the field keeps the focus
    w.start_action.trigger()  # F5
    qtbot.waitUntil(lambda: w.run_info is not None, timeout=10_000)
    assert w.run_info.train_cfg.lr == 0.0005


def finished_run_loaded(make_window, qtbot):
    """A fresh window that loaded the final checkpoint of a finished 20-iteration run."""
    first = make_window()
    train_to_end(first, qtbot, iters=20)
    final = first.run_info.run_dir / "checkpoints" / "final.safetensors"
    first.close()
    w = make_window()
    w.load_checkpoint(str(final))  # finished: to sample from, or to continue
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=10_000)
    return w


def test_a_checkpoint_copied_out_of_its_run_folder_loads_with_the_curves_that_led_to_it(
    make_window, qtbot, tmp_path
):
    """Exported to the desktop for the next lesson, it loaded with empty plots."""
    first = make_window()
    train_to_end(first, qtbot, iters=20)
    copy = tmp_path / "lesson.safetensors"
    shutil.copyfile(first.run_info.run_dir / "checkpoints" / "final.safetensors", copy)
    first.close()
    w = make_window()
    w.load_checkpoint(str(copy))
    qtbot.waitUntil(lambda: w.state == FINISHED, timeout=10_000)
    assert list(w.store["iter"]) == list(range(1, 21))


def test_a_loaded_checkpoint_continued_keeps_the_curves_of_the_run_it_came_from(make_window, qtbot):
    w = finished_run_loaded(make_window, qtbot)
    w.panel.iters.setValue(30)
    w.pause_action.trigger()  # Continue
    qtbot.waitUntil(lambda: w.state == FINISHED and last_iter(w) == 30, timeout=20_000)
    continued = w.run_info.run_dir
    w.close()
    later = make_window()
    later.load_checkpoint(str(continued / "checkpoints" / "final.safetensors"))
    qtbot.waitUntil(lambda: later.state == FINISHED, timeout=10_000)
    assert list(later.store["iter"]) == list(range(1, 31))  # not 21-30: the loading folder is gone


def test_a_run_that_fails_lets_its_helper_processes_go(make_window, qtbot, monkeypatch):
    fail_steps(monkeypatch, RuntimeError("a bug of ours"), at=3)
    w = make_window()
    p = w.panel
    p.preset.setCurrentIndex(p.preset.findData("small"))
    p.batch.setValue(16)
    p.threads.setValue(2)
    qtbot.mouseClick(p.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.state == FAILED, timeout=30_000)
    qtbot.waitUntil(lambda: not _helper_processes(), timeout=10_000)
    assert w.panel.export.isEnabled()  # the model stays, to export


def test_a_file_dropped_while_a_run_is_built_or_trains_is_not_taken(make_window, qtbot, tmp_path):
    w = make_window()
    tiny(w)
    good = w.corpus
    text = tmp_path / "other.txt"
    text.write_text("zebra quagga okapi\n" * 40, encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(text))])
    w.start_action.trigger()
    assert w.state == "starting"
    w.dropEvent(drop_of(mime))
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=10_000)
    w.dropEvent(drop_of(mime))  # the running model's text is its own
    qtbot.wait(300)
    assert w.corpus is good and "other.txt" not in w.panel.corpus_label.toolTip()
    assert w.statusBar().currentMessage() == "Stop the run in the window before opening a file dropped on it"


def test_a_drop_that_is_not_one_file_here_says_why_and_one_on_the_prompt_opens(make_window, qtbot, tmp_path):
    w = make_window()
    two = QMimeData()
    two.setUrls([QUrl.fromLocalFile(str(tmp_path / "a.txt")), QUrl.fromLocalFile(str(tmp_path / "b.txt"))])
    drop = drop_of(two)
    w.dropEvent(drop)
    assert w.statusBar().currentMessage() == "2 files were dropped; drop one at a time"
    assert not drop.isAccepted()  # the drag's source is told it was not taken
    link = QMimeData()
    link.setUrls([QUrl("https://example.org/text.txt")])
    w.dropEvent(drop_of(link))
    assert "https://example.org/text.txt is not a file on this computer" in w.statusBar().currentMessage()
    # a file manager's drag carries the file's name as text too: the prompt took it as text
    assert not w.samples.prompt.acceptDrops()


def test_a_corpus_still_loading_when_a_run_starts_does_not_replace_the_runs_text(
    make_window, qtbot, tmp_path, monkeypatch
):
    w = make_window()
    tiny(w)
    good = w.corpus
    other = tmp_path / "other.txt"
    other.write_text("zebra quagga okapi\n" * 40, encoding="utf-8")
    read = Corpus.from_file
    monkeypatch.setattr(Corpus, "from_file", lambda path: time.sleep(1.0) or read(path))  # a big file
    w.load_corpus(str(other))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.state == TRAINING, timeout=10_000)
    qtbot.wait(1500)  # the read is done by now
    assert w.corpus is good and "other.txt" not in w.panel.corpus_label.toolTip()


def test_a_loaded_finished_checkpoint_says_what_it_is_for(make_window, qtbot):
    w = finished_run_loaded(make_window, qtbot)
    qtbot.wait(100)
    assert w.statusBar().currentMessage().startswith("Loaded at iteration 20, finished")
    assert "run folder" not in w.statusBar().currentMessage()  # a folder that goes unless it trains
    assert w._plots_caption().endswith(f" · {w.run_info.came_from.name}")  # and a picture names none


WIDE_SCREEN_CHECK = """
import json, sys
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox, QWidget
from app.main_window import message_box
app = QApplication([])
parent = QWidget()
text = ("/home/someone/notes is not a run folder (no config.json); choose a folder under runs/, "
        "where every run the window trains is kept")
box = message_box(parent, QMessageBox.Icon.Warning, "Cannot open this run", text)
box.show()
app.processEvents()
label = box.findChild(QLabel, "qt_msgbox_label")
fits = label.sizeHint().width() <= label.width() and label.heightForWidth(label.width()) <= label.height()
print(json.dumps({"screen": app.primaryScreen().size().width(), "fits": fits}))
"""


def test_a_message_shows_its_whole_text_on_a_wide_screen(tmp_path):
    """On a screen wider than 1024 pixels, a message's label was held on one line, cut off where it
    says what to do (the offscreen screen of the tests is 800 wide: this one is a laptop's)."""
    config = tmp_path / "screen.json"
    screen = {"name": "wide", "x": 0, "y": 0, "width": 1366, "height": 768, "logicalDpi": 96}
    config.write_text(json.dumps({"screens": [screen]}))
    shown = run_qt_snippet(WIDE_SCREEN_CHECK, QT_QPA_PLATFORM=f"offscreen:configfile={config}")
    assert shown == {"screen": 1366, "fits": True}
