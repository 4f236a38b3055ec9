"""A chunked bump allocator for every per-iteration temporary.

``alloc`` hands out uninitialized, 64-byte-aligned views; ``reset`` takes them
all back at once at the end of an iteration. When an iteration needed more than
one chunk, reset replaces them by one chunk of the high-water size, so from the
second iteration on nothing is allocated from the system at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

ALIGN = 64
MIN_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArenaStats:
    in_use: int  # bytes handed out since the last reset
    peak: int  # most bytes in use at once since the last reset
    high_water: int  # most bytes in use at once, ever
    reserved: int  # bytes held from the system
    chunks: int
    allocations: int  # alloc calls since the last reset
    total_allocations: int


class Arena:
    def __init__(self, initial_bytes: int = 0, *, debug: bool = False) -> None:
        self.debug = debug
        self._chunks: list[NDArray[np.uint8]] = []
        self._chunk = 0  # index of the chunk being filled
        self._offset = 0  # bytes used in that chunk
        self._live = 0  # bytes handed out since the last reset
        self._peak = 0
        self._high_water = 0
        self._allocs = 0
        self._total_allocs = 0
        if initial_bytes:
            self._chunks.append(_aligned_bytes(initial_bytes))

    # -- allocation -------------------------------------------------------
    def alloc(self, shape: int | tuple[int, ...], dtype: DTypeLike = np.float32) -> NDArray[Any]:
        """An uninitialized array of ``shape`` that lives until the next ``reset``."""
        # Called ~100 times an iteration: kept to plain arithmetic and one array constructor.
        dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)  # callers pass x.dtype
        shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = math.prod(shape_t) * dt.itemsize
        padded = max(-(-nbytes // ALIGN) * ALIGN, ALIGN)
        chunks = self._chunks
        if self._chunk < len(chunks) and self._offset + padded <= chunks[self._chunk].nbytes:
            buf = chunks[self._chunk]
        else:
            buf = self._room_for(padded)
        start = self._offset
        self._offset = start + padded
        self._live += padded
        if self._live > self._peak:
            self._peak = self._live
        self._allocs += 1
        self._total_allocs += 1
        return np.ndarray(shape_t, dt, buf, start)

    def zeros(self, shape: int | tuple[int, ...], dtype: DTypeLike = np.float32) -> NDArray[Any]:
        out = self.alloc(shape, dtype)
        out.fill(0)
        return out

    def _room_for(self, padded: int) -> NDArray[np.uint8]:
        """The chunk to bump-allocate ``padded`` bytes from, moving on or growing as needed."""
        while self._chunk < len(self._chunks):
            chunk = self._chunks[self._chunk]
            if self._offset + padded <= chunk.nbytes:
                return chunk
            self._chunk += 1  # the rest of this chunk stays unused until reset
            self._offset = 0
        self._chunks.append(_aligned_bytes(max(padded, MIN_CHUNK, self._reserved() // 2)))
        return self._chunks[self._chunk]

    # -- lifetime ----------------------------------------------------------
    def mark(self) -> tuple[int, int, int]:
        """A point to ``release`` back to: scratch used inside a layer is given back at once."""
        return (self._chunk, self._offset, self._live)

    def release(self, mark: tuple[int, int, int]) -> None:
        """Take back every view handed out since ``mark`` (last in, first out)."""
        self._chunk, self._offset, self._live = mark

    def reset(self) -> None:
        """Take back every view handed out. Call at the very end of an iteration."""
        self._high_water = max(self._high_water, self._peak)
        if len(self._chunks) > 1:
            # Several chunks were needed: replace them by one that fits the whole pattern.
            self._chunks = [_aligned_bytes(self._high_water)]
        if self.debug:
            for chunk in self._chunks:
                chunk.fill(0xFF)  # all-ones bytes are NaN in every float dtype
        self._chunk = 0
        self._offset = 0
        self._live = 0
        self._peak = 0
        self._allocs = 0

    def free(self) -> None:
        """Give every chunk back to the system and forget the sizes seen, as a new arena
        would: for work that changed size (half the batch, once a helper process takes the
        other half), which the next iteration sizes anew. Call it with nothing in use."""
        self._chunks = []
        self._high_water = 0
        self.reset()

    # -- stats -------------------------------------------------------------
    @property
    def in_use(self) -> int:
        return self._live

    def _reserved(self) -> int:
        return sum(c.nbytes for c in self._chunks)

    def stats(self) -> ArenaStats:
        return ArenaStats(
            in_use=self.in_use,
            peak=self._peak,
            high_water=max(self._high_water, self._peak),
            reserved=self._reserved(),
            chunks=len(self._chunks),
            allocations=self._allocs,
            total_allocations=self._total_allocs,
        )


def _aligned_bytes(nbytes: int) -> NDArray[np.uint8]:
    """A byte buffer of ``nbytes`` whose first byte sits on a 64-byte boundary."""
    nbytes = -(-nbytes // ALIGN) * ALIGN
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    shift = (-raw.ctypes.data) % ALIGN
    return raw[shift : shift + nbytes]
