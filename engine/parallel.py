"""One batch's forward and backward passes, split across processes.

On n cores a batch big enough to pay for it is cut into n shards: the calling thread runs
the first, and n - 1 helper processes run the others, each with one BLAS thread. Processes,
not threads: NumPy releases the GIL inside its loops and BLAS calls, but a forward and
backward pass makes about a thousand NumPy calls, and two threads queue for the GIL at
every one of them (the nanoGPT configuration's half-batches took 20 % longer side by
side on two threads than on two processes).

A helper reads the parameters from shared memory that is refreshed before every pass
(one copy of the flat buffer), and writes its gradients, scaled by its shard's share of
the batch, into shared memory of its own; the caller adds them into the model's. The split
is fixed, so a run is deterministic for a given core count. Evaluation batches are split
the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena, ArenaStats
from engine.config import ModelConfig
from engine.model import GPT
from engine.optim import PARALLEL_UPDATE_PARAMS

MIN_SHARD_FLOPS = 5e8  # below this per iteration, the hand-offs cost more than they save
STARTUP_TIMEOUT = 60.0  # seconds for a helper process to import NumPy and map the buffers


class ShardError(RuntimeError):
    """A helper process failed or is gone."""


def shards_for(cfg: ModelConfig, batch: int, cores: int) -> int:
    """How many shards to split a batch into on ``cores`` cores: one per core when the
    iteration is big enough to pay for the hand-offs (tiny at batch 16 is not), else 1."""
    flops = cfg.flops_per_token() * batch * cfg.context
    worth_it = batch >= cores and flops >= MIN_SHARD_FLOPS
    return cores if worth_it and os.name == "posix" else 1  # helpers inherit descriptors: POSIX


@dataclass(frozen=True)
class ThreadPlan:
    """How an iteration uses ``n`` cores."""

    shards: int  # batch shards: the calling thread and shards - 1 helper processes
    blas: int  # BLAS threads of the calling thread
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
        self.model, self.arena, self.shards = model, arena, shards
        self._params: _Shared | None = None
        self._helpers: list[_Helper] = []
        if shards == 1:
            return
        try:
            self._params = _Shared(model.flat)
            self._helpers = [_Helper(model, self._params, arena.debug) for _ in range(shards - 1)]
        except BaseException:
            self.close()
            raise

    def loss_and_grads(self, x: NDArray[np.integer], y: NDArray[np.integer]) -> float:
        """Mean loss over the (B, T) batch; d(loss)/d(param) left in ``model.grads``."""
        parts = self._parts(x.shape[0])
        losses = self._map("train", x, y, parts)
        # Each shard's backward was scaled by its share of the rows, so the gradients just add.
        grad = self.model.grad_flat
        for helper in self._helpers[: len(parts) - 1]:
            grad += helper.grad_flat
        return _weighted_mean(losses, parts)

    def loss(self, x: NDArray[np.integer], y: NDArray[np.integer]) -> float:
        """Mean loss over the (B, T) batch, forward passes only (evaluation)."""
        parts = self._parts(x.shape[0])
        return _weighted_mean(self._map("eval", x, y, parts), parts)

    def _parts(self, B: int) -> list[slice]:
        if not self._helpers or B < self.shards:
            return [slice(0, B)]
        bounds = np.linspace(0, B, self.shards + 1).astype(int)
        return [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]

    def _map(
        self, kind: str, x: NDArray[np.integer], y: NDArray[np.integer], parts: list[slice]
    ) -> list[float]:
        B = x.shape[0]
        helpers = self._helpers[: len(parts) - 1]
        if helpers and self._params is not None:
            self._params.array[...] = self.model.flat  # what the optimizer changed since the last pass
        for helper, s in zip(helpers, parts[1:], strict=True):
            helper.send(kind, x[s], y[s], (s.stop - s.start) / B)
        try:
            first = _run(self.model, self.arena, kind, x[parts[0]], y[parts[0]], parts[0].stop / B)
        finally:
            losses = [helper.receive() for helper in helpers]  # never leave a reply unread
        return [first, *losses]

    @property
    def helper_pids(self) -> list[int]:
        return [helper.pid for helper in self._helpers]

    def arena_stats(self) -> ArenaStats:
        """All shards' arenas together (a helper's as it was at the end of its last pass)."""
        each = [self.arena.stats()] + [h.stats for h in self._helpers if h.stats is not None]
        return ArenaStats(**{f.name: sum(getattr(s, f.name) for s in each) for f in fields(ArenaStats)})

    def reset(self) -> None:
        self.arena.reset()  # helpers reset their own arenas at the end of every pass
        for helper in self._helpers:
            if helper.stats is not None:
                helper.stats = replace(helper.stats, in_use=0, peak=0, allocations=0)

    def close(self) -> None:
        for helper in self._helpers:
            helper.close()
        self._helpers = []
        if self._params is not None:
            self._params.close()
            self._params = None

    def __del__(self) -> None:
        self.close()


def _run(model: GPT, arena: Arena, kind: str, x: NDArray[Any], y: NDArray[Any], share: float) -> float:
    """One shard's pass: the training pass leaves its arena in use (for the stats), the
    evaluation pass resets it."""
    loss, cache = model.forward(x, y, arena)
    if kind == "train":
        model.backward(cache, arena, scale=share)
    else:
        arena.reset()
    return loss


def _weighted_mean(losses: list[float], parts: list[slice]) -> float:
    B = parts[-1].stop
    return float(sum((s.stop - s.start) / B * loss for s, loss in zip(parts, losses, strict=True)))


class _Shared:
    """A zeroed flat array like ``like`` in memory that a helper process maps through the
    file descriptor ``fd``: an anonymous memory file on Linux, an unlinked temporary file
    elsewhere, so nothing is left behind however the processes end."""

    def __init__(self, like: NDArray[Any]) -> None:
        nbytes = max(like.nbytes, 1)
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("chargpt-shard")
        else:
            self.fd, path = tempfile.mkstemp(prefix="chargpt-shard-")
            os.unlink(path)
        os.ftruncate(self.fd, nbytes)
        self._map = mmap.mmap(self.fd, nbytes)
        self.array = np.frombuffer(self._map, dtype=like.dtype, count=like.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the mapping stays valid until the array is gone
            self.fd = -1


def _map_fd(fd: int, dtype: np.dtype[Any], count: int) -> NDArray[Any]:
    return np.frombuffer(mmap.mmap(fd, max(count * dtype.itemsize, 1)), dtype=dtype, count=count)


class _Helper:
    """A process that runs one shard of every pass, on the shared parameters.

    A fresh interpreter (never a fork of this process, which may have Qt threads), given a
    socket and the two memory files by inheritance, so no main module is re-imported."""

    def __init__(self, model: GPT, params: _Shared, debug: bool) -> None:
        self._grads = _Shared(model.grad_flat)
        self.grad_flat = self._grads.array
        self.stats: ArenaStats | None = None
        ours, theirs = socket.socketpair()
        self._conn = multiprocessing.connection.Connection(ours.detach())
        fds = (theirs.fileno(), params.fd, self._grads.fd)
        spec = (model.cfg.to_dict(), model.dtype.str, debug, *fds)
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        env |= {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        code = f"from engine.parallel import _serve; _serve({spec!r})"
        self._process: subprocess.Popen[bytes] | None = None
        try:
            # A session of its own: the terminal's Ctrl-C is for the training process to handle.
            self._process = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=fds, env=env, start_new_session=True
            )
            theirs.close()
            # Wait until it is ready, so that a helper that cannot start fails here, not mid-run.
            if not self._conn.poll(STARTUP_TIMEOUT) or self._receive() != "ready":
                raise ShardError(f"a training helper process did not start within {STARTUP_TIMEOUT} s")
        except BaseException as e:
            theirs.close()
            self.close()
            if isinstance(e, OSError):
                raise ShardError(f"a training helper process could not start: {e}") from e
            raise

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def send(self, kind: str, x: NDArray[Any], y: NDArray[Any], share: float) -> None:
        try:
            self._conn.send((kind, x, y, share))
        except OSError as e:
            raise ShardError(f"a training helper process is gone ({e}); set the threads again") from e

    def receive(self) -> float:
        loss, self.stats = self._receive()
        return float(loss)

    def _receive(self) -> Any:
        try:
            reply = self._conn.recv()
        except (EOFError, OSError) as e:
            code = self._process.poll() if self._process is not None else None
            raise ShardError(f"a training helper process stopped (exit code {code})") from e
        if isinstance(reply, BaseException):
            raise ShardError(f"a training helper process failed: {reply!r}") from reply
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._conn.close()  # a helper also stops when its socket closes
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._grads.close()


def _serve(spec: tuple[Any, ...]) -> None:
    """A helper process's loop: one pass per request until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the training process
    cfg_dict, dtype, debug, sock_fd, params_fd, grads_fd = spec
    cfg = ModelConfig(**cfg_dict)
    dt = np.dtype(dtype)
    flat, grad_flat = (_map_fd(fd, dt, cfg.n_params) for fd in (params_fd, grads_fd))
    model = GPT(cfg, dt, flat=flat, grad_flat=grad_flat)
    arena = Arena(debug=debug)
    conn = multiprocessing.connection.Connection(sock_fd)
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the training process is gone
        if request is None:
            return
        kind, x, y, share = request
        try:
            loss = _run(model, arena, kind, x, y, share)
            stats = arena.stats()
            arena.reset()
            conn.send((loss, stats))
        except Exception as e:  # the caller raises it as a ShardError
            arena.reset()
            conn.send(e)
