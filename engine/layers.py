"""The GPT's layers as forward/backward function pairs.

Legend: B = batch, T = time, C = channels (d_model), H = heads, D = head size,
F = MLP width, V = vocabulary, N = B * T rows.

Each ``x_forward(...) -> (out, cache)`` caches exactly what ``x_backward`` needs;
each ``x_backward(dout, cache, ...) -> dx`` writes parameter gradients straight
into the persistent buffers it is given (every parameter is used once per pass,
so they are assigned, never accumulated, and need no zeroing).

Memory: every output comes from the arena, and backward writes its results over
cached activations that are dead by then (a linear layer's dx over its input x,
layer norm's dx over its xhat, ...), so the backward pass needs almost nothing
beyond what the forward pass kept. A cache is therefore good for one backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena

Array = NDArray[Any]
LN_EPS = 1e-5
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715
# Up to this vocabulary, the embedding gradient is a one-hot matrix product; beyond it, the
# product's V N C multiply-adds cost more than sorting the rows (break-even 200-250 here).
ONE_HOT_MAX_VOCAB = 192


# -- embedding ---------------------------------------------------------------
def embedding_forward(idx: NDArray[np.integer], wte: Array, wpe: Array, arena: Arena) -> tuple[Array, Any]:
    """(B, T) token ids, (V, C), (context, C) -> (N, C): token plus position embedding."""
    B, T = idx.shape
    C = wte.shape[1]
    out = arena.alloc((B, T, C), wte.dtype)
    np.take(wte, idx, axis=0, out=out)
    out += wpe[:T]
    return out.reshape(B * T, C), idx


def embedding_backward(dout: Array, cache: Any, dwte: Array, dwpe: Array, arena: Arena) -> None:
    """dout (N, C) -> gradients of wte (V, C) and wpe (context, C)."""
    idx = cache
    B, T = idx.shape
    # out[b, t] = wte[idx[b, t]] + wpe[t]
    dwpe[T:] = 0
    np.add.reduce(dout.reshape(B, T, -1), axis=0, out=dwpe[:T])
    flat = idx.ravel()
    mark = arena.mark()
    if dwte.shape[0] <= ONE_HOT_MAX_VOCAB:
        # dwte = onehot(idx)^T dout: one BLAS product (1.5-5x faster than the scatter below for
        # a 65-character vocabulary)
        onehot = arena.alloc((flat.size, dwte.shape[0]), dout.dtype)
        onehot.fill(0)
        onehot[np.arange(flat.size), flat] = 1
        np.matmul(onehot.T, dout, out=dwte)
    else:
        # Scatter-add rows by token: sort the rows by token, then sum each token's run.
        order = np.argsort(flat, kind="stable")
        tokens = flat[order]
        starts = np.flatnonzero(np.r_[True, tokens[1:] != tokens[:-1]])
        rows = arena.alloc(dout.shape, dout.dtype)
        np.take(dout, order, axis=0, out=rows)
        dwte.fill(0)
        dwte[tokens[starts]] = np.add.reduceat(rows, starts, axis=0)
    arena.release(mark)


# -- layer norm --------------------------------------------------------------
def layernorm_forward(x: Array, w: Array, b: Array, arena: Arena) -> tuple[Array, Any]:
    """(N, C), (C,), (C,) -> (N, C)."""
    N, C = x.shape
    inv_c = _constant(C, 1.0 / C, x.dtype)
    mean = arena.alloc((N, 1), x.dtype)
    np.matmul(x, inv_c, out=mean[:, 0])
    xhat = arena.alloc((N, C), x.dtype)
    np.subtract(x, mean, out=xhat)
    rstd = arena.alloc((N, 1), x.dtype)
    np.vecdot(xhat, xhat, out=rstd[:, 0])
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
    """dout (N, C) -> dx (N, C), written over xhat; dout is used as scratch. Writes dw, db (C,)."""
    xhat: Array
    xhat, rstd, w = cache
    N, C = dout.shape
    # out = xhat * w + b
    np.einsum("nc,nc->c", dout, xhat, out=dw)
    np.add.reduce(dout, axis=0, out=db)
    dxhat = dout
    dxhat *= w
    # xhat = (x - mean) * rstd  =>  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    inv_c = _constant(C, 1.0 / C, dout.dtype)
    m1 = arena.alloc((N, 1), dout.dtype)
    np.matmul(dxhat, inv_c, out=m1[:, 0])
    m2 = arena.alloc((N, 1), dout.dtype)
    np.vecdot(dxhat, xhat, out=m2[:, 0])
    m2 *= 1.0 / C
    dx = xhat
    dx *= m2
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
    """dout (N, out) -> dx (N, in), written over the input x; writes dw (out, in), db (out,)."""
    x: Array
    x, w = cache
    # out = x @ w.T + b
    np.matmul(dout.T, x, out=dw)
    if db is not None:
        np.add.reduce(dout, axis=0, out=db)
    np.matmul(dout, w, out=x)  # x is not needed again
    return x


# -- GELU (tanh approximation, as GPT-2) ---------------------------------------
# 0.5 x (1 + tanh(u)) == x * sigmoid(2u): one exp per element instead of a tanh,
# which is the slower of the two in NumPy.
# Both directions are chains of passes over (N, F); run over row chunks of about this many
# elements, a chunk stays in L2 from one pass to the next instead of going out to memory and
# back (medium's (2048, 1024): forward 10.2 -> 8.4 ms, backward 6.4 -> 4.2 ms).
GELU_CHUNK = 65536


def gelu_forward(x: Array, arena: Arena) -> tuple[Array, Any]:
    """(N, F) -> (N, F): x * sigmoid(2k (x + c x^3))."""
    s = arena.alloc(x.shape, x.dtype)
    out = arena.alloc(x.shape, x.dtype)
    rows = max(1, GELU_CHUNK // x.shape[1])
    for i in range(0, x.shape[0], rows):
        xc, sc = x[i : i + rows], s[i : i + rows]
        np.multiply(xc, xc, out=sc)
        sc *= -2.0 * GELU_K * GELU_C
        sc -= 2.0 * GELU_K
        sc *= xc  # s = -2u
        with np.errstate(over="ignore"):  # inf for x below about -10: the sigmoid is then 0, as it should be
            np.exp(sc, out=sc)
        sc += 1.0
        np.reciprocal(sc, out=sc)  # s = sigmoid(2u)
        np.multiply(xc, sc, out=out[i : i + rows])
    return out, (x, s)


def gelu_backward(dout: Array, cache: Any, arena: Arena) -> Array:
    """dout (N, F) -> dx (N, F), written over the input x."""
    x: Array
    x, s = cache
    # out = x s(2u)  =>  d/dx = s + x s (1 - s) 2u',  u' = k (1 + 3 c x^2)
    rows = max(1, GELU_CHUNK // x.shape[1])
    mark = arena.mark()
    scratch = arena.alloc((min(rows, x.shape[0]), x.shape[1]), x.dtype)
    for i in range(0, x.shape[0], rows):
        dx, sc = x[i : i + rows], s[i : i + rows]
        tmp = scratch[: dx.shape[0]]
        np.multiply(dx, dx, out=tmp)
        tmp *= 6.0 * GELU_K * GELU_C
        tmp += 2.0 * GELU_K
        dx *= tmp  # 2 u' x
        np.subtract(1.0, sc, out=tmp)
        tmp *= sc
        dx *= tmp
        dx += sc
        dx *= dout[i : i + rows]
    arena.release(mark)
    return x


# -- causal self-attention ---------------------------------------------------
# Queries go in blocks of this many rows, each block against the keys up to its own last row,
# so the scores above the diagonal blocks are never computed: a quarter of them at T = 128,
# 3/8 at 256 (fwd + bwd 1.2x faster at 128, 1.5x at 256; smaller blocks lose at batch 1).
ATTENTION_BLOCK = 64


def attention_blocks(T: int) -> list[tuple[int, int]]:
    """Query rows [r0, r1) of each block; a block attends to keys [0, r1)."""
    return [(r0, min(r0 + ATTENTION_BLOCK, T)) for r0 in range(0, T, ATTENTION_BLOCK)]


def attention_forward(qkv: Array, B: int, T: int, H: int, arena: Arena) -> tuple[Array, Any]:
    """(N, 3C) packed q, k, v -> (N, C): causal softmax(q k^T / sqrt(D)) v per head.

    Scales the q third of qkv by 1/sqrt(D) in place: a pass over (N, C) instead of
    one over the (B, H, T, T) scores, which are T/D times larger.
    """
    C = qkv.shape[1] // 3
    D = C // H
    qkv[:, :C] *= 1.0 / math.sqrt(D)
    heads = qkv.reshape(B, T, 3, H, D)
    q = heads[:, :, 0].transpose(0, 2, 1, 3)  # (B, H, T, D), views into qkv
    k = heads[:, :, 1].transpose(0, 2, 1, 3)
    v = heads[:, :, 2].transpose(0, 2, 1, 3)
    y = arena.alloc((B, T, H, D), qkv.dtype)
    y_heads = y.transpose(0, 2, 1, 3)  # (B, H, T, D), written as (B, T, H, D)
    probs = []
    for r0, r1 in attention_blocks(T):
        att = arena.alloc((B, H, r1 - r0, r1), qkv.dtype)
        np.matmul(q[:, :, r0:r1], k[:, :, :r1].transpose(0, 1, 3, 2), out=att)
        att[..., r0:] += causal_mask(r1 - r0, qkv.dtype)  # keys before the block are all visible
        softmax_lastdim(att, arena)
        np.matmul(att, v[:, :, :r1], out=y_heads[:, :, r0:r1])
        probs.append(att)
    return y.reshape(B * T, C), (qkv, q, k, v, probs)


def attention_backward(dy: Array, cache: Any, arena: Arena) -> Array:
    """dy (N, C) -> dqkv (N, 3C), written over qkv; the probabilities are used as scratch."""
    qkv: Array
    qkv, q, k, v, probs = cache
    B, H, T, D = q.shape
    blocks = attention_blocks(T)
    dy_heads = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
    mark = arena.mark()
    # y[r0:r1] = att @ v[:r1]: every block's datt needs v, so all come before dv goes over v
    datts = []
    for (r0, r1), att in zip(blocks, probs, strict=True):
        datt = arena.alloc(att.shape, dy.dtype)
        np.matmul(dy_heads[:, :, r0:r1], v[:, :, :r1].transpose(0, 1, 3, 2), out=datt)
        datts.append(datt)
    _sum_into_keys(v, probs, dy_heads, arena)  # dv, over v
    # att = softmax(s)  =>  ds = att * datt - att * sum(att * datt)
    ones = _constant(T, 1.0, dy.dtype)
    for att, datt in zip(probs, datts, strict=True):
        datt *= att
        rowsum = arena.alloc((*att.shape[:-1], 1), dy.dtype)
        np.matmul(datt, ones[: att.shape[-1]], out=rowsum[..., 0])
        att *= rowsum
        datt -= att
    # s = q k^T with q scaled: dk needs q and dq needs k, so dk waits in the last block's
    # probabilities, dead by now (they hold T x D numbers when the block has D rows)
    last = probs[-1]
    if last.shape[2] >= D:
        dk = last.reshape(-1)[: B * H * T * D].reshape(B, H, T, D)
    else:
        dk = arena.alloc((B, H, T, D), dy.dtype)
    _sum_into_keys(dk, datts, q, arena)
    for (r0, r1), ds in zip(blocks, datts, strict=True):
        np.matmul(ds, k[:, :, :r1], out=q[:, :, r0:r1])  # d(scaled q), over q
    k[...] = dk
    qkv[:, : H * D] *= 1.0 / math.sqrt(D)
    arena.release(mark)
    return qkv


def _sum_into_keys(out: Array, weights: list[Array], rows: Array, arena: Arena) -> None:
    """out (B, H, T, D) = the sum over query blocks of weights^T @ rows[:, :, r0:r1].

    The last block reaches every key and writes ``out`` whole; each earlier one adds to the
    keys it reaches, through scratch.
    """
    pairs = list(zip(attention_blocks(out.shape[2]), weights, strict=True))
    (r0, _), w = pairs[-1]
    np.matmul(w.transpose(0, 1, 3, 2), rows[:, :, r0:], out=out)
    mark = arena.mark()
    for (r0, r1), w in pairs[:-1]:
        partial = arena.alloc((*out.shape[:2], r1, out.shape[3]), out.dtype)
        np.matmul(w.transpose(0, 1, 3, 2), rows[:, :, r0:r1], out=partial)
        out[:, :, :r1] += partial
        arena.release(mark)


def causal_mask(T: int, dtype: Any) -> Array:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above."""
    key = ("mask", T, np.dtype(dtype).str)
    return _frozen(key, lambda: np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1))


def softmax_lastdim(x: Array, arena: Arena) -> None:
    """Numerically stable softmax over the last axis, in place."""
    mark = arena.mark()
    m = arena.alloc((*x.shape[:-1], 1), x.dtype)
    np.maximum.reduce(x, axis=-1, keepdims=True, out=m)
    x -= m
    np.exp(x, out=x)
    np.matmul(x, _constant(x.shape[-1], 1.0, x.dtype), out=m[..., 0])  # row sums
    np.reciprocal(m, out=m)
    x *= m
    arena.release(mark)


def _constant(n: int, value: float, dtype: Any) -> Array:
    """An (n,) vector of ``value``: row sums and means as BLAS matrix-vector products, which
    beat NumPy's reductions over short rows. (Not column sums: BLAS may split that reduction
    across its threads, and the result would depend on the thread count.)"""
    return _frozen(("constant", n, value, np.dtype(dtype).str), lambda: np.full(n, value, dtype=dtype))


_FROZEN: dict[tuple[Any, ...], Array] = {}


def _frozen(key: tuple[Any, ...], make: Callable[[], Array]) -> Array:
    """The read-only array ``make`` returns, made once per ``key``: constants that every step
    needs, rather than made again in its arena each time (1 % of a tiny-preset step)."""
    array = _FROZEN.get(key)
    if array is None:
        array = make()
        array.setflags(write=False)
        _FROZEN[key] = array
    return array


# -- softmax cross-entropy ---------------------------------------------------
def cross_entropy_forward(logits: Array, targets: NDArray[np.integer], arena: Arena) -> tuple[float, Any]:
    """(N, V) logits, (N,) targets -> mean negative log-likelihood. Overwrites logits."""
    N, V = logits.shape
    rows = np.arange(N)
    m = arena.alloc((N, 1), logits.dtype)
    np.maximum.reduce(logits, axis=1, keepdims=True, out=m)
    logits -= m
    shifted_target = logits[rows, targets].astype(np.float64)  # logit[y] - max
    np.exp(logits, out=logits)
    np.matmul(logits, _constant(V, 1.0, logits.dtype), out=m[:, 0])
    # loss_n = log(sum(exp(logits - max))) - (logit[y] - max), in float64 for the mean
    loss = float(np.mean(np.log(m[:, 0].astype(np.float64)) - shifted_target))
    np.reciprocal(m, out=m)
    logits *= m  # now the probabilities
    return loss, (logits, targets)


def cross_entropy_backward(cache: Any, scale: float = 1.0) -> Array:
    """-> dlogits (N, V) for ``scale`` times the mean loss, written over the probabilities."""
    probs: Array
    probs, targets = cache
    N = probs.shape[0]
    # loss = -mean(log softmax(logits)[targets])  =>  dlogits = (probs - onehot) / N
    probs[np.arange(N), targets] -= 1.0
    probs *= scale / N
    return probs
