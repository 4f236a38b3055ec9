"""One batch's forward and backward passes, split across threads.

NumPy releases the GIL inside its array loops and BLAS calls, so two threads that
each run half of the batch (with one BLAS thread apiece) keep both cores busy through
the elementwise work too, where two BLAS threads only help inside matrix products:
on two cores this is 20-30 % faster for batch 12-16 (small, v2, medium, the nanoGPT
configuration). Each shard writes its own gradients, scaled by the shard's share of the
batch, and these are then added into the model's; the split is fixed, so a run is
deterministic for a given thread count. Evaluation batches are split the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena, ArenaStats
from engine.config import ModelConfig
from engine.model import GPT
from engine.optim import PARALLEL_UPDATE_PARAMS

MIN_SHARD_FLOPS = 5e8  # below this per iteration, thread hand-offs cost more than they save


def shards_for(cfg: ModelConfig, batch: int, threads: int) -> int:
    """How many shards to split a batch into on ``threads`` cores: one per thread when the
    iteration is big enough to pay for the hand-offs (tiny at batch 16 is not), else 1."""
    flops = cfg.flops_per_token() * batch * cfg.context
    return threads if batch >= threads and flops >= MIN_SHARD_FLOPS else 1


ShardRun = Callable[[int, NDArray[np.integer], NDArray[np.integer], float], float]


@dataclass(frozen=True)
class ThreadPlan:
    """How an iteration uses ``n`` cores."""

    shards: int  # batch shards, each on a thread of its own
    blas: int  # BLAS threads per shard
    update: int  # threads for the AdamW update


def plan_threads(cfg: ModelConfig, batch: int, n: int) -> ThreadPlan:
    """The batch split when it pays, else ``n`` BLAS threads; the update on ``n`` threads
    when the model is big enough for that to pay (below 2M parameters it measured no faster)."""
    shards = shards_for(cfg, batch, n)
    update = n if cfg.n_params >= PARALLEL_UPDATE_PARAMS else 1
    return ThreadPlan(shards, 1 if shards > 1 else n, update)


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
        parts = self._parts(x.shape[0])
        losses = self._map(self._train, x, y, parts)
        # Each shard's backward was scaled by its share of the rows, so the gradients just add.
        grad = self.model.grad_flat
        for replica in self.replicas[1 : len(parts)]:
            grad += replica.grad_flat
        return self._mean(losses, parts)

    def loss(self, x: NDArray[np.integer], y: NDArray[np.integer]) -> float:
        """Mean loss over the (B, T) batch, forward passes only (evaluation)."""
        parts = self._parts(x.shape[0])
        return self._mean(self._map(self._evaluate, x, y, parts), parts)

    def _parts(self, B: int) -> list[slice]:
        if self._pool is None or B < self.shards:
            return [slice(0, B)]
        bounds = np.linspace(0, B, self.shards + 1).astype(int)
        return [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]

    def _map(
        self, run: ShardRun, x: NDArray[np.integer], y: NDArray[np.integer], parts: list[slice]
    ) -> list[float]:
        """``run(i, x_i, y_i, share_i)`` for every shard, shard 0 on the calling thread."""
        B = x.shape[0]
        args = [(i, x[s], y[s], (s.stop - s.start) / B) for i, s in enumerate(parts)]
        futures = [self._pool.submit(run, *a) for a in args[1:]] if self._pool is not None else []
        return [run(*args[0])] + [f.result() for f in futures]

    @staticmethod
    def _mean(losses: list[float], parts: list[slice]) -> float:
        B = parts[-1].stop
        return float(sum((s.stop - s.start) / B * loss for s, loss in zip(parts, losses, strict=True)))

    def _train(self, i: int, x: NDArray[np.integer], y: NDArray[np.integer], share: float) -> float:
        loss, cache = self.replicas[i].forward(x, y, self.arenas[i])
        self.replicas[i].backward(cache, self.arenas[i], scale=share)
        return loss

    def _evaluate(self, i: int, x: NDArray[np.integer], y: NDArray[np.integer], share: float) -> float:
        loss, _ = self.replicas[i].forward(x, y, self.arenas[i])
        self.arenas[i].reset()
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
