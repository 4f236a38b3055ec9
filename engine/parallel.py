"""One batch's forward and backward passes, split across threads.

NumPy releases the GIL inside its array loops and BLAS calls, so two threads that
each run half of the batch (with one BLAS thread apiece) keep both cores busy through
the elementwise work too, where two BLAS threads only help inside matrix products:
on two cores this is 20-30 % faster for batch 12-16 (small, v2, medium, the nanoGPT
configuration). Each shard writes its own gradients, which are then averaged, weighted
by the shard's share of the batch, into the model's; the split is fixed, so a run is
deterministic for a given thread count.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena, ArenaStats
from engine.config import ModelConfig
from engine.model import GPT

MIN_SHARD_FLOPS = 5e8  # below this per iteration, thread hand-offs cost more than they save


def shards_for(cfg: ModelConfig, batch: int, threads: int) -> int:
    """How many shards to split a batch into on ``threads`` cores: one per thread when the
    iteration is big enough to pay for the hand-offs (tiny at batch 16 is not), else 1."""
    flops = cfg.flops_per_token() * batch * cfg.context
    return threads if batch >= threads and flops >= MIN_SHARD_FLOPS else 1


class ShardedStep:
    def __init__(self, model: GPT, arena: Arena, shards: int = 1) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.model, self.shards = model, shards
        self.replicas = [model] + [model.replica() for _ in range(shards - 1)]
        self.arenas = [arena] + [Arena(debug=arena.debug) for _ in range(shards - 1)]
        self._pool = ThreadPoolExecutor(shards - 1, "chargpt-shard") if shards > 1 else None

    def loss_and_grads(self, x: NDArray[np.integer], y: NDArray[np.integer]) -> float:
        """Mean loss over the (B, T) batch; d(loss)/d(param) left in ``model.grads``."""
        B = x.shape[0]
        if self._pool is None or B < self.shards:
            return self._run(0, x, y)
        bounds = np.linspace(0, B, self.shards + 1).astype(int)
        parts = [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]
        futures = [self._pool.submit(self._run, i, x[s], y[s]) for i, s in enumerate(parts) if i]
        losses = [self._run(0, x[parts[0]], y[parts[0]])] + [f.result() for f in futures]
        # Each shard's loss and gradients are means over its rows: weight them by the rows.
        weights = [(s.stop - s.start) / B for s in parts]
        grad = self.model.grad_flat
        grad *= weights[0]
        for replica, w in zip(self.replicas[1:], weights[1:], strict=True):
            replica.grad_flat *= w
            grad += replica.grad_flat
        return float(sum(w * loss for w, loss in zip(weights, losses, strict=True)))

    def _run(self, i: int, x: NDArray[np.integer], y: NDArray[np.integer]) -> float:
        loss, cache = self.replicas[i].forward(x, y, self.arenas[i])
        self.replicas[i].backward(cache, self.arenas[i])
        return loss

    def arena_stats(self) -> ArenaStats:
        """All shards' arenas together."""
        each = [a.stats() for a in self.arenas]
        return ArenaStats(**{f.name: sum(getattr(s, f.name) for s in each) for f in fields(ArenaStats)})

    def reset(self) -> None:
        for arena in self.arenas:
            arena.reset()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __del__(self) -> Any:
        self.close()
