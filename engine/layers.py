"""The GPT's layers as forward/backward function pairs.

Legend: B = batch, T = time, C = channels (d_model), H = heads, D = head size,
F = MLP width, V = vocabulary, N = B * T rows.

Each ``x_forward(...) -> (out, cache)`` caches exactly what ``x_backward`` needs;
each ``x_backward(dout, cache, ...) -> dx`` writes parameter gradients straight
into the persistent buffers it is given (every parameter is used once per pass,
so they are assigned, never accumulated, and need no zeroing). Every output and
temporary comes from the arena, and ufuncs write with ``out=`` to avoid copies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena

Array = NDArray[Any]
LN_EPS = 1e-5
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


# -- embedding ---------------------------------------------------------------
def embedding_forward(idx: NDArray[np.integer], wte: Array, wpe: Array, arena: Arena) -> tuple[Array, Any]:
    """(B, T) token ids, (V, C), (context, C) -> (N, C): token plus position embedding."""
    B, T = idx.shape
    C = wte.shape[1]
    out = arena.alloc((B, T, C), wte.dtype)
    np.take(wte, idx, axis=0, out=out)
    out += wpe[:T]
    return out.reshape(B * T, C), idx


def embedding_backward(dout: Array, cache: Any, dwte: Array, dwpe: Array) -> None:
    """dout (N, C) -> gradients of wte (V, C) and wpe (context, C)."""
    idx = cache
    B, T = idx.shape
    # out[b, t] = wte[idx[b, t]] + wpe[t]
    dwpe[T:] = 0
    np.sum(dout.reshape(B, T, -1), axis=0, out=dwpe[:T])
    dwte.fill(0)
    np.add.at(dwte, idx.ravel(), dout)


# -- layer norm --------------------------------------------------------------
def layernorm_forward(x: Array, w: Array, b: Array, arena: Arena) -> tuple[Array, Any]:
    """(N, C), (C,), (C,) -> (N, C)."""
    N, C = x.shape
    mean = arena.alloc((N, 1), x.dtype)
    np.mean(x, axis=1, keepdims=True, out=mean)
    xhat = arena.alloc((N, C), x.dtype)
    np.subtract(x, mean, out=xhat)
    rstd = arena.alloc((N, 1), x.dtype)
    np.einsum("nc,nc->n", xhat, xhat, out=rstd[:, 0])
    rstd *= 1.0 / C
    rstd += LN_EPS
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    xhat *= rstd  # xhat = (x - mean) / std
    out = arena.alloc((N, C), x.dtype)
    np.multiply(xhat, w, out=out)
    out += b
    return out, (xhat, rstd, w)


def layernorm_backward(dout: Array, cache: Any, dw: Array, db: Array, arena: Arena) -> Array:
    """dout (N, C) -> dx (N, C); writes dw, db (C,)."""
    xhat, rstd, w = cache
    N, C = dout.shape
    # out = xhat * w + b
    np.einsum("nc,nc->c", dout, xhat, out=dw)
    np.sum(dout, axis=0, out=db)
    dxhat = arena.alloc((N, C), dout.dtype)
    np.multiply(dout, w, out=dxhat)
    # xhat = (x - mean) * rstd  =>  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    m1 = arena.alloc((N, 1), dout.dtype)
    np.mean(dxhat, axis=1, keepdims=True, out=m1)
    m2 = arena.alloc((N, 1), dout.dtype)
    np.einsum("nc,nc->n", dxhat, xhat, out=m2[:, 0])
    m2 *= 1.0 / C
    dx = arena.alloc((N, C), dout.dtype)
    np.multiply(xhat, m2, out=dx)
    np.subtract(dxhat, dx, out=dx)
    dx -= m1
    dx *= rstd
    return dx


# -- linear ------------------------------------------------------------------
def linear_forward(x: Array, w: Array, b: Array | None, arena: Arena) -> tuple[Array, Any]:
    """(N, in), (out, in), (out,) -> (N, out): x @ w.T + b."""
    out = arena.alloc((x.shape[0], w.shape[0]), x.dtype)
    np.matmul(x, w.T, out=out)
    if b is not None:
        out += b
    return out, (x, w)


def linear_backward(dout: Array, cache: Any, dw: Array, db: Array | None, arena: Arena) -> Array:
    """dout (N, out) -> dx (N, in); writes dw (out, in) and db (out,)."""
    x, w = cache
    # out = x @ w.T + b
    np.matmul(dout.T, x, out=dw)
    if db is not None:
        np.sum(dout, axis=0, out=db)
    dx = arena.alloc(x.shape, dout.dtype)
    np.matmul(dout, w, out=dx)
    return dx


# -- GELU (tanh approximation, as GPT-2) ---------------------------------------
def gelu_forward(x: Array, arena: Arena) -> tuple[Array, Any]:
    """(N, F) -> (N, F): 0.5 x (1 + tanh(k (x + c x^3)))."""
    t = arena.alloc(x.shape, x.dtype)
    np.multiply(x, x, out=t)
    t *= GELU_C
    t += 1.0
    t *= x
    t *= GELU_K
    np.tanh(t, out=t)
    out = arena.alloc(x.shape, x.dtype)
    np.add(t, 1.0, out=out)
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout: Array, cache: Any, arena: Arena) -> Array:
    """dout (N, F) -> dx (N, F)."""
    x, t = cache
    # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)
    dx = arena.alloc(x.shape, x.dtype)
    tmp = arena.alloc(x.shape, x.dtype)
    np.multiply(x, x, out=tmp)
    tmp *= 3.0 * GELU_C * GELU_K
    tmp += GELU_K
    tmp *= x
    np.multiply(t, t, out=dx)
    np.subtract(1.0, dx, out=dx)
    dx *= tmp
    dx += 1.0
    dx += t
    dx *= 0.5
    dx *= dout
    return dx


# -- causal self-attention ---------------------------------------------------
def attention_forward(qkv: Array, B: int, T: int, H: int, arena: Arena) -> tuple[Array, Any]:
    """(N, 3C) packed q, k, v -> (N, C): causal softmax(q k^T / sqrt(D)) v per head."""
    C = qkv.shape[1] // 3
    D = C // H
    heads = qkv.reshape(B, T, 3, H, D)
    q = heads[:, :, 0].transpose(0, 2, 1, 3)  # (B, H, T, D), views into qkv
    k = heads[:, :, 1].transpose(0, 2, 1, 3)
    v = heads[:, :, 2].transpose(0, 2, 1, 3)
    att = arena.alloc((B, H, T, T), qkv.dtype)
    np.matmul(q, k.transpose(0, 1, 3, 2), out=att)  # (B, H, T, T)
    att *= 1.0 / math.sqrt(D)
    att += causal_mask(T, qkv.dtype)
    _softmax_lastdim(att, arena)
    y = arena.alloc((B, T, H, D), qkv.dtype)
    np.matmul(att, v, out=y.transpose(0, 2, 1, 3))  # (B, H, T, D) written as (B, T, H, D)
    return y.reshape(B * T, C), (q, k, v, att)


def attention_backward(dy: Array, cache: Any, arena: Arena) -> Array:
    """dy (N, C) -> dqkv (N, 3C)."""
    q, k, v, att = cache
    B, H, T, D = q.shape
    dy4 = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
    dqkv = arena.alloc((B, T, 3, H, D), dy.dtype)
    dq = dqkv[:, :, 0].transpose(0, 2, 1, 3)
    dk = dqkv[:, :, 1].transpose(0, 2, 1, 3)
    dv = dqkv[:, :, 2].transpose(0, 2, 1, 3)
    # y = att @ v
    np.matmul(att.transpose(0, 1, 3, 2), dy4, out=dv)
    datt = arena.alloc((B, H, T, T), dy.dtype)
    np.matmul(dy4, v.transpose(0, 1, 3, 2), out=datt)
    # att = softmax(s)  =>  ds = att * (datt - sum(att * datt))
    datt *= att
    rowsum = arena.alloc((B, H, T, 1), dy.dtype)
    np.sum(datt, axis=-1, keepdims=True, out=rowsum)
    tmp = arena.alloc((B, H, T, T), dy.dtype)
    np.multiply(att, rowsum, out=tmp)
    datt -= tmp
    datt *= 1.0 / math.sqrt(D)
    # s = q @ k^T / sqrt(D)
    np.matmul(datt, k, out=dq)
    np.matmul(datt.transpose(0, 1, 3, 2), q, out=dk)
    return dqkv.reshape(B * T, 3 * H * D)


_MASKS: dict[tuple[int, str], Array] = {}


def causal_mask(T: int, dtype: Any) -> Array:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above."""
    key = (T, np.dtype(dtype).str)
    mask = _MASKS.get(key)
    if mask is None:
        mask = np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)
        mask.setflags(write=False)
        _MASKS[key] = mask
    return mask


def _softmax_lastdim(x: Array, arena: Arena) -> None:
    """Numerically stable softmax over the last axis, in place."""
    shape = (*x.shape[:-1], 1)
    m = arena.alloc(shape, x.dtype)
    np.max(x, axis=-1, keepdims=True, out=m)
    x -= m
    np.exp(x, out=x)
    np.sum(x, axis=-1, keepdims=True, out=m)
    np.reciprocal(m, out=m)
    x *= m


# -- softmax cross-entropy ---------------------------------------------------
def cross_entropy_forward(logits: Array, targets: NDArray[np.integer], arena: Arena) -> tuple[float, Any]:
    """(N, V) logits, (N,) targets -> mean negative log-likelihood. Overwrites logits."""
    N = logits.shape[0]
    rows = np.arange(N)
    m = arena.alloc((N, 1), logits.dtype)
    np.max(logits, axis=1, keepdims=True, out=m)
    logits -= m
    shifted_target = logits[rows, targets].astype(np.float64)  # logit[y] - max
    np.exp(logits, out=logits)
    np.sum(logits, axis=1, keepdims=True, out=m)
    # loss_n = log(sum(exp(logits - max))) - (logit[y] - max), in float64 for the mean
    loss = float(np.mean(np.log(m[:, 0].astype(np.float64)) - shifted_target))
    np.reciprocal(m, out=m)
    logits *= m  # now the probabilities
    return loss, (logits, targets)


def cross_entropy_backward(cache: Any) -> Array:
    """-> dlogits (N, V) for the mean loss, written over the probabilities."""
    probs, targets = cache
    N = probs.shape[0]
    # loss = -mean(log softmax(logits)[targets])  =>  dlogits = (probs - onehot) / N
    probs[np.arange(N), targets] -= 1.0
    probs *= 1.0 / N
    return probs
