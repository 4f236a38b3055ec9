"""Which BLAS NumPy runs on, and how many threads it uses (through threadpoolctl).

threadpoolctl asks that the limit be set on the thread that makes the BLAS calls:
the training worker owns both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from threadpoolctl import OpenBLASController, ThreadpoolController

from engine.cgroups import cpu_limit

NOT_FOUND = "not found by threadpoolctl, so the thread count cannot be set (pip install -U threadpoolctl)"


@dataclass(frozen=True)
class BlasInfo:
    library: str  # internal_api: openblas, mkl, blis, …
    version: str
    threading_layer: str
    num_threads: int
    filepath: str

    @property
    def found(self) -> bool:
        return self.library != "unknown"

    def describe(self) -> str:
        """The library, its version and threading ("openblas 0.3.27 (pthreads)"); or, where
        threadpoolctl finds none, that the thread count cannot be set and what to do."""
        if not self.found:
            return NOT_FOUND
        return f"{self.library} {self.version} ({self.threading_layer})"

    def describe_threads(self) -> str:
        """``describe()``, with the threads in force where the library was found."""
        return self.describe() + (f", {self.num_threads} threads" if self.found else "")


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    import numpy  # noqa: F401  # loads the BLAS that the controller must find

    return ThreadpoolController()


def blas_info() -> BlasInfo:
    """The first BLAS library loaded in this process, as threadpoolctl sees it now."""
    libs = [lib.info() for lib in _controller().select(user_api="blas").lib_controllers]
    if not libs:
        return BlasInfo("unknown", "", "", 1, "")
    info = libs[0]
    return BlasInfo(
        library=str(info.get("internal_api", "unknown")),
        version=str(info.get("version") or ""),
        threading_layer=str(info.get("threading_layer", "")),
        num_threads=int(info.get("num_threads", 1)),
        filepath=str(info.get("filepath", "")),
    )


def get_blas_threads() -> int:
    return blas_info().num_threads


def set_blas_threads(n: int) -> int:
    """Limit every BLAS library in the process to ``n`` threads; return the count in force."""
    if n < 1:
        raise ValueError(f"BLAS threads must be at least 1, got {n}")
    # threadpoolctl 3.8 lets only the first thread that set OpenBLAS's process-wide limit
    # set it again, for as long as that thread lives, and a Qt thread never stops counting
    # as alive: the window's next worker, or the main thread, would be ignored. One thread
    # trains at a time here, so the one asking now takes over.
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    _controller().select(user_api="blas").limit(limits=n)
    return get_blas_threads()


def cpu_count() -> int:
    """Cores this process may use: those it may run on, or fewer where a cgroup's CPU quota
    allows less time (a container started with --cpus=2 still sees all of the host's cores,
    and would start a BLAS thread, or Auto would time a count, for each)."""
    cores, limit = cores_here(), cpu_limit()
    return cores if limit is None else min(cores, limit)


def cores_here() -> int:
    """Cores this process may run on (its affinity), whatever a CPU quota allows."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ThreadTuner:
    """Chooses the thread count by timing real training iterations, and keeps checking it.

    Each candidate count runs one step that is not timed (the first sizes the arena, and the
    first on two processes starts them), then ``trials`` timed steps; the count with the
    lowest mean is kept. Small models often run slower on two threads than on one, so this
    beats always using every core.

    The best count changes with what else the machine runs: OpenBLAS threads that share their
    cores with another program wait for each other (tiny took 18 ms an iteration on two
    threads and 10 on one beside a busy process, against 9.6 and 10.8 with the machine to
    itself; in the window most steps stayed fast and some took 300 ms). So the tuner watches
    the steps on the count it chose, and times every count again (the chosen one last, so as
    to end on it) when the mean of the last ``window`` steps is ``slower`` times what it was
    after the choice, and also after ``recheck_s`` seconds of steps, since a machine that was
    busy may not be any more (an interval that doubles, up to 16 times, each time a check keeps
    the count, so that a steady machine pays for few). A check moves only to a count faster by ``margin``.
    Means, not medians: the length of a run is the sum of its steps, spikes and all.

    Drive it around each step: ``before_step()``, run the step, ``after_step(seconds)``.
    ``apply`` puts a count in force: BLAS threads by default, or ``Trainer.set_threads``,
    which may split the batch.
    """

    def __init__(
        self,
        candidates: list[int] | None = None,
        trials: int = 3,
        apply: Callable[[int], int] = set_blas_threads,
        *,
        window: int = 25,
        slower: float = 1.5,
        recheck_s: float = 120.0,
        margin: float = 0.15,
    ) -> None:
        self.apply = apply
        self.candidates = candidates or list(range(1, cpu_count() + 1))
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError("thread candidates must be positive counts")
        self.trials, self.window, self.slower, self.margin = trials, window, slower, margin
        self.recheck_s = recheck_s
        self.chosen: int | None = None if len(self.candidates) > 1 else self.candidates[0]
        # the round of timings under way: the counts still to time, the first now
        self._trying = list(self.candidates) if self.chosen is None else []
        self._warming = True  # the next step is not timed: the first on its count, or after a stop
        self.times: dict[int, list[float]] = {n: [] for n in self._trying}  # of the last round
        self._recent: list[float] = []  # steps on the chosen count since the last round
        self._settled: float | None = None  # their mean once there were ``window`` of them
        self._since = 0.0  # seconds of steps since the last round
        self._interval = recheck_s
        if self.chosen is not None:
            self.apply(self.chosen)

    @property
    def done(self) -> bool:
        """Whether the first choice is made (later checks may change it)."""
        return self.chosen is not None

    def means(self) -> dict[int, float]:
        """Each count's mean step time in the last round of timings."""
        return {n: sum(t) / len(t) for n, t in sorted(self.times.items()) if t}

    def interrupt(self) -> None:
        """Training stopped (a pause, the end of a run): its next step starts again (the arena
        sized anew, the helper processes started again) and is not timed, and a count that was
        being timed is timed afresh."""
        self._warming = True
        if self._trying:
            self.times[self._trying[0]].clear()

    def before_step(self) -> None:
        if self._trying:
            self.apply(self._trying[0])

    def after_step(self, seconds: float) -> int | None:
        """Record a step's time; return the count chosen when a round of timings ends with a
        new one (the first choice included), None otherwise."""
        if self._warming:
            self._warming = False
            return None
        if self._trying:
            n = self._trying[0]
            self.times[n].append(seconds)
            if len(self.times[n]) >= self.trials:
                self._trying.pop(0)
                self._warming = True
            return None if self._trying else self._decide()
        if self.chosen is None or len(self.candidates) == 1:
            return None
        self._recent.append(seconds)
        del self._recent[: -self.window]
        self._since += seconds
        mean = sum(self._recent) / len(self._recent)
        if len(self._recent) == self.window and self._settled is None:
            self._settled = mean
        slowed = self._settled is not None and mean > self.slower * self._settled
        if slowed or self._since >= max(self._interval, 4 * self.window * mean):
            self._trying = [*(n for n in self.candidates if n != self.chosen), self.chosen]
            self.times = {n: [] for n in self._trying}
            self._warming = True
        return None

    def _decide(self) -> int | None:
        means = self.means()
        best = min(means, key=lambda n: means[n])
        kept = self.chosen
        if kept is not None and means[best] > (1 - self.margin) * means[kept]:
            best = kept  # not faster by enough to be sure of it on a noisy machine
        changed = best != kept
        self._interval = self.recheck_s if changed else min(2 * self._interval, 16 * self.recheck_s)
        self.chosen = best
        self.apply(best)
        self._recent, self._settled, self._since = [], None, 0.0
        return best if changed else None
