"""Slow, obvious versions of the fast layers, for the tests to compare against.

Written for reading, not speed: loops over batch, head and time, and the
textbook formulas with no in-place tricks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def layernorm(x: Array, w: Array, b: Array, eps: float = 1e-5) -> Array:
    """(N, C) -> (N, C)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: Array = (x - mean) / np.sqrt(var + eps) * w + b
    return out


def gelu(x: Array) -> Array:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def attention(qkv: Array, B: int, T: int, H: int) -> Array:
    """(N, 3C) -> (N, C), one head, one query position at a time."""
    C = qkv.shape[1] // 3
    D = C // H
    x = qkv.reshape(B, T, 3 * C)
    y = np.zeros((B, T, C), dtype=qkv.dtype)
    for b in range(B):
        for h in range(H):
            q = x[b, :, h * D : (h + 1) * D]
            k = x[b, :, C + h * D : C + (h + 1) * D]
            v = x[b, :, 2 * C + h * D : 2 * C + (h + 1) * D]
            for t in range(T):
                scores = np.array([q[t] @ k[s] / math.sqrt(D) for s in range(t + 1)])
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                y[b, t, h * D : (h + 1) * D] = weights @ v[: t + 1]
    return y.reshape(B * T, C)


def cross_entropy(logits: Array, targets: Array) -> float:
    total = 0.0
    for row, t in zip(logits, targets, strict=True):
        m = row.max()
        total += m + math.log(np.exp(row - m).sum()) - row[t]
    return total / len(targets)
