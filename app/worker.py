"""The training worker and the background helpers: the only module that touches threads.

The worker is a QObject moved to a QThread. Its ``run`` slot drives a TrainingSession one
iteration at a time. Commands (pause, resume, stop, continue, set_threads, export, sample,
cancel_sample, quit) go through a thread-safe queue read between iterations, and between the
slices of a sample being made, because queued calls to the worker's slots would not be
delivered while it sits in its loop; an iteration's evaluation and periodic sample look at it
too, to give way to a person waiting. Pause and the idle state after a run block on the
queue's condition; nothing polls. Metrics go back to the GUI in batches about every 50 ms as
queued signals. The worker also owns the BLAS thread limit: threadpoolctl
asks that the limit be set on the thread that makes the BLAS calls.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, QTimer, Signal, Slot

from engine.blas import ThreadTuner
from engine.data import UnknownCharactersError
from engine.errors import InputError, out_of_memory

if TYPE_CHECKING:
    from engine.data import Corpus
    from engine.session import TrainingSession
    from engine.trainer import Trainer

FLUSH_S = 0.05  # metrics batch period: smooth plots without a signal per iteration
# A sample asked for is made in slices this long, with the commands read between them: 5,000
# characters of the large model take minutes, in which Pause, Stop and closing must still act.
SAMPLE_SLICE_S = 0.05
AUTO_THREADS = 0  # a thread count that means: choose by timing (engine.blas.ThreadTuner)

# Worker states, as shown in the status bar.
IDLE, TRAINING, PAUSED, STOPPED = "idle", "training", "paused", "stopped"
FINISHED, FAILED = "finished", "failed"


# -- commands --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class SetThreads:
    n: int


@dataclass(frozen=True)
class Export:
    path: Path
    weights_only: bool = False  # the parameters alone, with PyTorch names
    # the iteration in the name the window suggested, if it was kept: made the one exported
    named_at: int | None = None


@dataclass(frozen=True)
class Sample:
    prompt: str
    n_tokens: int
    temperature: float
    top_k: int | None


@dataclass(frozen=True)
class CancelSample:
    pass


@dataclass(frozen=True)
class Continue:
    """Train a finished or stopped run on to ``total`` iterations, in the session that
    ``make_session`` builds around its trainer (a new run folder), given the session before."""

    total: int
    make_session: Callable[[Trainer, TrainingSession], TrainingSession]


Command = Pause | Resume | Stop | Quit | SetThreads | Export | Sample | CancelSample | Continue
# What a person waits on: a run's evaluation or periodic sample gives way to these (see
# TrainingSession.give_way); a thread count can wait for the next iteration.
PERSON_WAITS = (Pause, Stop, Quit, Export, Sample)


def named_for(path: Path, named: int, now: int) -> Path:
    """``path``, whose name has the "-iter<named>" the window suggested (before its suffix or
    "-plots"), named for iteration ``now`` instead: what the file holds. Unless a file has that
    name: the person was asked about replacing the name they saw, not this one."""
    tag = f"-iter{named}"
    at = path.name.rfind(tag)
    rest = path.name[at + len(tag) :]
    if named == now or at < 0 or rest[:1] not in (".", "-", ""):
        return path
    renamed = path.with_name(f"{path.name[:at]}-iter{now}{rest}")
    return path if renamed.exists() else renamed


class CommandQueue:
    """A deque guarded by a condition: ``put`` from any thread, ``drain`` or ``wait`` on the worker."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: deque[Command] = deque()

    def put(self, cmd: Command) -> None:
        with self._cond:
            self._items.append(cmd)
            self._cond.notify()

    def drain(self) -> list[Command]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
        return items

    def holds(self, kinds: tuple[type, ...]) -> bool:
        """Whether a command of one of ``kinds`` waits (read without taking it)."""
        with self._cond:
            return any(isinstance(cmd, kinds) for cmd in self._items)

    def wait(self) -> list[Command]:
        """Block until at least one command arrives, then take them all."""
        with self._cond:
            while not self._items:
                self._cond.wait()
            items = list(self._items)
            self._items.clear()
        return items


# -- the worker ------------------------------------------------------------------------------
@dataclass
class _Sampling:
    """A sample asked for, being made: its characters come from ``chars`` as they are drawn."""

    cmd: Sample
    chars: Iterator[str]
    iteration: int  # of the model it samples, which does not train meanwhile
    made: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunInfo:
    """What the window shows once the worker has built its session."""

    model_cfg: Any
    train_cfg: Any
    iteration: int
    corpus: Corpus  # the text it trains on (a loaded checkpoint's may not be the window's)
    run_dir: Path | None
    came_from: Path | None  # the run folder that held the model before (TrainingSession.came_from)
    warnings: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier records of a loaded run
    cannot_train: str = ""  # why the model is here only to sample and export ("": it trains)


@dataclass
class SessionSetup:
    """What a factory builds on the worker thread: the session, warnings to show, history,
    and why it cannot train here, if so (a checkpoint whose batch the memory cannot hold)."""

    session: TrainingSession
    warnings: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    cannot_train: str = ""


SessionFactory = Callable[[], SessionSetup]


class TrainingWorker(QObject):
    """Runs a TrainingSession built by ``factory`` on its own thread (see the module doc)."""

    ready = Signal(object)  # RunInfo
    metrics = Signal(list)  # a batch of metrics.jsonl records
    sample = Signal(int, str, str)  # iteration, text, "periodic" or "on demand · <its settings>"
    state_changed = Signal(str)
    nonfinite = Signal(int, str)  # iteration, what ("the loss is nan"): training paused itself
    threads_changed = Signal(int)
    # iteration, count, by Auto: the steps after the iteration ran on a count other than before
    threads_marked = Signal(int, int, bool)
    warned = Signal(str)  # something went wrong that training survived (a checkpoint not written)
    exported = Signal(str)
    export_failed = Signal(str)
    continue_failed = Signal(str, str)  # why a Continue could not start (message, details)
    final_failed = Signal(str)  # the run ended but final.safetensors could not be written
    sample_failed = Signal(str, bool)  # why; whether for characters outside the vocabulary
    sample_progress = Signal(int, int)  # characters made, asked for: after each slice
    sample_ended = Signal()  # made, refused or cancelled: the next one may be asked for
    failed = Signal(str, str)  # one-line message, details (traceback)
    done = Signal()

    def __init__(self, factory: SessionFactory, *, threads: int, start_paused: bool = False) -> None:
        super().__init__()
        self._factory = factory
        self._threads = threads  # AUTO_THREADS: time the first iterations at each count
        self._in_force = 1  # the count asked for (Auto's choice, once it has one), applied or due
        self._applied: int | None = None  # what the trainer made of it (set_threads), in force
        self._helpers_due = False  # _in_force waits for training to start (see _apply_threads)
        self._stepped_on: int | None = None  # the count the last step ran on (threads_marked)
        self._tuner: ThreadTuner | None = None
        self._trainer: Trainer | None = None  # set on the worker thread once the run is built
        self._start_paused = start_paused
        self._cannot_train = ""  # the setup's: then Resume and Continue do nothing
        self._queue = CommandQueue()
        self._sampling: _Sampling | None = None  # the sample being made, slice by slice
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = 0.0
        self.state = IDLE  # written by the worker thread only; read for display

    # Commands: callable from any thread, applied at the next iteration boundary (or the end
    # of the sample's slice being made).
    def pause(self) -> None:
        self._queue.put(Pause())

    def resume(self) -> None:
        self._queue.put(Resume())

    def stop(self) -> None:
        self._queue.put(Stop())

    def quit(self) -> None:
        self._queue.put(Quit())

    def set_threads(self, n: int) -> None:
        self._queue.put(SetThreads(n))

    def export(self, path: str | Path, *, weights_only: bool = False, named_at: int | None = None) -> None:
        self._queue.put(Export(Path(path), weights_only, named_at))

    def request_sample(self, prompt: str, n_tokens: int, temperature: float, top_k: int | None) -> None:
        self._queue.put(Sample(prompt, n_tokens, temperature, top_k))

    def cancel_sample(self) -> None:
        self._queue.put(CancelSample())

    def continue_to(
        self, total: int, make_session: Callable[[Trainer, TrainingSession], TrainingSession]
    ) -> None:
        self._queue.put(Continue(total, make_session))

    @Slot()
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a bug of ours must not leave the thread hanging
            self._fail(e)
        finally:
            self._end_sample()  # a bug in the middle of one: the window must not wait for it
            if self._trainer is not None:
                self._trainer.close()  # its helper processes, if the batch was split
            self.done.emit()

    def _run(self) -> None:
        try:
            with np.errstate(all="ignore"):
                setup = self._factory()
        except Exception as e:  # a bad corpus or checkpoint: say so, and end the thread
            self._fail(e)
            return
        session = setup.session
        session.give_way = self._person_waits
        self._trainer = session.trainer
        self._cannot_train = setup.cannot_train
        self._announce(session, setup.warnings, setup.history)
        if session.finished:
            self._set_state(FINISHED)
        else:
            self._set_state(PAUSED if self._start_paused else TRAINING)
        self._apply_threads(self._threads)  # after the state: a finished model starts no helpers
        self._last_flush = time.monotonic()
        while True:
            busy = self.state == TRAINING or self._sampling is not None
            commands = self._queue.drain() if busy else self._queue.wait()
            for cmd in commands:
                if isinstance(cmd, Quit):
                    self._end_sample()
                    self._flush()
                    if not session.finished and self.state != FAILED:
                        # final.safetensors, quickly: we are closing. A full disk can only be
                        # suffered now; closing asked whether to export first.
                        with contextlib.suppress(InputError):
                            session.finish()
                    session.close()
                    return
                if isinstance(cmd, Continue):
                    session = self._continue(cmd, session)
                else:
                    self._apply(cmd, session)
            # Training waits for a sample being made: it is of the model at one iteration.
            if self._sampling is not None:
                self._sample_slice(session)
            elif self.state == TRAINING:
                self._step(session)

    def _announce(
        self,
        session: TrainingSession,
        warnings: list[str] | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        trainer = session.trainer
        self.ready.emit(
            RunInfo(
                trainer.model_cfg,
                trainer.train_cfg,
                trainer.iteration,
                trainer.corpus,
                session.run_dir,
                session.came_from(),
                warnings or [],
                history or [],
                self._cannot_train,
            )
        )

    def _continue(self, cmd: Continue, session: TrainingSession) -> TrainingSession:
        """The session that trains on to ``cmd.total``; ``session`` itself if that cannot be."""
        trainer = session.trainer
        if self.state not in (FINISHED, STOPPED) or cmd.total <= trainer.iteration or self._cannot_train:
            return session
        session.close()  # if it trained, finish() has closed it already
        finished_cfg = trainer.train_cfg
        trainer.extend(cmd.total)
        try:
            new = cmd.make_session(trainer, session)
        except Exception as e:  # no run folder (a full disk): the model stays, and Continue with it
            trainer.train_cfg = finished_cfg
            self.continue_failed.emit(*failure_text(e))
            return session
        new.give_way = self._person_waits
        self._announce(new)
        self._train()
        return new

    def _apply(self, cmd: Command, session: TrainingSession) -> None:
        if isinstance(cmd, Pause) and self.state == TRAINING:
            self._flush()
            if self._tuner is not None:
                self._tuner.interrupt()
            self._set_state(PAUSED)
        elif isinstance(cmd, Resume) and self.state == PAUSED and not self._cannot_train:
            self._train()
        elif isinstance(cmd, Stop) and self.state in (TRAINING, PAUSED):
            self._flush()
            self._finish(session)
            self._set_state(STOPPED)
        elif isinstance(cmd, SetThreads):
            self._apply_threads(cmd.n)
        elif isinstance(cmd, Export):
            path = cmd.path
            if cmd.named_at is not None:  # training went on while the name was chosen
                path = named_for(path, cmd.named_at, session.trainer.iteration)
            try:
                path = session.export(path, weights_only=cmd.weights_only)
            except Exception as e:  # CheckpointError, and any OSError the engine let through
                self.export_failed.emit(str(e) or type(e).__name__)
            else:
                self.exported.emit(str(path))
        elif isinstance(cmd, Sample):
            self._flush()  # the plots show the model the sample is of, while it is made
            self._end_sample()  # a new one replaces it
            trainer = session.trainer
            chars = trainer.generate_iter(cmd.prompt, cmd.n_tokens, cmd.temperature, cmd.top_k)
            self._sampling = _Sampling(cmd, chars, trainer.iteration)
        elif isinstance(cmd, CancelSample):
            self._end_sample()

    def _person_waits(self) -> bool:
        return self._queue.holds(PERSON_WAITS)

    def _sample_slice(self, session: TrainingSession) -> None:
        """Make characters of the sample for up to SAMPLE_SLICE_S; emit it once it is whole."""
        job = self._sampling
        assert job is not None
        stop_at = time.monotonic() + SAMPLE_SLICE_S
        try:
            with np.errstate(all="ignore"):
                for ch in job.chars:
                    job.made.append(ch)
                    if time.monotonic() >= stop_at:
                        self.sample_progress.emit(len(job.made), job.cmd.n_tokens)
                        return
        except ValueError as e:  # unknown characters in the prompt, a model that overflows
            self.sample_failed.emit(str(e), isinstance(e, UnknownCharactersError))
        except MemoryError as e:  # the sample is lost, not the model or its run
            self.sample_failed.emit(out_of_memory(e), False)
        else:
            cmd = job.cmd
            # how it was made, in its header: texts at 0.8 and at 0.1 look nothing alike
            how = f"on demand · temperature {cmd.temperature:g}"
            how += f" · top-k {cmd.top_k}" if cmd.top_k else ""
            self.sample.emit(job.iteration, cmd.prompt + "".join(job.made), how)
        self._end_sample()  # after what it came to: "ended" finds it in the window

    def _end_sample(self) -> None:
        """Drop the sample being made, if any, and say that none is."""
        if self._sampling is not None:
            self._sampling = None
            self.sample_ended.emit()

    def _step(self, session: TrainingSession) -> None:
        tuner = self._tuner
        try:
            if tuner is not None:
                tuner.before_step()
            with np.errstate(all="ignore"):  # a diverging run is reported by its loss, below
                report = session.step()
        except Exception as e:
            self._flush()
            self._fail(e)
            with contextlib.suppress(Exception):  # close the run log; the error is already shown
                session.finish()
            session.trainer.close()  # its helpers and arena: the model stays, to sample and export
            return
        self._buffer.append(report.record)
        it = int(report.record["iter"])
        chosen = tuner.after_step(report.record["step_s"]) if tuner is not None else None
        if chosen is not None:  # Auto's first choice, or a later one on a busier or quieter machine
            self.threads_changed.emit(chosen)
            self.threads_marked.emit(it, self._applied if self._applied is not None else chosen, True)
            self._stepped_on = self._applied
        elif tuner is None:  # Auto's trials change the count on purpose: its choice is the mark
            if self._stepped_on not in (None, self._applied):
                self.threads_marked.emit(it - 1, self._applied, False)  # this step ran on it
            self._stepped_on = self._applied
        for warning in report.warnings:
            self.warned.emit(warning)
        if report.sample is not None:
            self._flush()
            self.sample.emit(int(report.record["iter"]), report.sample, "periodic")
        if report.diverged:
            self._flush()
            self.nonfinite.emit(int(report.record["iter"]), report.diverged)
            self._set_state(PAUSED)
        elif session.finished:
            self._flush()
            self._finish(session)
            self._set_state(FINISHED)
        elif time.monotonic() - self._last_flush >= FLUSH_S:
            self._flush()

    def _finish(self, session: TrainingSession) -> None:
        """End the run with its final checkpoint. One that cannot be written (disk full) must
        not take the model with it: the run ends all the same, and the model stays to export."""
        try:
            session.finish()
        except InputError as e:  # CheckpointError: no room, no permission
            session.close()
            self.final_failed.emit(str(e))
        finally:
            # The model stays to sample and export, which need neither the helper processes nor
            # the arena of a training pass (medium: 290 MB between them); Continue brings them back.
            session.trainer.close()
            self._helpers_due = True
            if self._tuner is not None:
                self._tuner.interrupt()

    def _flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self.metrics.emit(batch)
        self._last_flush = time.monotonic()

    def _apply_threads(self, n: int) -> None:
        """On this thread, which makes the BLAS calls: the trainer may split its batch
        across ``n`` threads, or give BLAS ``n`` threads (engine Trainer.set_threads)."""
        trainer = self._trainer
        if trainer is None:
            return
        self._tuner = ThreadTuner(apply=self._trainer_threads) if n == AUTO_THREADS else None
        if self._tuner is not None and self._tuner.chosen is not None:  # one core: nothing to time
            self.threads_changed.emit(self._tuner.chosen)
            self._tuner = None
        elif self._tuner is None and self.state != TRAINING:
            # A model that is not training (loaded, paused, finished) is here to sample and export
            # until Resume or Continue: its helper processes start only then (_train).
            self._in_force = n
            self._helpers_due = True
            self.threads_changed.emit(n)
        elif self._tuner is None:
            with contextlib.suppress(ValueError):  # out of range: keep the count in force
                self.threads_changed.emit(self._trainer_threads(n))

    def _train(self) -> None:
        """Go on training, with the thread count set while the model was not training."""
        # Auto's choice, not a count it was timing when the run ended (the tuner puts that back
        # at the next step); during its first trials (no choice yet) the tuner applies its own
        n = self._in_force if self._tuner is None else self._tuner.chosen
        if self._helpers_due and n is not None:
            with contextlib.suppress(ValueError):  # out of range: keep the count in force
                self.threads_changed.emit(self._trainer_threads(n))
        self._helpers_due = False
        self._set_state(TRAINING)

    def _trainer_threads(self, n: int) -> int:
        assert self._trainer is not None
        # a model here only to sample needs no helper processes
        applied = self._trainer.set_threads(n, split=not self._cannot_train)
        self._in_force, self._applied = n, applied
        return applied

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)

    def _fail(self, e: BaseException) -> None:
        self.state = FAILED
        self.failed.emit(*failure_text(e))
        self.state_changed.emit(FAILED)


def failure_text(e: BaseException) -> tuple[str, str]:
    """(message, details) for a failure: a bad file or folder is the person's to fix, and memory
    the machine's, so the message says all; a bug keeps its traceback as the details."""
    if isinstance(e, MemoryError):
        return out_of_memory(e), ""
    details = "" if isinstance(e, InputError) else "".join(traceback.format_exception(e))
    return str(e) or type(e).__name__, details


class WorkerThread:
    """A TrainingWorker on its own QThread: start it, and shut it down by joining, never terminating."""

    def __init__(self, worker: TrainingWorker) -> None:
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName("training-worker")
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.run)
        worker.done.connect(self.thread.quit)

    def start(self) -> None:
        self.thread.start()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def shutdown(self) -> None:
        """Ask the worker to quit at the next iteration boundary (or sample slice) and join its thread."""
        self.worker.quit()
        self.thread.quit()  # ends the thread's event loop once ``run`` returns
        self.thread.wait()


# -- one-off background tasks (corpus loading, reading a run) ---------------------------------
class _Relay(QObject):
    """Carries a task's result back to the GUI thread as a queued signal."""

    succeeded = Signal(object)
    errored = Signal(str, str)

    def __init__(self, on_done: Callable[[Any], None], on_error: Callable[[str, str], None]) -> None:
        super().__init__()
        self._on_done, self._on_error = on_done, on_error
        self.succeeded.connect(self._deliver)
        self.errored.connect(self._deliver_error)

    @Slot(object)
    def _deliver(self, result: Any) -> None:
        _pending.discard(self)
        self._on_done(result)

    @Slot(str, str)
    def _deliver_error(self, message: str, details: str) -> None:
        _pending.discard(self)
        self._on_error(message, details)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self._fn, self._relay = fn, relay

    def run(self) -> None:
        try:
            result = self._fn()
        except Exception as e:
            self._relay.errored.emit(*failure_text(e))
        else:
            self._relay.succeeded.emit(result)


_pending: set[_Relay] = set()


def run_in_background(
    fn: Callable[[], Any], on_done: Callable[[Any], None], on_error: Callable[[str, str], None]
) -> None:
    """Run ``fn`` on a pool thread; call ``on_done(result)`` or ``on_error(message, details)``
    later on the GUI thread."""
    relay = _Relay(on_done, on_error)
    _pending.add(relay)
    QThreadPool.globalInstance().start(_Task(fn, relay))


def wait_for_background() -> None:
    """Join every background task (before the window goes away)."""
    QThreadPool.globalInstance().waitForDone()


class GuiThreadCollector(QObject):
    """Python's cyclic garbage collector, run on the GUI thread on a timer instead of in
    whichever thread allocates when a threshold is crossed.

    Left automatic, a collection often runs on the training worker or a background task,
    as those are the threads that allocate. If it frees a GUI object that was waiting in a
    reference cycle, Qt destroys that object on the wrong thread, and the process may crash
    later, far from the cause (once seen in the test suite). Collections here apply the same
    per-generation thresholds as automatic ones.
    """

    def __init__(self, interval_ms: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.collect)
        self._timer.start(interval_ms)

    @Slot()
    def collect(self) -> int:
        """Collect the oldest generation over its threshold, if any; the objects freed."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        over = [g for g in range(3) if counts[g] > thresholds[g]]
        return gc.collect(over[-1]) if over else 0

    def close(self) -> None:
        """Stop, and give collection back to Python."""
        self._timer.stop()
        gc.enable()
