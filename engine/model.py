"""The GPT: parameters in one flat buffer, forward and backward by hand."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine import layers as L
from engine.arena import Arena
from engine.config import ModelConfig

Array = NDArray[Any]


class GPT:
    """Parameters and gradients live in two flat buffers; ``params`` and ``grads``
    map GPT-2 names to views of them, in ``ModelConfig.param_shapes`` order."""

    def __init__(
        self,
        cfg: ModelConfig,
        dtype: Any = np.float32,
        *,
        flat: Array | None = None,
        grad_flat: Array | None = None,
    ) -> None:
        """``flat`` and ``grad_flat``, if given, are the (n_params,) buffers to use (shared
        memory in a shard process); otherwise they are allocated, zeroed."""
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        self.n_params = cfg.n_params
        self.flat = np.zeros(self.n_params, dtype=self.dtype) if flat is None else flat
        self.grad_flat = np.zeros(self.n_params, dtype=self.dtype) if grad_flat is None else grad_flat
        self.params = self._views(self.flat)
        self.grads = self._views(self.grad_flat)
        self.n_decay = 0  # the 2-D weights come first: flat[:n_decay] gets weight decay
        offset = 0
        for _, shape in cfg.param_shapes():
            offset += math.prod(shape)
            if len(shape) == 2:
                self.n_decay = offset

    def _views(self, buf: Array) -> dict[str, Array]:
        views, offset = {}, 0
        for name, shape in self.cfg.param_shapes():
            size = math.prod(shape)
            views[name] = buf[offset : offset + size].reshape(shape)
            offset += size
        return views

    def init_weights(self, rng: np.random.Generator) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 L)."""
        proj_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.params.items():
            if p.ndim == 2:
                std = proj_std if name.endswith("c_proj.weight") else 0.02
                p[...] = rng.normal(0.0, std, size=p.shape)
            elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
                p.fill(1.0)
            else:
                p.fill(0.0)

    # -- forward ---------------------------------------------------------------
    def forward(
        self,
        idx: NDArray[np.integer],
        targets: NDArray[np.integer] | None,
        arena: Arena,
        kv: KVCache | None = None,
    ) -> tuple[float, Any]:
        """(B, T) ids and targets -> (mean loss, cache for backward).

        Without targets, returns (nan, logits of the last position (B, V)); ``kv`` (batch 1)
        then keeps every layer's keys and values, for ``decode`` to go on from.
        """
        p = self.params
        B, T = idx.shape
        if T > self.cfg.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context {self.cfg.context}")
        if kv is not None and B != 1:
            raise ValueError(f"a key/value cache holds one sequence, not a batch of {B}")
        x, emb_cache = L.embedding_forward(idx, p["wte"], p["wpe"], arena)  # (N, C)
        caches = []

        def attend(qkv: Array) -> tuple[Array, Any]:
            return L.attention_forward(qkv, B, T, self.cfg.n_heads, arena)

        for i in range(self.cfg.n_layers):
            x, c = self._block_forward(i, x, attend, arena)
            caches.append(c)
            if kv is not None:
                _, _, k, v, _ = c[2]  # the attention's cache: (qkv, q, k, v, probabilities)
                kv.k[i, :, :T], kv.v[i, :, :T] = k[0], v[0]
        if kv is not None:
            kv.length = T
        # From here on x is only read: layer norm caches its own normalised copy.
        if targets is None:
            return math.nan, self._last_logits(np.ascontiguousarray(x.reshape(B, T, -1)[:, -1]), arena)
        h, lnf_cache = L.layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"], arena)
        logits, head_cache = L.linear_forward(h, p["lm_head.weight"], None, arena)  # (N, V)
        loss, ce_cache = L.cross_entropy_forward(logits, targets.reshape(-1), arena)
        return loss, (emb_cache, caches, lnf_cache, head_cache, ce_cache)

    def decode(self, token: int, kv: KVCache, arena: Arena) -> Array:
        """The logits (1, V) after ``token`` at position ``kv.length``, attending to the keys and
        values ``kv`` holds rather than running the whole sequence again; adds its own."""
        p, cfg = self.params, self.cfg
        t, H = kv.length, cfg.n_heads
        if t >= cfg.context:
            raise ValueError(f"the key/value cache is full ({cfg.context} positions)")
        C = cfg.d_model
        D = C // H
        x = arena.alloc((1, C), self.dtype)
        np.add(p["wte"][token], p["wpe"][t], out=x[0])
        for i in range(cfg.n_layers):

            def attend(qkv: Array, i: int = i) -> tuple[Array, Any]:
                q, k, v = qkv.reshape(3, H, 1, D)
                kv.k[i, :, t], kv.v[i, :, t] = k[:, 0], v[:, 0]
                # the newest position attends to every one so far: no mask needed
                att = arena.alloc((H, 1, t + 1), self.dtype)
                np.matmul(q, kv.k[i, :, : t + 1].transpose(0, 2, 1), out=att)
                att *= 1.0 / math.sqrt(D)
                L.softmax_lastdim(att, arena)
                y = arena.alloc((H, 1, D), self.dtype)
                np.matmul(att, kv.v[i, :, : t + 1], out=y)
                return y.reshape(1, C), None

            x, _ = self._block_forward(i, x, attend, arena)
        kv.length = t + 1
        return self._last_logits(x, arena)

    def _last_logits(self, x: Array, arena: Arena) -> Array:
        """(B, C) final residual rows -> (B, V) logits."""
        p = self.params
        h, _ = L.layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"], arena)
        logits, _ = L.linear_forward(h, p["lm_head.weight"], None, arena)
        return logits

    def _block_forward(
        self, i: int, x: Array, attend: Callable[[Array], tuple[Array, Any]], arena: Arena
    ) -> tuple[Array, Any]:
        """Block ``i`` on the residual rows ``x``, in place; ``attend`` maps the packed q, k, v
        to the heads' outputs and a cache (the whole sequence in training, one new position
        on cached keys and values in ``decode``)."""
        p, pre = self.params, f"h.{i}."
        h, ln1 = L.layernorm_forward(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], arena)
        qkv, fc_attn = L.linear_forward(h, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"], arena)
        y, attn = attend(qkv)
        mark = arena.mark()
        a, proj_attn = L.linear_forward(y, p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"], arena)
        x += a  # x = x + attn(ln_1(x)); nothing cached holds x itself, so in place is safe
        arena.release(mark)  # a is spent; the cache holds only y and the weight
        h2, ln2 = L.layernorm_forward(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], arena)
        f, fc = L.linear_forward(h2, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"], arena)
        g, gelu = L.gelu_forward(f, arena)
        mark = arena.mark()
        m, proj = L.linear_forward(g, p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"], arena)
        x += m  # x = x + mlp(ln_2(x))
        arena.release(mark)
        return x, (ln1, fc_attn, attn, proj_attn, ln2, fc, gelu, proj)

    # -- backward --------------------------------------------------------------
    def backward(self, cache: Any, arena: Arena, scale: float = 1.0) -> None:
        """Write d(scale * loss)/d(param) for every parameter into ``grads``."""
        g = self.grads
        emb_cache, caches, lnf_cache, head_cache, ce_cache = cache
        dlogits = L.cross_entropy_backward(ce_cache, scale)
        dh = L.linear_backward(dlogits, head_cache, g["lm_head.weight"], None, arena)
        dx = L.layernorm_backward(dh, lnf_cache, g["ln_f.weight"], g["ln_f.bias"], arena)
        for i in reversed(range(self.cfg.n_layers)):
            dx = self._block_backward(i, dx, caches[i], arena)
        L.embedding_backward(dx, emb_cache, g["wte"], g["wpe"], arena)

    def _block_backward(self, i: int, dx: Array, cache: Any, arena: Arena) -> Array:
        g, pre = self.grads, f"h.{i}."
        ln1, fc_attn, attn, proj_attn, ln2, fc, gelu, proj = cache
        # x = x + mlp(ln_2(x)): dx flows through unchanged and through the MLP
        dg = L.linear_backward(dx, proj, g[pre + "mlp.c_proj.weight"], g[pre + "mlp.c_proj.bias"], arena)
        df = L.gelu_backward(dg, gelu, arena)
        dh2 = L.linear_backward(df, fc, g[pre + "mlp.c_fc.weight"], g[pre + "mlp.c_fc.bias"], arena)
        dx += L.layernorm_backward(dh2, ln2, g[pre + "ln_2.weight"], g[pre + "ln_2.bias"], arena)
        # x = x + attn(ln_1(x))
        dy = L.linear_backward(
            dx, proj_attn, g[pre + "attn.c_proj.weight"], g[pre + "attn.c_proj.bias"], arena
        )
        dqkv = L.attention_backward(dy, attn, arena)
        dh = L.linear_backward(
            dqkv, fc_attn, g[pre + "attn.c_attn.weight"], g[pre + "attn.c_attn.bias"], arena
        )
        dx += L.layernorm_backward(dh, ln1, g[pre + "ln_1.weight"], g[pre + "ln_1.bias"], arena)
        return dx


class KVCache:
    """Every layer's keys and values for the positions a sequence has reached (batch 1):
    sampling then runs one new position per character instead of the whole sequence, until
    the context is full (after that the window slides, every position's embedding changes,
    and each character needs the whole window again)."""

    def __init__(self, cfg: ModelConfig, dtype: Any) -> None:
        shape = (cfg.n_layers, cfg.n_heads, cfg.context, cfg.d_model // cfg.n_heads)
        self.k = np.empty(shape, dtype)
        self.v = np.empty(shape, dtype)
        self.length = 0  # positions held


def activation_bytes(c: ModelConfig, batch_size: int, itemsize: int = 4) -> int:
    """What the forward pass must keep for backward, counted from the shapes alone: the floor
    any implementation of these layers needs, to compare the arena against."""
    T = c.context
    N, C, F, V, H = batch_size * T, c.d_model, c.d_ff, c.vocab_size, c.n_heads
    scores = sum((r1 - r0) * r1 for r0, r1 in L.attention_blocks(T))  # per head, as computed
    per_layer = 8 * N * C + 3 * N * F + batch_size * H * scores + 2 * N
    # xhat, ln out, qkv (3), y, xhat, ln out: 8 NC; gelu in, sigmoid, out: 3 NF; att; 2 rstd
    final = 3 * N * C + N * V + N  # residual stream, ln_f xhat and out, logits, rstd
    return (c.n_layers * per_layer + final) * itemsize
