"""Jobs that drive the real window without a person: the screenshot and the latency probe.

Both work only through the window's widgets, as a person (or a test) would, and poll its
state from a QTimer on the GUI thread, so they exercise exactly what ships.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Slot
from PySide6.QtWidgets import QApplication

from app.main_window import CORPUS_REFUSED, SAMPLE_REFUSED, MainWindow
from app.worker import FAILED, FINISHED, STOPPED, TRAINING

TICK_MS = 100
PROBE_MS = 50  # the GUI responsiveness target is stated for a 50 ms timer


class _Job(QObject):
    def __init__(self, window: MainWindow, args: argparse.Namespace) -> None:
        super().__init__()
        self.window, self.args = window, args
        self.exit_code = 1
        self.phase = "corpus"
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.tick)

    def start(self) -> None:
        w = self.window  # the corpus came through the settings (see main)
        if self.args.preset:
            w.panel.set_preset(self.args.preset)
        if self.args.threads:
            w.panel.threads.setValue(self.args.threads)
        self.timer.start()

    def corpus_ready(self) -> bool:
        """Whether the corpus is open. One that cannot be used ends the job (exit status 2) with
        the window's reason, rather than a picture or a measure of the built-in corpus, which
        the window opens instead."""
        if self.said(CORPUS_REFUSED):
            self.phase = "refused"
            self.finish(2)
            return False
        return self.window.corpus is not None and self.window.panel.start.isEnabled()

    def said(self, title: str) -> bool:
        """Whether the window shows a message box titled ``title``; if so, its first line goes
        to stderr, where the person who ran the job reads it."""
        said = [box.text() for box in self.window.messages() if box.windowTitle() == title]
        if said:
            sys.stderr.write(f"chargpt-studio: {said[0].splitlines()[0]}\n")
        return bool(said)

    def finish(self, code: int) -> None:
        self.exit_code = code
        self.timer.stop()
        self.window.close()  # joins the worker thread
        QApplication.quit()

    @Slot()
    def tick(self) -> None:
        raise NotImplementedError


class Screenshot(_Job):
    """Train a preset in the window, ask for a sample, and save the window as a PNG."""

    @Slot()
    def tick(self) -> None:
        w = self.window
        if self.phase == "corpus" and self.corpus_ready():
            if self.args.iters:
                w.panel.iters.setValue(self.args.iters)
            w.panel.start.click()
            self.phase = "train"
        elif self.phase == "train" and w.state in (FINISHED, STOPPED, FAILED):
            if w.state == FAILED:
                self._save()
                self.finish(1)
                return
            self.samples_before = w.samples.count()
            # a prompt of the corpus's own characters: one it lacks is refused, and no sample comes
            prompt = "The "
            known = set(w.corpus.tokenizer.chars) if w.corpus is not None else set()
            w.samples.prompt.setText(prompt if set(prompt) <= known else "")
            w.samples.generate_button.click()
            self.phase = "sample"
        elif self.phase == "sample" and self.said(SAMPLE_REFUSED):  # no sample will come
            self._save()
            self.finish(1)
        elif self.phase == "sample" and w.samples.count() > self.samples_before:
            iters = w.store["iter"]
            if len(iters):
                w.plots.show_values_at(float(iters[int(len(iters) * 0.8)]))  # hover readout
            self.phase, self.render_at = "render", time.monotonic() + 0.3  # let the plots redraw
        elif self.phase == "render" and time.monotonic() >= self.render_at:
            w.samples.text.setFocus()  # no spin box caught mid-edit in the picture
            self.finish(0 if self._save() else 1)

    def _save(self) -> bool:
        path = self.args.screenshot
        if not self.window.grab().save(path):  # (checked at launch: the folder went, or the disk filled)
            sys.stderr.write(f"chargpt-studio: could not write {path}; check its folder and the free space\n")
            return False
        sys.stdout.write(f"wrote {path}\n")
        return True


class LatencyProbe(_Job):
    """While the chosen preset trains, measure how late a 50 ms GUI-thread timer fires."""

    def start(self) -> None:
        super().start()
        self.probe = QTimer(self)
        self.probe.setTimerType(Qt.TimerType.PreciseTimer)
        self.probe.setInterval(PROBE_MS)
        self.probe.timeout.connect(self._on_probe)
        self.lateness: list[float] = []

    @Slot()
    def tick(self) -> None:
        w = self.window
        if self.phase == "corpus" and self.corpus_ready():
            w.panel.iters.setValue(1_000_000)
            w.panel.start.click()
            self.phase = "warmup"
        elif self.phase == "warmup" and w.state == TRAINING and len(w.store) >= 1:
            self.phase = "measure"
            self.t_end = time.monotonic() + self.args.seconds
            self.last = time.perf_counter()
            self.probe.start()
        elif self.phase == "measure" and time.monotonic() >= self.t_end:
            self.probe.stop()
            self._report()
            w.panel.stop.click()
            self.phase = "stopping"
        elif self.phase == "stopping" and w.state != TRAINING:
            self.finish(self.exit_code)
        elif w.state == FAILED:
            self.finish(1)

    @Slot()
    def _on_probe(self) -> None:
        now = time.perf_counter()
        self.lateness.append(max(0.0, (now - self.last) * 1e3 - PROBE_MS))
        self.last = now

    def _report(self) -> None:
        late = np.array(self.lateness or [np.nan])
        med, p99, worst = np.median(late), np.percentile(late, 99), np.max(late)
        step_ms = 1e3 * self.window.store.median_recent("step_s", 1000)
        ok = med < 10 and p99 < 50
        sys.stdout.write(
            f"preset {self.window.panel.preset_name()}, BLAS {self.window.threads_label.text()}, "
            f"{len(self.window.store)} iterations at {step_ms:.0f} ms/iter\n"
            f"50 ms GUI timer over {len(self.lateness)} ticks: lateness median {med:.1f} ms, "
            f"p99 {p99:.1f} ms, max {worst:.1f} ms (target: median < 10, p99 < 50): "
            f"{'met' if ok else 'MISSED'}\n"
        )
        sys.stdout.flush()
        self.exit_code = 0 if ok else 1
