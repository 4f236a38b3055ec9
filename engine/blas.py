"""Which BLAS NumPy runs on, and how many threads it uses (through threadpoolctl).

threadpoolctl asks that the limit be set on the thread that makes the BLAS calls:
the training worker owns both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@dataclass(frozen=True)
class BlasInfo:
    library: str  # internal_api: openblas, mkl, blis, …
    version: str
    threading_layer: str
    num_threads: int
    filepath: str

    def describe(self) -> str:
        return f"{self.library} {self.version} ({self.threading_layer}, {self.num_threads} threads)"


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
    _controller().select(user_api="blas").limit(limits=n)
    return get_blas_threads()


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
