"""The run's history as growable NumPy columns; no Qt, so it is tested and reused headless.

Each column is a float64 buffer that doubles when full, so appending is amortised O(1)
and the plots can hand pyqtgraph a view of the first ``n`` entries without copying.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from engine.runlog import METRIC_NUMBERS

Array = NDArray[np.float64]

# metrics.jsonl keys kept per iteration (val_loss is sparse and has columns of its own).
COLUMNS = ("iter", *(name for name in METRIC_NUMBERS if name != "val_loss"))
# Iterations in the trailing median of the step time. A median, not a mean: the odd slow
# iteration (a checkpoint written, the window repainting on a busy core) would pull a mean up
# and hide what an iteration typically costs.
STEP_MEDIAN_WINDOW = 25


class Column:
    """A float64 array that grows by doubling; ``view()`` is the filled part."""

    def __init__(self, capacity: int = 1024) -> None:
        self._buf = np.empty(capacity, dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def extend(self, values: Iterable[float]) -> None:
        new = np.fromiter(values, dtype=np.float64)
        need = self._n + len(new)
        if need > len(self._buf):
            grown = np.empty(max(need, 2 * len(self._buf)), dtype=np.float64)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : need] = new
        self._n = need

    def view(self) -> Array:
        return self._buf[: self._n]

    def clear(self) -> None:
        self._n = 0


class MetricsStore:
    """Per-iteration columns plus the sparse validation points of one run."""

    def __init__(self) -> None:
        self.columns = {name: Column() for name in COLUMNS}
        self.val_iter = Column(64)
        self.val_loss = Column(64)
        self._loss_cumsum = Column()  # running sum of finite losses, for O(n) smoothing
        self.step_median = Column()  # trailing median of step_s, kept up as rows arrive
        self._last_finite = math.nan
        self.version = 0  # bumped on every change, so a view can tell whether to redraw

    def __len__(self) -> int:
        return len(self.columns["iter"])

    def __getitem__(self, name: str) -> Array:
        return self.columns[name].view()

    def clear(self) -> None:
        derived = (self.val_iter, self.val_loss, self._loss_cumsum, self.step_median)
        for col in (*self.columns.values(), *derived):
            col.clear()
        self._last_finite = math.nan
        self.version += 1

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append metrics.jsonl records (missing keys become NaN; later iterations only)."""
        last = self["iter"][-1] if len(self) else -math.inf
        rows = [r for r in records if "iter" in r and r["iter"] > last]
        if not rows:
            return
        for name, col in self.columns.items():
            col.extend(_number(r.get(name)) for r in rows)
        vals = [r for r in rows if r.get("val_loss") is not None]
        self.val_iter.extend(r["iter"] for r in vals)
        self.val_loss.extend(_number(r["val_loss"]) for r in vals)
        base = self._loss_cumsum.view()[-1] if len(self._loss_cumsum) else 0.0
        filled = []
        for r in rows:  # a non-finite loss counts as the last finite one, so smoothing survives it
            loss = _number(r.get("loss"))
            if math.isfinite(loss):
                self._last_finite = loss
            filled.append(self._last_finite if math.isfinite(self._last_finite) else 0.0)
        self._loss_cumsum.extend(base + np.cumsum(filled))
        self.step_median.extend(_trailing_median(self["step_s"], len(rows), STEP_MEDIAN_WINDOW))
        self.version += 1

    def smoothed_loss(self, window: int) -> Array:
        """Mean of the loss over ``window`` iterations centred on each (narrower at the start,
        where fewer came before), NaN for the newest half window, whose later half is not in yet.

        A trailing mean lags: while a new model's loss falls fast, one of 50 iterations sat far
        above every point around it, and read as another, slower model. Centred, a straight
        stretch of the loss is smoothed onto itself."""
        cs = self._loss_cumsum.view()
        if window <= 1 or not len(cs):
            return self["loss"]
        n, half = len(cs), window // 2
        i = np.arange(n)
        reach = np.minimum(half, i)  # as far before as after
        hi, lo = i + reach, i - reach
        whole = hi < n
        sums = np.concatenate(([0.0], cs))  # sums[k]: the first k losses
        out = np.full(n, np.nan)
        out[whole] = (sums[hi[whole] + 1] - sums[lo[whole]]) / (2 * reach[whole] + 1)
        return out

    def smoothed_at(self, i: int, window: int) -> float:
        """``smoothed_loss(window)[i]``, from the running sums alone: the readout shows one point."""
        cs = self._loss_cumsum.view()
        if window <= 1:
            return float(self["loss"][i])
        reach = min(window // 2, i)
        if i + reach >= len(cs):
            return math.nan  # its later half is not in yet
        below = cs[i - reach - 1] if i - reach > 0 else 0.0
        return float((cs[i + reach] - below) / (2 * reach + 1))

    def index_at(self, iteration: float) -> int | None:
        """Row of the iteration nearest to ``iteration``, or None when empty."""
        iters = self["iter"]
        if not len(iters):
            return None
        i = int(np.searchsorted(iters, iteration))
        if i >= len(iters):
            return len(iters) - 1
        if i > 0 and iteration - iters[i - 1] < iters[i] - iteration:
            return i - 1
        return i

    @property
    def last_iteration(self) -> int:
        """The newest iteration held, 0 when none is."""
        it = self.last("iter")
        return 0 if math.isnan(it) else int(it)

    def last(self, name: str) -> float:
        col = self[name]
        return float(col[-1]) if len(col) else math.nan

    def median_recent(self, name: str, n: int = 50) -> float:
        col = self[name]
        return float(np.median(col[-n:])) if len(col) else math.nan


def _trailing_median(x: Array, new: int, window: int) -> Array:
    """The median of each of the last ``new`` entries of ``x`` with the ``window - 1`` before it
    (fewer at the start), NaN left out: only the new rows' windows are computed."""
    first = max(0, len(x) - new - window + 1)  # the first row a new row's window reaches
    padded = np.concatenate([np.full(first + window - 1 - (len(x) - new), np.nan), x[first:]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window of NaN only: its median is NaN
        medians: Array = np.nanmedian(sliding_window_view(padded, window), axis=1)
    return medians


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class Pace:
    """Wall-clock seconds per iteration over the last ``window`` seconds of training: what the
    ETA needs. The median step time left out evaluations, samples and checkpoints (11 % of a
    tiny run) and sat below the mean, so the ETA was a fifth to a third short, and it jumped
    with every spell of slow steps."""

    def __init__(self, window: float = 120.0) -> None:
        self.window = window
        self._marks: list[tuple[float, int]] = []  # (time, iteration reached), oldest first

    def add(self, now: float, iteration: int) -> None:
        self._marks.append((now, iteration))
        # keep one mark at or before the window's start, so that the span covers all of it
        while len(self._marks) > 2 and self._marks[1][0] <= now - self.window:
            del self._marks[0]

    def clear(self) -> None:
        """Training stopped (paused, ended): time without iterations is no pace."""
        self._marks.clear()

    def seconds_per_iteration(self) -> float:
        """NaN until the marks span some iterations."""
        if len(self._marks) < 2:
            return math.nan
        (t0, i0), (t1, i1) = self._marks[0], self._marks[-1]
        return (t1 - t0) / (i1 - i0) if i1 > i0 else math.nan
