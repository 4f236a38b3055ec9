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
    """Chooses the thread count by timing real training iterations.

    The first step is a warm-up (it sizes the arena) and is not timed; then each
    candidate count runs ``trials`` steps, and the one with the lowest median
    step time is kept. Small models often run slower on two threads than on one,
    so this beats always using every core. Drive it around each step:
    ``before_step()``, run the step, ``after_step(seconds)``. ``apply`` puts a count in
    force: BLAS threads by default, or ``Trainer.set_threads``, which may split the batch.
    """

    def __init__(
        self,
        candidates: list[int] | None = None,
        trials: int = 3,
        apply: Callable[[int], int] = set_blas_threads,
    ) -> None:
        self.apply = apply
        self.candidates = candidates or list(range(1, cpu_count() + 1))
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError("thread candidates must be positive counts")
        self.trials = trials
        self.times: dict[int, list[float]] = {n: [] for n in self.candidates}
        self.chosen: int | None = None if len(self.candidates) > 1 else self.candidates[0]
        self._warmed_up = False
        if self.chosen is not None:
            self.apply(self.chosen)

    @property
    def done(self) -> bool:
        return self.chosen is not None

    def _current(self) -> int:
        return next(n for n in self.candidates if len(self.times[n]) < self.trials)

    def before_step(self) -> None:
        if not self.done and self._warmed_up:
            self.apply(self._current())

    def after_step(self, seconds: float) -> int | None:
        """Record a step's time; return the count chosen once the last trial is in."""
        if self.done:
            return None
        if not self._warmed_up:
            self._warmed_up = True
            return None
        self.times[self._current()].append(seconds)
        if all(len(t) >= self.trials for t in self.times.values()):
            self.chosen = min(self.candidates, key=lambda n: sorted(self.times[n])[len(self.times[n]) // 2])
            self.apply(self.chosen)
            return self.chosen
        return None
