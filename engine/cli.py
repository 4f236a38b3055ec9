"""The ``chargpt`` command line: train, sample, export, info (and the commands that build on them).

Exit codes: 0 done, 1 training failed (loss not finite), 2 bad input, 128 + the signal's number
when a signal stopped training (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), 141 (SIGPIPE's) when the
output was closed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

import engine
from engine import bench
from engine.blas import ThreadTuner, blas_info, cores_here, cpu_count, set_blas_threads
from engine.cgroups import cpu_limit
from engine.config import (
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    check_limits,
    format_bytes,
    format_count,
    format_duration,
    get_preset,
    plural,
    preset_of,
)
from engine.console import printable_stdout
from engine.data import Corpus
from engine.errors import InputError, out_of_memory
from engine.memory import available_memory, cgroup_room, memory_needed
from engine.parallel import ShardError

if TYPE_CHECKING:
    from engine.session import TrainingSession
    from engine.trainer import Trainer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# What ends training early, at an iteration boundary, saving where it got to: Ctrl-C, kill or a
# cancelled job, a closed terminal. Exit status 128 + the number, as a shell reports a process
# that a signal ended.
STOP_SIGNALS: dict[int, str] = {
    getattr(signal, name): told
    for name, told in (
        ("SIGINT", "interrupted"),
        ("SIGTERM", "stopped by SIGTERM"),
        ("SIGHUP", "stopped by SIGHUP"),
    )
    if hasattr(signal, name)  # (Windows has no SIGHUP)
}
SIGPIPE = getattr(signal, "SIGPIPE", 13)  # (nor SIGPIPE: the status stays a Unix tool's)
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_OUTPUT_CLOSED = 128 + SIGPIPE  # the reader went away: `chargpt train | head`


class UsageError(InputError):
    """Bad input from the person at the keyboard: printed as one line, exit 2."""


# -- shared argument groups ----------------------------------------------------
MODEL_OVERRIDES = {  # flag -> ModelConfig field
    "layers": "n_layers",
    "heads": "n_heads",
    "dims": "d_model",
    "ff": "d_ff",
    "context": "context",
}
TRAIN_OVERRIDES = {  # flag -> TrainConfig field
    "batch": "batch_size",
    "iters": "max_iters",
    "lr": "lr",
    "min_lr": "min_lr",
    "warmup": "warmup_iters",
    "weight_decay": "weight_decay",
    "clip": "grad_clip",
    "seed": "seed",
    "eval_every": "eval_interval",
    "eval_iters": "eval_iters",
    "sample_every": "sample_interval",
    "checkpoint_every": "checkpoint_interval",
}

MODEL_HELP = {
    "layers": "transformer blocks",
    "heads": "attention heads per block",
    "dims": "width of the model (d_model)",
    "ff": "width of the MLP inside each block",
    "context": "characters the model reads at a time",
}
_DEFAULTS = TrainConfig()
TRAIN_HELP = {
    "batch": "sequences per iteration",
    "iters": "iterations in all",
    "lr": "peak learning rate (brings --min-lr along in proportion)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup": "iterations of linear warmup",
    "weight_decay": "AdamW's weight decay on the matrices",
    "clip": "gradient norm to clip to (0: off)",
    "seed": "seed of the initial weights and the batches",
    # the settings no preset changes, with their defaults
    "eval_every": f"validation loss every N iterations (default: {_DEFAULTS.eval_interval}; 0: never)",
    "eval_iters": f"batches each validation averages (default: {_DEFAULTS.eval_iters})",
    "sample_every": f"a sample every N iterations (default: {_DEFAULTS.sample_interval}; 0: never)",
    "checkpoint_every": "checkpoints/iter_NNNNNN.safetensors every N iterations (default: 0, none)",
}
FIELD_FLAGS = {field: flag for flag, field in (MODEL_OVERRIDES | TRAIN_OVERRIDES).items()}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default: tiny)")
    p.add_argument(
        "--corpus",
        help="a text file: UTF-8, or UTF-16 with its byte-order mark (default: the built-in corpus)",
    )
    m = p.add_argument_group("model (overrides the preset)")
    for flag in MODEL_OVERRIDES:
        m.add_argument(f"--{flag.replace('_', '-')}", type=int, dest=flag, metavar="N", help=MODEL_HELP[flag])
    t = p.add_argument_group("training (overrides the preset)")
    for flag, field in TRAIN_OVERRIDES.items():
        kind = float if field in ("lr", "min_lr", "weight_decay", "grad_clip") else int
        t.add_argument(
            f"--{flag.replace('_', '-')}",
            type=kind,
            dest=flag,
            metavar="X" if kind is float else "N",
            help=TRAIN_HELP[flag],
        )
    p.add_argument(
        "--threads",
        default="auto",
        help="cores to train on, a number or auto (default): BLAS threads, or processes that split the batch",
    )


def load_corpus(path: str | None) -> Corpus:
    if path:
        return Corpus.from_file(path)
    from engine.default_corpus import load_default_corpus

    return load_default_corpus()


def _given(args: argparse.Namespace, overrides: dict[str, str]) -> dict[str, Any]:
    """The settings of ``overrides`` (flag -> field) that the command line gives, by field."""
    given = {field: getattr(args, flag) for flag, field in overrides.items()}
    return {field: value for field, value in given.items() if value is not None}


def build_configs(args: argparse.Namespace, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    preset = get_preset(args.preset or "tiny")
    train_kw = _given(args, TRAIN_OVERRIDES)
    try:
        model_cfg = replace(preset.model_for(vocab_size), **_given(args, MODEL_OVERRIDES))
        train_cfg = preset.train_with(**train_kw)
        check_limits(train_cfg.to_dict())
    except ConfigError as e:
        flag = FIELD_FLAGS.get(e.field)
        raise UsageError(f"--{flag.replace('_', '-')} {e.problem}" if flag else str(e)) from None
    if train_cfg.min_lr > train_cfg.lr:  # for new runs only: a checkpoint keeps what it has
        raise UsageError(
            f"--min-lr {train_cfg.min_lr:g} is above the learning rate {train_cfg.lr:g}, so the schedule "
            "would climb instead of decaying; give a --min-lr at or below --lr"
        )
    return model_cfg, train_cfg


def parse_threads(spec: str) -> int | None:
    """The count of '--threads'; None for 'auto', where the training loop times the first
    iterations at each count (ThreadTuner) and keeps the fastest."""
    if spec == "auto":
        return None
    try:
        n = int(spec)
    except ValueError:
        raise UsageError(f"--threads takes a number or 'auto', not {spec!r}") from None
    if not 1 <= n <= cpu_count():
        raise UsageError(f"--threads must be between 1 and {cpu_count()} (the cores here), got {n}")
    return n


# -- chargpt train -------------------------------------------------------------
def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from engine.checkpoint import CheckpointError
    from engine.runlog import new_run_dir, unused_run_dir
    from engine.session import TrainingSession

    stop = Stop()
    say = _printer(out, args.json, stop)
    if args.keep < 0:
        raise UsageError(f"--keep takes a number of checkpoints, 0 or more, not {args.keep}")
    if args.log_every < 0:
        raise UsageError(
            f"--log-every takes a number of iterations (0: about 20 lines), not {args.log_every}"
        )
    if args.sample_chars < 0:
        raise UsageError(f"--sample-chars takes a number of characters, 0 or more, not {args.sample_chars}")
    warnings: list[str] = []
    if args.resume:
        trainer, warnings = resume_trainer(args)
        done, total = trainer.iteration, trainer.train_cfg.max_iters
        if done >= total:  # nothing to train: no run folder of a copy
            where = (
                f"--iters {args.iters:,} is the new total, and the checkpoint is at iteration "
                f"{done:,} already"
                if args.iters
                else f"the checkpoint's run ended at iteration {done:,}"
            )
            raise UsageError(f"{where}; give a larger total with --iters ({2 * done:,}, say)")
        for warning in warnings:
            say(f"warning: {warning}")
    else:
        from engine.trainer import Trainer

        corpus = load_corpus(args.corpus)
        model_cfg, train_cfg = build_configs(args, corpus.vocab_size)
        trainer = Trainer(model_cfg, train_cfg, corpus)
    threads = parse_threads(args.threads)
    if threads:
        threads = trainer.set_threads(threads)
    model_cfg, train_cfg, corpus = trainer.model_cfg, trainer.train_cfg, trainer.corpus
    preset = preset_of(model_cfg)  # by the model's shape: --layers and the like make a model of no preset
    run_dir = unused_run_dir(Path(args.run_dir)) if args.run_dir else new_run_dir(label=preset)
    resumed_from = str(Path(args.resume).resolve()) if args.resume else None  # read from anywhere later
    session = TrainingSession(
        trainer,
        run_dir,
        checkpoint_every=train_cfg.checkpoint_interval,
        keep=args.keep,
        sample_tokens=args.sample_chars,
        extra_config={"resumed_from": resumed_from, "threads": threads or "auto"},
    )
    log_every = args.log_every or -(-train_cfg.max_iters // 20)  # about 20 lines: 50 iterations gave 25
    what = (
        f"resuming at iteration {trainer.iteration}"
        if args.resume
        else f"training {preset or 'a custom model'}"
    )
    if threads or cpu_count() == 1:  # with one core, there is nothing to choose between
        blas = (
            f"{threads} processes of 1 BLAS thread, the batch split between them"
            if trainer.helper_pids
            else plural(threads or 1, "BLAS thread")
        )
    else:
        blas = "BLAS threads chosen by timing the first iterations"
    say(
        f"{what}: {plural(model_cfg.n_layers, 'layer')} × {model_cfg.d_model}, "
        f"{format_count(model_cfg.n_params)} params, on {corpus.name} "
        f"({len(corpus.tokens):,} chars, vocab {corpus.vocab_size}), {blas}"
    )
    moved = f" ({args.run_dir} holds a run already)" if args.run_dir and run_dir != Path(args.run_dir) else ""
    say(f"run folder: {run_dir}{moved}")
    step_times: list[float] = []
    t_start = time.perf_counter()
    with stop.on_signals(), closing(trainer):  # closed however training ends: helpers, arena
        tuner = None if threads else ThreadTuner(apply=trainer.set_threads)
        try:
            with np.errstate(all="ignore"):  # a diverging run is told by its loss, in one line
                status, last_loss = run_session(
                    session, say, log_every, step_times, stop, tuner, judge_learning=not warnings
                )
        except Exception:
            _save_before_failing(session, say, args)
            raise
        # Auto's choice, not a count it was timing when the run ended
        threads = threads or (tuner.chosen if tuner is not None else None) or trainer.threads
        final, unsaved = finish_somewhere(session)
    instead = _where_saved(final, unsaved)
    if stop.signum is not None and status == 128 + stop.signum:
        closed = stop.signum == SIGPIPE
        why = f"{'output closed' if closed else STOP_SIGNALS[stop.signum]} at iteration {trainer.iteration}"
        if final is None:
            told = f"{why}, before training any: nothing to save"
        else:
            command = resume_command(args, trainer).format(final)
            told = f"{why}; {instead}\ncontinue with: {command}"
        if closed:  # with the output gone, one line on standard error, if that is still there
            _tell(told.replace("\n", "; "))
        else:
            say(told)
    if status != EXIT_OK:
        if unsaved and status == EXIT_FAILED:
            say(instead)
        return status
    if unsaved:  # the run folder lacks what a script that reads it expects: not "done"
        say(f"{instead}\ncontinue with: {resume_command(args, trainer).format(final)}")
        raise CheckpointError(f"{unsaved}; the model was saved to {final} instead")
    val_loss = session.last_val_loss
    assert val_loss is not None  # the last iteration's, which only a stop (returned above) cuts short
    wall = time.perf_counter() - t_start
    say(f"validation loss {val_loss:.4f} after {trainer.iteration} iterations ({format_duration(wall)})")
    say(f"saved {final}")
    last = session.last_sample
    if last is not None and last[0] == trainer.iteration:  # the one samples.txt ends with
        say("sample:\n" + last[1])
    else:
        from engine.trainer import NonFiniteModel

        try:
            with np.errstate(all="ignore"):
                sample = trainer.generate(
                    "", args.sample_chars, temperature=0.8, top_k=None, seed=train_cfg.seed
                )
        except NonFiniteModel as e:  # the run itself went well: its summary still follows
            say(f"no sample: {e}")
        else:
            say("sample:\n" + sample)
    if args.json:
        summary = {
            "preset": preset,
            "params": model_cfg.n_params,
            "iters": trainer.iteration,
            "train_loss": last_loss,
            "val_loss": val_loss,
            "ms_per_iter": 1e3 * float(np.median(step_times)) if step_times else None,
            "threads": threads,
            "wall_s": wall,
            "corpus": corpus.name,
            "run_dir": str(run_dir),
            "checkpoint": str(final),
            "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(),
        }
        out.write(json.dumps(summary) + "\n")
    return EXIT_OK


def run_session(
    session: TrainingSession,
    say: Callable[[str], None],
    log_every: int,
    step_times: list[float],
    stop: Stop,
    tuner: ThreadTuner | None = None,
    *,
    judge_learning: bool = True,
) -> tuple[int, float]:
    """Step until the run is done or ``stop`` is asked for, printing progress; return the exit
    status and the last training loss. ``stop`` is looked at between iterations, and by the
    iteration's evaluation and periodic sample, which it cuts short (16 s and 10 s of the
    large preset, in which Ctrl-C did nothing). Without
    ``judge_learning`` (a checkpoint resumed on another text, which may start worse than a
    guess and adapt), a loss above a uniform guess is not remarked on."""
    from engine.trainer import NOT_LEARNING_WINDOW, worse_than_a_guess

    max_iters = session.trainer.train_cfg.max_iters
    vocab = session.trainer.model_cfg.vocab_size
    settled = max(session.trainer.train_cfg.warmup_iters, session.trainer.iteration)  # and in this run
    # the last NOT_LEARNING_WINDOW losses; None when not judged, or once said
    recent: list[float] | None = [] if judge_learning else None
    loss = math.nan
    session.give_way = lambda: stop.signum is not None
    while not session.finished and stop.signum is None:
        if tuner is not None:
            tuner.before_step()
        report = session.step()
        loss, it = report.record["loss"], report.record["iter"]
        step_times.append(report.record["step_s"])
        if tuner is not None:
            first = not tuner.done
            if tuner.after_step(report.record["step_s"]):
                timings = ", ".join(f"{n}: {1e3 * t:.1f} ms" for n, t in tuner.means().items())
                now = "is" if first else "is now"  # the machine got busier, or less busy
                say(f"threads: {tuner.chosen} {now} fastest here ({timings} per iteration)")
        for warning in report.warnings:
            say(f"warning: {warning}; training goes on")
        if report.diverged:
            say(f"iter {it}: {report.diverged}; lower the learning rate (--lr) and try again")
            return EXIT_FAILED, loss
        if recent is not None and it > settled:
            recent.append(loss)
            del recent[:-NOT_LEARNING_WINDOW]
            mean = worse_than_a_guess(recent, vocab)
            if mean is not None:
                recent = None
                say(
                    f"warning: over the last {NOT_LEARNING_WINDOW} iterations the loss averaged {mean:.3g}, "
                    f"above the {math.log(vocab):.2f} of a uniform guess (ln {vocab}): the model does worse "
                    "than knowing nothing, and the learning rate (--lr) is likely too high; training goes on"
                )
        if report.val_loss is not None and it != max_iters:
            say(f"iter {it:>6}  validation loss {report.val_loss:.4f}")
        if it % log_every == 0 or it == max_iters:
            ms = 1e3 * float(np.median(step_times[-log_every:]))
            eta = ms / 1e3 * (max_iters - it)
            say(f"iter {it:>6}/{max_iters}  loss {loss:.4f}  {ms:7.2f} ms/iter  ETA {format_duration(eta)}")
    # a stop in the last iteration is one too: it cut that iteration's validation short
    return (EXIT_OK if stop.signum is None else 128 + stop.signum), loss


def resume_command(args: argparse.Namespace, trainer: Trainer) -> str:
    """The command that carries ``trainer``'s run on from a checkpoint ({} in it): to its total,
    or to twice that once it is there (stopped in its last validation, or its checkpoint saved
    elsewhere), as --resume refuses a checkpoint at its total. With the thread count given,
    since one BLAS thread is what makes a resumed run the same, bit for bit."""
    total = trainer.train_cfg.max_iters
    if trainer.iteration >= total:
        total *= 2
    threads = f" --threads {args.threads}" if parse_threads(args.threads) else ""
    return f"chargpt train --resume {{}} --iters {total}{threads}"


def _save_before_failing(
    session: TrainingSession, say: Callable[[str], None], args: argparse.Namespace
) -> None:
    """Keep the iterations done when training fails (out of memory, a helper gone): the failed
    step left the run as it was before it. ``args`` are the command's, to resume it with."""
    try:
        final, unsaved = finish_somewhere(session)
    except Exception:  # the error being raised says more than this one
        session.close()
        return
    if final is not None:
        command = resume_command(args, session.trainer).format(final)
        say(f"{_where_saved(final, unsaved)}\ncontinue with: {command}")


def _where_saved(final: Path | None, unsaved: str | None) -> str:
    """Where finish_somewhere put the final checkpoint, and why there, for the run's last line."""
    return f"{unsaved}; saved {final} instead" if unsaved else f"saved {final}"


def finish_somewhere(session: TrainingSession) -> tuple[Path | None, str | None]:
    """``session.finish()``, and why not if the final checkpoint could not go into the run
    folder (disk full, no permission, the folder gone): then it goes into the current folder,
    else the system's temp folder, under a new name that says which run and iteration it is,
    since the process is about to end and the trained model with it. The path (None if
    nothing was trained), and that failure's words or None."""
    from engine.checkpoint import CheckpointError
    from engine.runlog import numbered, periodic_name

    try:
        return session.finish(), None
    except CheckpointError as e:
        unsaved = str(e)
    assert session.run_dir is not None  # (finish writes only into a run folder)
    run = session.run_dir.name  # not resolved: a working folder that was deleted has no path
    if not run:  # --run-dir .
        with suppress(OSError):
            run = session.run_dir.resolve().name
    name = f"chargpt-{run or 'run'}-{periodic_name(session.trainer.iteration)}"
    tried = []
    for folder in _fallback_folders():
        path = numbered(folder / name, Path.exists, suffix=Path(name).suffix)  # what is there stays
        try:
            saved = session.export(path)
        except CheckpointError:
            tried.append(str(folder))
            continue
        session.close()
        return saved, unsaved
    session.close()
    raise CheckpointError(f"{unsaved}; nor could it be saved in {' or '.join(tried)}: the model is lost")


def _fallback_folders() -> list[Path]:
    folders = []
    with suppress(OSError):  # a working folder that was deleted has no path
        folders.append(Path.cwd())
    temp = Path(tempfile.gettempdir())
    return [*folders, temp] if temp not in folders else folders


def _number(value: float) -> str:
    """A setting as it was typed: 1234567 for a count (not 1.23457e+06), 0.0003 for a rate."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def resume_trainer(args: argparse.Namespace) -> tuple[Trainer, list[str]]:
    """The trainer of ``--resume CKPT``. Only settings that keep the run's arithmetic may change;
    the others may be given as the checkpoint has them, so the first command line can be reused."""
    from engine.checkpoint import RESUMABLE, CorpusNeeded, read_settings, restore

    model_cfg, train_cfg = read_settings(args.resume)
    differ = []
    if args.preset is not None:
        # the model the line describes: the preset's, with the line's --layers, --dims, ...
        try:
            described: ModelConfig | None = replace(
                get_preset(args.preset).model_for(model_cfg.vocab_size), **_given(args, MODEL_OVERRIDES)
            )
        except ConfigError:
            described = None
        if described != model_cfg:
            differ.append(
                f"--preset {args.preset} (the checkpoint's model is {preset_of(model_cfg) or 'another'})"
            )
    given: list[tuple[str, str, ModelConfig | TrainConfig]] = [
        (flag, field, model_cfg) for flag, field in MODEL_OVERRIDES.items()
    ]
    given += [(flag, field, train_cfg) for flag, field in TRAIN_OVERRIDES.items() if field not in RESUMABLE]
    for flag, field, cfg in given:
        value, held = getattr(args, flag), getattr(cfg, field)
        if value is not None and not _same(value, held):
            name = flag.replace("_", "-")
            differ.append(f"--{name} {_number(value)} (the checkpoint's is {_number(held)})")
    if differ:
        raise UsageError(
            f"{', '.join(differ)}: a resumed run keeps its checkpoint's settings; "
            "drop these, or start a new run"
        )
    overrides = {name: value for name, value in _given(args, TRAIN_OVERRIDES).items() if name in RESUMABLE}
    try:  # the settings typed (a checkpoint's own are as they were allowed when it was written)
        check_limits(overrides)
    except ConfigError as e:
        raise UsageError(f"--{FIELD_FLAGS[e.field].replace('_', '-')} {e.problem}") from None
    corpus = Corpus.from_file(args.corpus) if args.corpus else None
    try:
        return restore(args.resume, corpus, train_overrides=overrides)
    except CorpusNeeded as e:
        raise UsageError(f"{e}; give the text with --corpus FILE to resume") from None


def _same(value: float, held: float) -> bool:
    """A setting typed as a checkpoint holds it: 0.0001 for the 9.999999999999999e-05 that a
    rate computed in proportion (Preset.train_with) may hold. Whole numbers (a seed, a batch)
    are the same only when equal."""
    if isinstance(value, int) and isinstance(held, int):
        return value == held
    return math.isclose(value, held, rel_tol=1e-9, abs_tol=0.0)


class Interrupted(KeyboardInterrupt):
    """A second stop signal, while the first waits for the iteration to end: stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Stop:
    """Whether training is to stop at the next iteration boundary, where the checkpoint then
    written is whole: ``signum`` is the number of the signal that asked, None until one does."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        """Ask for the stop on behalf of ``signum``, unless it has been asked for already."""
        if self.signum is None:
            self.signum = signum

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """Meanwhile each of STOP_SIGNALS asks for the stop instead of ending the process (whose
        iterations since the last checkpoint would be lost); a second one interrupts at once. A
        signal set to be ignored stays so: `nohup` ignores SIGHUP for the run to outlive its
        terminal, and a shell ignores SIGINT in a background job."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.signum is not None:
                raise Interrupted(signum)
            self.request(signum)

        try:
            previous = {
                signum: signal.signal(signum, handler)
                for signum in STOP_SIGNALS
                if signal.getsignal(signum) != signal.SIG_IGN
            }
        except ValueError:  # not the main thread: leave the signals alone
            yield
            return
        try:
            yield
        finally:
            for signum, action in previous.items():
                signal.signal(signum, action)


def _printer(out: TextIO, to_stderr: bool, stop: Stop) -> Callable[[str], None]:
    """Progress goes to stdout, or to stderr when stdout carries JSON for a script. Once that
    stream cannot be written (``chargpt train | head``, a terminal gone), the lines are dropped
    and ``stop`` is asked for, as SIGPIPE's: the run ends at the iteration boundary, saved, as
    on Ctrl-C, with a status that does not say it is done."""
    stream = sys.stderr if to_stderr else out
    closed = False

    def say(line: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except OSError:
            closed = True
            _discard(stream)
            stop.request(SIGPIPE)

    return say


def _discard(stream: TextIO) -> None:
    """Point a stream that can no longer be written at /dev/null: what it still buffers would
    fail again as Python exits, with a message and exit status 120 instead of ours."""
    with suppress(OSError, ValueError):  # a stream of no file (a test's) has nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _tell(line: str) -> None:
    """``chargpt: line`` on standard error; nothing if that is closed too (no traceback)."""
    try:
        sys.stderr.write(f"chargpt: {line}\n")
        sys.stderr.flush()
    except OSError:
        _discard(sys.stderr)


# -- chargpt sample ------------------------------------------------------------
def cmd_sample(args: argparse.Namespace, out: TextIO) -> int:
    from engine.checkpoint import load
    from engine.trainer import generate_iter

    if args.tokens < 0:
        raise UsageError(f"--tokens must not be negative, got {args.tokens}")
    if not 0 < args.temperature < math.inf:  # inf flattened every distribution to uniform noise
        raise UsageError(f"--temperature must be a positive number, got {args.temperature}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.top_k is not None and args.top_k < 0:
        raise UsageError(f"--top-k must be 0 (every character) or more, got {args.top_k}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    ckpt = load(args.checkpoint, exported=True)  # an export of the weights samples as well
    tokenizer = ckpt.tokenizer()
    tokenizer.encode(args.prompt)  # characters outside the vocabulary: one line, exit 2
    model = ckpt.model()
    threads = parse_threads(args.threads)
    if threads:
        set_blas_threads(threads)  # sampling is one sequence: BLAS threads are all there is to use
    for i in range(args.num_samples):
        if i:
            out.write("\n---\n")
        # the first as --seed alone gives it; the others (seed, i), no other seed's first: with
        # seed + i, the second of --seed 1 was the first of --seed 2
        seed = None if args.seed is None else [args.seed, i] if i else args.seed
        out.write(args.prompt)
        out.flush()
        chars = generate_iter(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k, seed)
        with np.errstate(all="ignore"):  # a model that overflows is told in one line (NonFiniteModel)
            for ch in chars:
                out.write(ch)
                out.flush()
        out.write("\n")
    out.flush()
    return EXIT_OK


# -- chargpt export ------------------------------------------------------------
def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    from engine.checkpoint import export_weights

    path = export_weights(args.checkpoint, args.weights_only)
    out.write(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, PyTorch/nanoGPT parameter names)\n")
    return EXIT_OK


# -- chargpt info --------------------------------------------------------------
def info_dict() -> dict[str, Any]:
    b = blas_info()
    return {
        "chargpt": engine.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cores": cpu_count(),
        "cores_cgroup_limit": cpu_limit(),  # None: no CPU quota
        "blas": {
            "library": b.library,
            "version": b.version,
            "threading_layer": b.threading_layer,
            "threads": b.num_threads,
        },
        "memory_available": available_memory(),
        "memory_cgroup_room": cgroup_room(),  # None: no cgroup limit
        "presets": {
            name: {
                **p.model.to_dict(),
                "params_at_vocab_65": p.model_for(65).n_params,
                "batch_size": p.train.batch_size,
                "max_iters": p.train.max_iters,
                "lr": p.train.lr,
                "train_bytes_at_vocab_65": memory_needed(p.model_for(65), p.train),
            }
            for name, p in PRESETS.items()
        },
    }


def _limited(info: dict[str, Any]) -> str:
    """Why less memory is available than the machine has free, if a cgroup is why."""
    room = info["memory_cgroup_room"]
    return " (held there by a cgroup limit)" if room is not None and room <= info["memory_available"] else ""


def _quota(info: dict[str, Any]) -> str:
    """Why fewer cores are used than the process may run on, if a cgroup's CPU quota is why."""
    limit = info["cores_cgroup_limit"]
    return " (held there by a cgroup CPU quota)" if limit is not None and limit < cores_here() else ""


def cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    info = info_dict()
    if args.json:
        out.write(json.dumps(info, indent=2) + "\n")
        return EXIT_OK
    b = blas_info()
    out.write(
        f"chargpt {info['chargpt']}  Python {info['python']}  NumPy {info['numpy']}\n"
        f"{info['platform']}, {plural(info['cores'], 'core')}{_quota(info)}\n"
        f"BLAS: {b.describe_threads()}\n"
        f"memory: {format_bytes(info['memory_available'])} available{_limited(info)}\n\n"
        "presets (parameters, and the memory training takes, at a 65-character vocabulary):\n"
    )
    for name, p in PRESETS.items():
        m = p.model_for(65)
        out.write(
            f"  {name:<7} {plural(m.n_layers, 'layer'):<8} × {m.d_model:<4} "
            f"heads {m.n_heads:<3} ff {m.d_ff:<5}context {m.context:<4} "
            f"{format_count(m.n_params):>7} params  "
            f"batch {p.train.batch_size}, {p.train.max_iters} iters, lr {p.train.lr:g}  "
            f"{format_bytes(info['presets'][name]['train_bytes_at_vocab_65']):>7} to train\n"
        )
    return EXIT_OK


# -- entry point ---------------------------------------------------------------
Command = Callable[[argparse.Namespace, TextIO], int]
COMMANDS: dict[str, Command] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargpt", description="Train and sample character-level GPTs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {engine.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model and print its progress")
    add_config_arguments(p)
    p.add_argument(
        "--log-every",
        type=int,
        default=0,
        help="progress line every N iterations (default: about 20 lines in all)",
    )
    p.add_argument("--sample-chars", type=int, default=200, help="length of the sample at the end")
    p.add_argument("--json", action="store_true", help="end with one JSON line summing up the run")
    r = p.add_argument_group("run folder and checkpoints")
    r.add_argument("--run-dir", help="where to write the run (default: a new folder under runs/)")
    r.add_argument("--keep", type=int, default=3, help="periodic checkpoints to keep, 0 for all (default: 3)")
    r.add_argument(
        "--resume", metavar="CKPT", help="continue from a checkpoint; --iters is then the new total"
    )
    COMMANDS["train"] = cmd_train

    p = sub.add_parser("sample", help="generate text from a checkpoint, streaming it")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--prompt", default="", help="text to continue (default: none)")
    p.add_argument("--tokens", type=int, default=200, help="characters to generate (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="default: 0.8")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest only (0: all)")
    p.add_argument("--seed", type=int, default=None, help="for a reproducible sample (default: random)")
    p.add_argument("--num-samples", type=int, default=1, help="default: 1")
    p.add_argument("--threads", default="auto", help="BLAS threads: a number, or auto (default)")
    COMMANDS["sample"] = cmd_sample

    p = sub.add_parser("export", help="write a checkpoint's weights for PyTorch")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--weights-only", metavar="OUT", required=True, help="safetensors file of parameters only")
    COMMANDS["export"] = cmd_export

    bench.add_parser(sub)
    COMMANDS["bench"] = bench.cmd_bench

    p = sub.add_parser("info", help="versions, BLAS library and threads, presets")
    p.add_argument("--json", action="store_true")
    COMMANDS["info"] = cmd_info
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args, out)
    except InputError as e:
        _tell(f"error: {e}")
        return EXIT_USAGE
    except ShardError as e:
        _tell(f"error: {e}; --threads 1 trains without helper processes")
        return EXIT_FAILED
    except MemoryError as e:  # others took the memory that the check before training saw free
        _tell(f"error: {out_of_memory(e)}")
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        _tell("interrupted")
        return 128 + e.signum if isinstance(e, Interrupted) else EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`chargpt sample | head`): quietly, and not 0, which says all of
        # it was written, as a Unix tool that SIGPIPE ends reports it
        _discard(sys.stdout)
        return EXIT_OUTPUT_CLOSED


def entry() -> None:
    """The console script."""
    printable_stdout()
    sys.exit(main())


if __name__ == "__main__":
    entry()
