"""A run directory: what a training run leaves behind, and how to read or follow it.

    runs/2024-05-01_13-45-12_small/
        config.json                 configs, corpus, app version, checkpoint settings
        metrics.jsonl               one JSON object per iteration, appended as training goes
        samples.txt                 the periodic samples, each under a "--- iter N ---" line
        checkpoints/
            iter_000200.safetensors periodic, the last K kept
            best.safetensors        lowest validation loss so far
            final.safetensors       where the run ended (finished or interrupted)

The window and the command line both write it; the window can open a finished run or follow
one that another process is still writing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from engine.errors import InputError, read_failure, write_failure

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.txt"
CHECKPOINTS = "checkpoints"
BEST = "best.safetensors"
FINAL = "final.safetensors"
_PERIODIC = re.compile(r"iter_(\d+)\.safetensors")


class RunLogError(InputError, ValueError):
    """A run directory that cannot be written or read; one line for a person."""


class RunFolderGone(RunLogError):
    """The run folder a follower reads is no longer where it was (moved or deleted)."""


def new_run_dir(base: Path = Path("runs"), label: str | None = None) -> Path:
    """Create and return a fresh folder under ``base`` named by the local time, then ``label``
    (the preset, say: runs/2024-05-01_13-45-12_small)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    suffix = f"_{label}" if label else ""
    for n in range(1, 1000):
        run_dir = base / (f"{stamp}{suffix}" if n == 1 else f"{stamp}-{n}{suffix}")
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            continue  # two runs started in the same second
        except OSError as e:
            why = write_failure(run_dir, e)  # the words --run-dir's failures have too
            raise RunLogError(f"cannot create the run folder {run_dir}: {why}") from None
        return run_dir
    raise RunLogError(f"cannot find a free run folder name under {base}")


def periodic_name(iteration: int) -> str:
    return f"iter_{iteration:06d}.safetensors"


def periodic_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's periodic checkpoints, oldest iteration first."""
    folder = Path(run_dir) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in folder.glob("iter_*") if (m := _PERIODIC.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def unused_run_dir(path: Path) -> Path:
    """``path``, or, where a run was written already, the first of path-2, path-3, … that
    holds none: two runs in one folder mix their records, and the second's checkpoints were
    rotated out by the first's."""

    def holds_run(folder: Path) -> bool:
        return (folder / CONFIG).exists() or (folder / METRICS).exists()

    if not holds_run(path):
        return path
    if path.name in ("", ".."):  # "." and ".." have no name to number: their siblings are beside them
        path = path.resolve()
    if not path.name:
        raise RunLogError(f"{path} holds a run already; choose a new folder for this one")
    return numbered(path, holds_run)


def numbered(path: Path, taken: Callable[[Path], bool], suffix: str = "") -> Path:
    """``path``, or the first of path-2, path-3, … (numbered before ``suffix``) not ``taken``."""
    stem = path.name.removesuffix(suffix)
    candidate, n = path, 1
    while taken(candidate):
        n += 1
        candidate = path.with_name(f"{stem}-{n}{suffix}")
    return candidate


class RunLog:
    """Writes a run directory. Metrics lines are flushed as they are written, so a
    follower sees each iteration as soon as it is logged."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / CHECKPOINTS
        # What a failed start may take away again: what this log made, and the run folder if
        # it held nothing (new_run_dir's, made a moment ago, or an empty one given with
        # --run-dir, whose loss is none). A folder with anything of a person's in it stays.
        self._made = [p for p in (self.run_dir, self.checkpoints, self.run_dir / METRICS) if not p.exists()]
        if self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
            self._made.insert(0, self.run_dir)
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self._metrics: IO[str] = (self.run_dir / METRICS).open("a", encoding="utf-8")
        except OSError as e:
            self._undo_start()
            raise RunLogError(self._cannot_write(e)) from None

    @property
    def best_path(self) -> Path:
        return self.checkpoints / BEST

    @property
    def final_path(self) -> Path:
        return self.checkpoints / FINAL

    def periodic_path(self, iteration: int) -> Path:
        return self.checkpoints / periodic_name(iteration)

    def write_config(self, config: dict[str, Any]) -> None:
        """Write config.json. If it cannot be written (disk full, say), the run folder would
        be no run: what this log made is taken away again, and RunLogError says why."""
        path = self.run_dir / CONFIG
        if not path.exists():
            self._made.append(path)
        try:
            path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            with contextlib.suppress(OSError):
                self._metrics.close()
            self._undo_start()
            raise RunLogError(self._cannot_write(e, path)) from None

    def _cannot_write(self, e: OSError, path: Path | None = None) -> str:
        return f"cannot write the run folder {self.run_dir}: {write_failure(path or self.run_dir, e)}"

    def _undo_start(self) -> None:
        """Remove what this log made, newest first; a file only while empty or cut short by
        the failure (config.json), a folder only while empty."""
        for p in reversed(self._made):
            with contextlib.suppress(OSError):
                if p.name == CONFIG or (p.is_file() and not p.stat().st_size):
                    p.unlink()
                elif p.is_dir():
                    p.rmdir()

    def append(self, record: dict[str, Any]) -> None:
        """One metrics record, as one line, written whole and flushed. A value that is not a
        number (the loss of a diverging iteration) is written as null: JSON has no NaN, and
        strict parsers (a browser's, say) refuse the line that holds one."""
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self._metrics.write(json.dumps(finite, allow_nan=False) + "\n")
        self._metrics.flush()

    def add_sample(self, iteration: int, text: str) -> None:
        with (self.run_dir / SAMPLES).open("a", encoding="utf-8") as f:
            f.write(f"--- iter {iteration} ---\n{text}\n\n")

    def rotate(self, keep: int) -> list[Path]:
        """Delete all but the newest ``keep`` periodic checkpoints (0 keeps all); return the deleted."""
        if keep <= 0:
            return []
        old = periodic_checkpoints(self.run_dir)[:-keep]
        for p in old:
            p.unlink(missing_ok=True)
        return old

    def close(self) -> None:
        self._metrics.close()

    def remove_if_unused(self) -> None:
        """Remove the run folder if it holds only what this log wrote before any record:
        config.json, an empty metrics.jsonl, an empty checkpoints/. Anything else keeps it."""
        metrics = self.run_dir / METRICS
        try:
            if {p.name for p in self.run_dir.iterdir()} - {CONFIG, METRICS, CHECKPOINTS}:
                return
            if (metrics.exists() and metrics.stat().st_size) or any(self.checkpoints.iterdir()):
                return
            self.checkpoints.rmdir()
            metrics.unlink(missing_ok=True)
            (self.run_dir / CONFIG).unlink(missing_ok=True)
            self.run_dir.rmdir()
        except OSError:
            pass  # left as it is: an empty run folder is a nuisance, not a loss

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- reading ----------------------------------------------------------------------
@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    checkpoints: list[Path] = field(default_factory=list)  # every .safetensors in checkpoints/


def read_run(run_dir: str | Path) -> RunData:
    """A run directory as it is now (a half-written last metrics line is left out)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunLogError(f"run folder not found: {run_dir}; check the path")
    config_path = run_dir / CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunLogError(
            f"{run_dir} is not a run folder (no {CONFIG}); choose a folder under runs/"
        ) from None
    except OSError as e:
        raise RunLogError(_cannot_read(config_path, e)) from None
    except ValueError as e:
        raise RunLogError(_damaged(config_path, f"not JSON: {e}")) from None
    wrong = _wrong_in_config(config)
    if wrong:
        raise RunLogError(_damaged(config_path, wrong))
    follower = RunFollower(run_dir)
    records = follower.poll()
    checkpoints = sorted((run_dir / CHECKPOINTS).glob("*.safetensors"))
    return RunData(run_dir, config, records, checkpoints)


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint belongs to: the one above its checkpoints/ folder, else
    the folder it sits in."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == CHECKPOINTS else folder


def led_to(run: RunData, model: Mapping[str, Any], seed: int | None, iteration: int) -> bool:
    """Whether ``run`` can be where a model at ``iteration`` came from: the same model and seed
    (as config.json records them; a resumed run keeps its seed), at an iteration the run
    reached. A checkpoint copied into another run's folder is not that run's, and its curves
    are not the model's past."""
    reached = [r["iter"] for r in run.records if isinstance(r.get("iter"), int)]
    start = run.config.get("start_iteration", 0)
    same = run.config.get("model") == dict(model) and _seed(run.config) == seed
    return same and bool(reached) and start <= iteration <= max(reached)


def _seed(config: Mapping[str, Any]) -> int | None:
    train = config.get("train")
    return train.get("seed") if isinstance(train, dict) else None


def history(run: RunData, until: float = math.inf) -> list[dict[str, Any]]:
    """Every metrics record behind the model of ``run`` (as read) up to iteration ``until``,
    oldest first: the run's own, after those of the run it continued (config.json
    ``continued_from``, a run folder) or resumed (``resumed_from``, a checkpoint, if its folder
    ``led_to`` it), and so on back. The chain ends quietly at a folder that is gone or
    unreadable: history is shown, never needed."""
    parts: list[list[dict[str, Any]]] = []
    seen: set[Path] = set()
    current: RunData | None = run
    while current is not None and current.run_dir.resolve() not in seen:
        seen.add(current.run_dir.resolve())
        records = [r for r in current.records if r.get("iter", math.inf) <= until]
        parts.append(records)
        if records:
            until = records[0]["iter"] - 1  # the earlier run counts up to where this one began
        current = _earlier(current)
    return [r for part in reversed(parts) for r in part]


def _earlier(run: RunData) -> RunData | None:
    """The run that ``run`` continued or resumed, if it can be read (and, for a checkpoint's
    folder, led to it)."""
    continued, resumed = run.config.get("continued_from"), run.config.get("resumed_from")
    if isinstance(continued, str):
        try:
            return read_run(continued)
        except RunLogError:
            return None
    if not isinstance(resumed, str):
        return None
    # the checkpoint's folder, else the run it recorded it trained in (config.json "resumed_run")
    recorded = run.config.get("resumed_run")
    folders = [run_dir_of(resumed), *([Path(recorded)] if isinstance(recorded, str) else [])]
    start = run.config.get("start_iteration", 0)
    return first_that_led_to(folders, run.config.get("model") or {}, _seed(run.config), start)


def first_that_led_to(
    folders: list[Path], model: Mapping[str, Any], seed: int | None, iteration: int
) -> RunData | None:
    """The first of ``folders`` that holds a run that ``led_to`` the model; None if none does."""
    for folder in folders:
        try:
            run = read_run(folder)
        except RunLogError:
            continue
        if led_to(run, model, seed, iteration):
            return run
    return None


_SAMPLE_HEADER = r"^--- iter (\d+) ---\n"  # the line before each sample in samples.txt (add_sample)


def parse_samples(text: str) -> list[tuple[int, str]]:
    """(iteration, text) pairs of a samples.txt ("--- iter N ---" headers), oldest first."""
    parts = re.split(_SAMPLE_HEADER, text, flags=re.MULTILINE)[1:]
    return [(int(it), body.strip("\n")) for it, body in zip(parts[0::2], parts[1::2], strict=True)]


class RunFollower:
    """Reads ``metrics.jsonl`` and ``samples.txt`` as another process appends to them.

    ``poll()`` returns the records completed since the last call. A last line without its
    newline yet is kept back and returned once it is complete; a line that is not JSON
    (a crash mid-write, then a restart) is skipped. ``poll_samples()`` does the same for samples.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS
        self._offset = 0
        self._partial = b""
        self._samples_size = 0
        self._samples_seen = -1  # the iteration of the last sample returned

    def poll(self) -> list[dict[str, Any]]:
        """Raises RunFolderGone once the run folder is gone, and RunLogError if metrics.jsonl
        cannot be read: a follower that returned nothing then looked like a quiet run."""
        try:
            with self.path.open("rb") as f:
                f.seek(0, 2)
                size = f.tell()
                if size < self._offset:  # the file was replaced or cut: start over
                    self._offset, self._partial = 0, b""
                f.seek(self._offset)
                chunk = f.read(size - self._offset)
        except FileNotFoundError:
            if not self.run_dir.is_dir():
                raise RunFolderGone(
                    f"the run folder {self.run_dir} is gone (moved or deleted); "
                    "open the run again where it is now"
                ) from None
            return []  # not begun yet
        except OSError as e:
            raise RunLogError(_cannot_read(self.path, e)) from None
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        lines = [line for line in lines if line.strip()]
        try:  # the lines as one JSON array: one call, not one a line (0.6 s for 33k of them)
            parsed = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:  # a damaged line among them: each on its own, and that one left out
            parsed = []
            for line in lines:
                with contextlib.suppress(ValueError):
                    parsed.append(json.loads(line))
        return [record for record in parsed if _whole_record(record)]

    def poll_samples(self) -> list[tuple[int, str]]:
        """The samples written since the last call, as (iteration, text), oldest first. Each is
        written at once and ends with a blank line; the last one, if it does not yet, is being
        written (or was cut short by a crash), and is held back: the ones before it are whole.
        Raises RunLogError if samples.txt cannot be read."""
        path = self.run_dir / SAMPLES
        try:
            if path.stat().st_size == self._samples_size:
                return []
            data = path.read_bytes()
        except FileNotFoundError:
            return []  # none yet; a folder that is gone is poll()'s to say
        except OSError as e:
            raise RunLogError(_cannot_read(path, e)) from None
        self._samples_size = len(data)
        if not data.endswith(b"\n\n"):
            data = data[: _last_header(data)]
        text = data.decode("utf-8", errors="replace")
        new = [(it, body) for it, body in parse_samples(text) if it > self._samples_seen]
        if new:
            self._samples_seen = new[-1][0]
        return new


def _last_header(data: bytes) -> int:
    """Where the last "--- iter N ---" line of a samples.txt starts (0 if none)."""
    found = list(re.finditer(_SAMPLE_HEADER.encode(), data, flags=re.MULTILINE))
    return found[-1].start() if found else 0


def _cannot_read(path: Path, e: OSError) -> str:
    return f"cannot read {path}: {read_failure(path, e)}"


def _damaged(path: Path, what: str) -> str:
    return f"{path} is damaged ({what}); open another run, or put back a copy of the file"


def _wrong_in_config(config: Any) -> str | None:
    """What makes a config.json no run's settings (None if nothing): the fields readers
    use, of the wrong kind, failed as Python's own errors ("'list' object has no attribute
    'get'")."""
    if not isinstance(config, dict):
        return f"a JSON {type(config).__name__}, not an object"
    for key in ("model", "train", "corpus"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            return f"its {key} is {config[key]!r}, not an object"
    start = config.get("start_iteration", 0)
    if not is_count(start):
        return f"its start_iteration is {start!r}, not a count of 0 or more"
    return None


# The numbers of a metrics record beside its "iter" (null where one was not finite, or not
# taken); the window keeps a column of each.
METRIC_NUMBERS = (
    "loss", "val_loss", "lr", "grad_norm", "step_s", "tokens_s", "arena_in_use", "arena_reserved", "rss",
)  # fmt: skip
# More iterations than any run makes (thirty years at a millisecond each): an "iter" of 10**30
# is damage, and overflowed the plots.
_MOST_ITERATIONS = 10**12


def is_count(value: Any, most: float = math.inf) -> bool:
    """A whole number from 0 to ``most``, as JSON gives one (bool is an int to Python, but no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


def _whole_record(record: Any) -> bool:
    """Whether a metrics line is a record the readers can use: an object with a whole "iter"
    in range and numbers (or null) where numbers go. A damaged line is skipped, as a half
    written one is: one bad line must not make a long run unopenable."""
    if not isinstance(record, dict) or not is_count(record.get("iter"), _MOST_ITERATIONS):
        return False
    # exact types, not isinstance: bool is an int to Python, but no metric (and this runs
    # ten times a line of a long run's history)
    return all(type(record.get(key)) in _NUMBER_TYPES for key in METRIC_NUMBERS)


_NUMBER_TYPES = (int, float, type(None))  # JSON's numbers, and null for a number there was not
