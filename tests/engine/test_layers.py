"""Gradients by finite differences, and each fast layer against its slow reference."""

import math
import warnings

import numpy as np
import pytest

from engine import layers as L
from engine import reference as R
from engine.arena import Arena
from engine.config import ModelConfig
from engine.data import CharTokenizer
from engine.model import GPT, KVCache
from engine.trainer import generate_iter


def small_model(dtype=np.float64) -> GPT:
    cfg = ModelConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=2, d_ff=16, context=6)
    model = GPT(cfg, dtype=dtype)
    rng = np.random.default_rng(0)
    model.init_weights(rng)
    # Random, not GPT-2's zero/one initial values, so every path carries a gradient.
    model.flat[...] = rng.normal(0.0, 0.3, size=model.flat.shape)
    return model


@pytest.mark.parametrize("block", [L.ATTENTION_BLOCK, 4])  # one block of queries, then two
def test_gradients_match_finite_differences_for_every_parameter(block, monkeypatch):
    monkeypatch.setattr(L, "ATTENTION_BLOCK", block)
    model = small_model()
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 11, size=(3, 6))
    targets = rng.integers(0, 11, size=(3, 6))
    arena = Arena()
    _loss, cache = model.forward(idx, targets, arena)
    model.backward(cache, arena)
    arena.reset()
    eps = 1e-5
    for name, p in model.params.items():
        grad = model.grads[name].ravel()
        flat = p.reshape(-1)
        picks = rng.choice(flat.size, size=min(8, flat.size), replace=False)
        for i in picks:
            old = flat[i]
            flat[i] = old + eps
            up, _ = model.forward(idx, targets, arena)
            arena.reset()
            flat[i] = old - eps
            down, _ = model.forward(idx, targets, arena)
            arena.reset()
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            err = abs(numeric - grad[i]) / max(abs(numeric) + abs(grad[i]), 1e-6)
            assert err <= 1e-5, f"{name}[{i}]: analytic {grad[i]:.8g}, numeric {numeric:.8g}"


def test_loss_at_init_is_close_to_uniform(verse_corpus):
    cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=64, n_heads=2, n_layers=1, d_ff=128, context=32
    )
    model = GPT(cfg)
    model.init_weights(np.random.default_rng(0))
    x, y = verse_corpus.batch(np.random.default_rng(0), "train", 8, 32)
    loss, _ = model.forward(x, y, Arena())
    assert abs(loss - math.log(cfg.vocab_size)) < 0.15


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_layers_match_references(dtype):
    rng = np.random.default_rng(2)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    B, T, H, C = 2, 7, 4, 16
    arena = Arena()
    x = rng.normal(size=(B * T, C)).astype(dtype)
    w, b = rng.normal(size=C).astype(dtype), rng.normal(size=C).astype(dtype)
    out, _ = L.layernorm_forward(x, w, b, arena)
    np.testing.assert_allclose(out, R.layernorm(x, w, b), rtol=tol, atol=tol)
    out, _ = L.gelu_forward(x, arena)
    np.testing.assert_allclose(out, R.gelu(x), rtol=tol, atol=tol)
    qkv = rng.normal(size=(B * T, 3 * C)).astype(dtype)
    out, _ = L.attention_forward(qkv.copy(), B, T, H, arena)
    np.testing.assert_allclose(out, R.attention(qkv, B, T, H), rtol=tol, atol=tol)
    logits = rng.normal(size=(B * T, 13)).astype(dtype) * 5
    targets = rng.integers(0, 13, size=B * T)
    expected = R.cross_entropy(logits.astype(np.float64), targets)
    loss, _ = L.cross_entropy_forward(logits.copy(), targets, arena)
    assert loss == pytest.approx(expected, rel=tol)


@pytest.mark.parametrize("block", [3, 7, 6])  # the last block's rows: fewer than D, D, more than D
def test_attention_in_query_blocks_equals_attention_in_one(block, monkeypatch):
    rng = np.random.default_rng(5)
    B, T, H, C = 2, 11, 2, 8  # D = 4
    qkv = rng.normal(size=(B * T, 3 * C))
    dy = rng.normal(size=(B * T, C))

    def forward_backward() -> tuple[np.ndarray, np.ndarray]:
        arena = Arena()
        y, cache = L.attention_forward(qkv.copy(), B, T, H, arena)
        return y.copy(), L.attention_backward(dy.copy(), cache, arena).copy()

    y_one, dqkv_one = forward_backward()
    monkeypatch.setattr(L, "ATTENTION_BLOCK", block)
    assert len(L.attention_blocks(T)) == -(-T // block)
    y, dqkv = forward_backward()
    np.testing.assert_allclose(y, y_one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dqkv, dqkv_one, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, R.attention(qkv, B, T, H), rtol=1e-12, atol=1e-12)


def test_gelu_in_row_chunks_equals_gelu_in_one(monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(7, 5)) * 3
    dout = rng.normal(size=(7, 5))

    def forward_backward() -> tuple[np.ndarray, np.ndarray]:
        arena = Arena()
        out, cache = L.gelu_forward(x.copy(), arena)
        return out.copy(), L.gelu_backward(dout, cache, arena).copy()

    out_one, dx_one = forward_backward()
    monkeypatch.setattr(L, "GELU_CHUNK", 10)  # two rows a chunk, the last one row
    out, dx = forward_backward()
    np.testing.assert_array_equal(out, out_one)
    np.testing.assert_array_equal(dx, dx_one)
    np.testing.assert_allclose(out, R.gelu(x), rtol=1e-12, atol=1e-12)
    h = 1e-6  # and dx against central differences of the reference
    numeric = (R.gelu(x + h) - R.gelu(x - h)) / (2 * h) * dout
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_stays_finite_for_extreme_logits():
    logits = np.array([[1000.0, -1000.0, 0.0]], dtype=np.float32)
    loss, _ = L.cross_entropy_forward(logits, np.array([1]), Arena())
    assert loss == pytest.approx(2000.0)


@pytest.mark.parametrize("one_hot_max", [L.ONE_HOT_MAX_VOCAB, 0])  # the product, then the sort
def test_the_embedding_gradient_is_a_scatter_add_by_token(one_hot_max, monkeypatch):
    monkeypatch.setattr(L, "ONE_HOT_MAX_VOCAB", one_hot_max)
    rng = np.random.default_rng(3)
    B, T, V, C, context = 3, 5, 9, 4, 8
    idx = rng.integers(0, V - 1, size=(B, T))  # the last token never occurs: its row stays 0
    dout = rng.normal(size=(B * T, C))
    dwte, dwpe = np.full((V, C), np.nan), np.full((context, C), np.nan)
    L.embedding_backward(dout, idx, dwte, dwpe, Arena())
    expected = np.zeros((V, C))
    np.add.at(expected, idx.ravel(), dout)
    np.testing.assert_allclose(dwte, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dwpe[:T], dout.reshape(B, T, C).sum(axis=0), rtol=1e-12)
    assert not dwpe[T:].any()


def test_decoding_on_cached_keys_and_values_gives_the_full_forward_logits():
    model = small_model()  # float64, context 6
    ids = np.random.default_rng(4).integers(0, 11, size=6)
    kv = KVCache(model.cfg, model.dtype)
    arena = Arena()
    model.forward(ids[None, :2], None, arena, kv=kv)  # a two-character prompt
    assert kv.length == 2
    for t in range(2, 6):
        _, full = model.forward(ids[None, : t + 1], None, Arena())
        np.testing.assert_allclose(model.decode(int(ids[t]), kv, arena), full, rtol=1e-10, atol=1e-12)
        assert kv.length == t + 1
    with pytest.raises(ValueError, match="cache is full"):
        model.decode(0, kv, arena)
    with pytest.raises(ValueError, match="one sequence"):
        model.forward(np.zeros((2, 3), dtype=np.intp), None, arena, kv=kv)


def test_sampling_with_the_cache_matches_sampling_with_whole_windows():
    model = small_model()
    tokenizer = CharTokenizer("abcdefghij\n")

    def whole_windows(prompt: str, n: int, seed: int) -> str:
        """The reference: every character from a forward pass over the whole window."""
        ids, rng, out = list(tokenizer.encode(prompt)), np.random.default_rng(seed), []
        for _ in range(n):
            _, logits = model.forward(np.asarray(ids[-6:])[None, :], None, Arena())
            z = logits[0] / 0.9
            probs = np.exp(z - z.max())
            nxt = int(rng.choice(11, p=probs / probs.sum()))
            ids.append(nxt)
            out.append(tokenizer.chars[nxt])
        return "".join(out)

    for prompt in ("ab", "abcdefghij"):  # inside the context, and longer than it
        text = "".join(generate_iter(model, tokenizer, prompt, 20, temperature=0.9, seed=5))
        assert text == whole_windows(prompt, 20, 5)


def test_gelu_of_very_negative_inputs_is_zero_without_warnings():
    x = np.array([[-1e4, -50.0, -12.0, 0.0, 3.0]], dtype=np.float32)
    arena = Arena()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would fail here
        out, cache = L.gelu_forward(x.copy(), arena)
        dx = L.gelu_backward(np.ones_like(x), cache, arena)
    np.testing.assert_allclose(out, R.gelu(x.astype(np.float64)), atol=1e-6)
    assert np.isfinite(dx).all() and dx[0, 0] == 0.0
