"""AdamW over the model's flat buffers, the learning-rate schedule and clipping."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.config import TrainConfig


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Learning rate for iteration ``it`` (0-based): linear warmup, then cosine to min_lr."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / cfg.warmup_iters
    if it >= cfg.max_iters:
        return cfg.min_lr
    span = max(1, cfg.max_iters - cfg.warmup_iters)
    progress = (it - cfg.warmup_iters) / span
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def clip_scale(norm: float, max_norm: float) -> float:
    """The factor that brings a gradient of global L2 norm ``norm`` down to ``max_norm``
    (1 if it is within it, or clipping is off)."""
    return max_norm / (norm + 1e-6) if 0 < max_norm < norm else 1.0


PARALLEL_UPDATE_PARAMS = 2_000_000  # below this, a second thread's hand-offs cost more than it saves


class AdamW:
    """Adam with bias correction and decoupled weight decay on ``params[:n_decay]``.

    Every operation is a vectorised pass over the flat buffers, in place. The passes run
    chunk by chunk so that a chunk's parameters, gradients and moments stay in cache for
    all of them: one sweep through main memory instead of one per operation (at batch 1
    the update otherwise costs as much as the forward and backward passes together).
    Gradient clipping is folded into the moment updates, so it costs no pass of its own.
    """

    # Elements: the five buffers' chunks (2.5 MB) stay in L3. Each of the 13 passes costs about
    # 1 us a call, so smaller chunks lose (430K parameters: 2.4 ns each at 65536, 2.1 at this).
    CHUNK = 131072

    def __init__(
        self,
        params: NDArray[Any],
        grads: NDArray[Any],
        n_decay: int,
        *,
        beta1: float = 0.9,
        beta2: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        moments: tuple[NDArray[Any], NDArray[Any]] | None = None,
    ) -> None:
        """``moments``, if given, are the (m, v) buffers to use as they are (zeros for a new
        run; shared memory, so that helper processes update their share); otherwise they
        are allocated, zeroed."""
        self.params, self.grads, self.n_decay = params, grads, n_decay
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.m, self.v = moments if moments is not None else (np.zeros_like(params), np.zeros_like(params))
        self.t = 0  # steps taken
        self._scratch = [np.empty(min(self.CHUNK, params.size), dtype=params.dtype)]
        self._pool: ThreadPoolExecutor | None = None

    def set_threads(self, n: int) -> None:
        """Update the parameters on ``n`` threads, each a contiguous share of the chunks:
        the update is memory-bound, and one core alone cannot use all of the bandwidth."""
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = ThreadPoolExecutor(n - 1, "chargpt-adamw") if n > 1 else None
        self._scratch = [
            np.empty(min(self.CHUNK, self.params.size), dtype=self.params.dtype) for _ in range(n)
        ]

    def step(self, lr: float, grad_scale: float = 1.0) -> None:
        """One update with the gradients times ``grad_scale`` (a clipping factor)."""
        coeffs = self.coefficients(lr, grad_scale)
        n = len(self._scratch)
        bounds = self.split(n)
        pool = self._pool
        futures = (
            []
            if pool is None
            else [pool.submit(self.update_range, *bounds[i], coeffs, self._scratch[i]) for i in range(1, n)]
        )
        self.update_range(*bounds[0], coeffs, self._scratch[0])
        for f in futures:
            f.result()

    def split(self, n: int) -> list[tuple[int, int]]:
        """``n`` contiguous ranges of the parameters, whole chunks each (the last may be empty)."""
        chunks = -(-self.params.size // self.CHUNK)
        share = -(-chunks // n) * self.CHUNK
        return [(min(i * share, self.params.size), min((i + 1) * share, self.params.size)) for i in range(n)]

    def coefficients(self, lr: float, grad_scale: float = 1.0) -> tuple[float, ...]:
        """Count a step and return what ``update_range`` needs for it."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        bc1 = 1.0 - b1**self.t
        bc2 = 1.0 - b2**self.t
        # p -= lr m_hat / (sqrt(v_hat) + eps)  ==  p -= m * step / (sqrt(v) + eps')
        return (
            b1,
            b2,
            (1.0 - b1) * grad_scale,
            math.sqrt(1.0 - b2) * grad_scale,
            lr * math.sqrt(bc2) / bc1,
            self.eps * math.sqrt(bc2),
            1.0 - lr * self.weight_decay,
        )

    def update_range(
        self, lo: int, hi: int, coeffs: tuple[float, ...], scratch: NDArray[Any] | None = None
    ) -> None:
        """Update ``params[lo:hi]`` with the coefficients of one step (``coefficients``)."""
        b1, b2, gm, gs, step, eps, decay = coeffs
        if scratch is None:
            scratch = self._scratch[0]
        for start in range(lo, hi, self.CHUNK):
            end = min(start + self.CHUNK, hi)
            p, g, m, v = self.params[start:end], self.grads[start:end], self.m[start:end], self.v[start:end]
            tmp = scratch[: end - start]
            # m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2  (g scaled by the clip factor)
            m *= b1
            np.multiply(g, gm, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, gs, out=tmp)  # scaled before squaring: a tiny clip factor squared
            tmp *= tmp  # would fall into float32's denormals, and a huge g squared overflow
            v += tmp
            # decoupled weight decay on the matrices, which come first in the buffer
            if decay != 1.0 and start < self.n_decay:
                p[: self.n_decay - start] *= decay
            np.sqrt(v, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= step
            p -= tmp

    def state(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state(self, m: NDArray[Any], v: NDArray[Any], t: int) -> None:
        self.m[...] = m
        self.v[...] = v
        self.t = int(t)
