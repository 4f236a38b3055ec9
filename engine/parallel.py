"""One batch's forward and backward passes, split across processes.

On n cores a batch big enough to pay for it is cut into n shards: the calling thread runs
the first, and n - 1 helper processes run the others, each with one BLAS thread. Processes,
not threads: NumPy releases the GIL inside its loops and BLAS calls, but a forward and
backward pass makes about a thousand NumPy calls, and two threads queue for the GIL at
every one of them (the nanoGPT configuration's half-batches took 20 % longer side by
side on two threads than on two processes).

The parameters, the gradients and AdamW's moments live in one memory file
(``TrainingBuffers``) that the helpers map, so nothing is copied to start a pass. Each
helper writes its shard's gradients, scaled by the shard's share of the batch, into a
row of another shared file. After the passes every process takes a range of the
parameters: it adds the helpers' gradients into the model's over that range and returns
its part of the squared norm, and, once the caller has the clipping factor, runs AdamW
over the same range. The sum, the norm and the update therefore run on every core,
instead of on the caller while the helpers wait. The split is fixed and the update is
element by element, so a run is deterministic for a given core count. Evaluation
batches are split the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import mmap
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena, ArenaStats
from engine.config import ModelConfig
from engine.model import GPT
from engine.optim import PARALLEL_UPDATE_PARAMS, AdamW

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


def plan_threads(cfg: ModelConfig, batch: int, n: int, *, split: bool = True) -> ThreadPlan:
    """The batch split when it pays (and ``split`` allows), else ``n`` BLAS threads. Split,
    each process updates its range of the parameters on one thread; unsplit, the update
    runs on ``n`` threads when the model is big enough for that to pay (below 2M
    parameters it measured no faster)."""
    shards = shards_for(cfg, batch, n) if split else 1
    if shards > 1:
        return ThreadPlan(shards, 1, 1)
    return ThreadPlan(1, n, n if cfg.n_params >= PARALLEL_UPDATE_PARAMS else 1)


class TrainingBuffers:
    """A model's parameters and gradients and AdamW's two moments: four (n_params,)
    arrays in one memory file, which helper processes map (where there are helpers:
    elsewhere, ordinary memory)."""

    def __init__(self, n_params: int, dtype: Any) -> None:
        count, dt = 4 * _padded(n_params), np.dtype(dtype)
        self._memory = _Shared(count, dt) if os.name == "posix" else None
        flat = self._memory.array if self._memory is not None else np.zeros(count, dt)
        self.params, self.grads, self.m, self.v = _rows(flat, n_params)

    @property
    def fd(self) -> int:
        if self._memory is None:
            raise ShardError("helper processes need POSIX file descriptor inheritance")
        return self._memory.fd


class ShardedStep:
    """A training iteration's passes, gradient sum and norm, and update, on ``shards``
    processes. With more than one, ``buffers`` must hold the model's and the optimizer's
    arrays (it is where the helpers find them)."""

    def __init__(
        self,
        model: GPT,
        optimizer: AdamW,
        arena: Arena,
        shards: int = 1,
        buffers: TrainingBuffers | None = None,
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.model, self.optimizer, self.arena, self.shards = model, optimizer, arena, shards
        self._grads: _Shared | None = None  # the helpers' gradients, one row each
        self._helpers: list[_Helper] = []
        self._unsummed = 0  # helpers whose gradients are not yet in the model's
        self._failure: ShardError | None = None  # a helper's, met where the step could not stop
        if shards == 1:
            return
        if buffers is None or not np.shares_memory(buffers.params, model.flat):
            raise ValueError("splitting the batch needs the model's and optimizer's TrainingBuffers")
        try:
            self._grads = _Shared((shards - 1) * _padded(model.n_params), model.dtype)
            self._helpers = [
                _Helper(model, buffers, self._grads, i, shards - 1, arena.debug) for i in range(shards - 1)
            ]
        except BaseException:
            self.close()
            raise

    def loss_and_grads(self, x: NDArray[np.integer], y: NDArray[np.integer]) -> float:
        """Mean loss over the (B, T) batch. The gradient is complete in ``model.grads``
        only after ``grad_norm``."""
        parts = self._parts(x.shape[0])
        losses = self._map("train", x, y, parts)
        self._unsummed = len(parts) - 1
        return _weighted_mean(losses, parts)

    def grad_norm(self) -> float:
        """Complete the gradient in ``model.grads`` and return its global L2 norm."""
        # Each shard's backward was scaled by its share of the rows, so the gradients just add.
        n, grads = self._unsummed, self._helper_grads()
        self._unsummed = 0
        return math.sqrt(
            sum(self._on_ranges(lambda lo, hi: _sum_range(self.model.grad_flat, grads, lo, hi, n), "sum", n))
        )

    def update(self, lr: float, grad_scale: float = 1.0) -> None:
        """One AdamW step with the gradient times ``grad_scale`` (a clipping factor).

        It is applied once, whatever becomes of the helpers: a step taken again would apply
        it twice. The range of a helper that fails is updated here (exactly, unless it stopped
        partway through its range, whose first part then moves twice), and the next pass
        raises its ShardError, before anything changes, for new helpers to take that step."""
        if not self._helpers:
            self.optimizer.step(lr, grad_scale)  # on the optimizer's own threads
            return
        coeffs = self.optimizer.coefficients(lr, grad_scale)
        ranges = self.optimizer.split(self.shards)
        sent: list[tuple[_Helper, tuple[int, int]]] = []
        lost: list[tuple[tuple[int, int], ShardError]] = []
        for helper, bounds in zip(self._helpers, ranges[1:], strict=True):
            try:
                helper.send("update", *bounds, coeffs)
                sent.append((helper, bounds))
            except ShardError as e:
                lost.append((bounds, e))
        try:
            self.optimizer.update_range(*ranges[0], coeffs)
        finally:
            for helper, bounds in sent:  # never leave a reply unread
                try:
                    helper.receive()
                except ShardError as e:
                    lost.append((bounds, e))
        for (lo, hi), _ in lost:
            self.optimizer.update_range(lo, hi, coeffs)
        if lost:
            self._failure = lost[0][1]

    def _on_ranges(self, work: Callable[[int, int], Any], kind: str, *args: Any) -> list[Any]:
        """``work(lo, hi)`` on this process's range of the parameters, and ``kind`` on each
        helper's; the results, this process's first."""
        ranges = self.optimizer.split(self.shards)
        for helper, (lo, hi) in zip(self._helpers, ranges[1:], strict=True):
            helper.send(kind, lo, hi, *args)
        try:
            own = work(*ranges[0])
        finally:
            rest = [helper.receive() for helper in self._helpers]  # never leave a reply unread
        return [own, *rest]

    def _helper_grads(self) -> list[NDArray[Any]]:
        return [] if self._grads is None else _rows(self._grads.array, self.model.n_params)

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
        if self._failure is not None:
            raise ShardError(str(self._failure))
        B = x.shape[0]
        helpers = self._helpers[: len(parts) - 1]
        for helper, s in zip(helpers, parts[1:], strict=True):
            helper.send(kind, x[s], y[s], (s.stop - s.start) / B)
        try:
            first = _run(self.model, self.arena, kind, x[parts[0]], y[parts[0]], parts[0].stop / B)
        finally:
            losses = [helper.receive_pass() for helper in helpers]  # never leave a reply unread
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
        if self._grads is not None:
            self._grads.close()
            self._grads = None

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


def _sum_range(grad: NDArray[Any], helper_grads: list[NDArray[Any]], lo: int, hi: int, n: int) -> float:
    """Add the first ``n`` helpers' gradients into ``grad`` over [lo, hi); return that
    range's sum of squares."""
    g = grad[lo:hi]
    for row in helper_grads[:n]:
        g += row[lo:hi]
    return float(np.dot(g, g))


def _weighted_mean(losses: list[float], parts: list[slice]) -> float:
    B = parts[-1].stop
    return float(sum((s.stop - s.start) / B * loss for s, loss in zip(parts, losses, strict=True)))


class _Shared:
    """A zeroed flat array of ``count`` elements in memory that a helper process maps
    through the file descriptor ``fd``: an anonymous memory file on Linux, an unlinked
    temporary file elsewhere, so nothing is left behind however the processes end."""

    def __init__(self, count: int, dtype: np.dtype[Any]) -> None:
        nbytes = max(count * dtype.itemsize, 1)
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("chargpt-shard")
        else:
            self.fd, path = tempfile.mkstemp(prefix="chargpt-shard-")
            os.unlink(path)
        self._closer = weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, nbytes)
        self.array = _map_fd(self.fd, dtype, count)

    def close(self) -> None:
        self._closer()  # the mapping stays valid until the array is gone
        self.fd = -1


def _padded(n: int) -> int:
    """``n`` elements rounded up to whole 64-byte lines (of float32), so that each of the
    arrays that share a memory file starts on a cache line."""
    return -(-n // 16) * 16


def _rows(flat: NDArray[Any], n: int) -> list[NDArray[Any]]:
    """The (n,) arrays laid out one after another, ``_padded(n)`` apart, in ``flat``."""
    step = _padded(n)
    return [flat[i : i + n] for i in range(0, flat.size, step)]


def _map_fd(fd: int, dtype: np.dtype[Any], count: int) -> NDArray[Any]:
    return np.frombuffer(mmap.mmap(fd, max(count * dtype.itemsize, 1)), dtype=dtype, count=count)


class _Helper:
    """A process that runs one shard of every pass, on the shared parameters.

    A fresh interpreter (never a fork of this process, which may have Qt threads), given a
    socket and the two memory files by inheritance, so no main module is re-imported."""

    def __init__(
        self, model: GPT, buffers: TrainingBuffers, grads: _Shared, index: int, rows: int, debug: bool
    ) -> None:
        self.stats: ArenaStats | None = None
        ours, theirs = socket.socketpair()
        self._conn = multiprocessing.connection.Connection(ours.detach())
        fds = (theirs.fileno(), buffers.fd, grads.fd)
        spec = (model.cfg.to_dict(), model.dtype.str, debug, *fds, index, rows)
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        env |= {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        code = f"from engine.parallel import _serve; _serve({spec!r})"
        self._process: subprocess.Popen[bytes] | None = None
        try:
            # A session of its own: the terminal's Ctrl-C is for the training process to handle.
            # -P: no current directory on sys.path, where another "engine" could be found first.
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", code], pass_fds=fds, env=env, start_new_session=True
            )
            theirs.close()
            # Wait until it is ready, so that a helper that cannot start fails here, not mid-run.
            if not self._conn.poll(STARTUP_TIMEOUT) or self.receive() != "ready":
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

    def send(self, kind: str, *args: Any) -> None:
        try:
            self._conn.send((kind, *args))
        except OSError as e:
            raise ShardError(f"a training helper process is gone ({e})") from e

    def receive_pass(self) -> float:
        """A pass's reply: its loss, and its arena's statistics kept as ``stats``."""
        loss, self.stats = self.receive()
        return float(loss)

    def receive(self) -> Any:
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


def _serve(spec: tuple[Any, ...]) -> None:
    """A helper process's loop: one request at a time until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the training process
    cfg_dict, dtype, debug, sock_fd, buffers_fd, grads_fd, index, rows = spec
    cfg = ModelConfig(**cfg_dict)
    dt = np.dtype(dtype)
    n = cfg.n_params
    params, grads, m, v = _rows(_map_fd(buffers_fd, dt, 4 * _padded(n)), n)
    helper_grads = _rows(_map_fd(grads_fd, dt, rows * _padded(n)), n)
    model = GPT(cfg, dt, flat=params, grad_flat=helper_grads[index])
    optimizer = AdamW(params, grads, model.n_decay, moments=(m, v))
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
        kind, *args = request
        try:
            if kind == "sum":
                reply: Any = _sum_range(grads, helper_grads, *args)
            elif kind == "update":
                optimizer.update_range(*args)
                reply = None
            else:
                loss = _run(model, arena, kind, *args)
                reply = (loss, arena.stats())
                arena.reset()
        except Exception as e:  # the caller raises it as a ShardError
            arena.reset()
            reply = e
        try:
            conn.send(reply)
        except OSError:
            return  # the training process is gone
