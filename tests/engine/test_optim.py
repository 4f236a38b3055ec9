import numpy as np

from engine.optim import AdamW


def test_the_update_on_two_threads_is_the_update_on_one_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 3 * AdamW.CHUNK + 123  # several chunks, the last one short
    start = rng.normal(size=n).astype(np.float32)
    grads = [rng.normal(size=n).astype(np.float32) for _ in range(3)]
    results = []
    for threads in (1, 2):
        params, grad = start.copy(), np.empty_like(start)
        opt = AdamW(params, grad, n_decay=n // 2)
        opt.set_threads(threads)
        for g in grads:
            grad[...] = g
            opt.step(1e-2)
        results.append((params, opt.m, opt.v))
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)
    assert not np.array_equal(results[0][0], start)


def test_the_update_with_a_clipping_factor_is_the_textbook_adamw():
    rng = np.random.default_rng(1)
    n, n_decay, lr, scale = 1000, 600, 1e-2, 0.5
    start = rng.normal(size=n)
    params, grad = start.copy(), np.empty(n)
    opt = AdamW(params, grad, n_decay, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)
    expected, m, v = start.copy(), np.zeros(n), np.zeros(n)
    for t in range(1, 4):
        g = rng.normal(size=n)
        grad[...] = g
        opt.step(lr, grad_scale=scale)
        g = g * scale  # clipped
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g**2
        expected[:n_decay] *= 1 - lr * 0.1
        expected -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
    np.testing.assert_allclose(params, expected, rtol=1e-12)
    np.testing.assert_allclose(opt.m, m, rtol=1e-12)
    np.testing.assert_allclose(opt.v, v, rtol=1e-12)


def test_a_huge_gradient_clipped_hard_updates_like_the_textbook_in_float32():
    # Norm 1.5e19, near float32's limit for a sum of squares: squared, the clip factor
    # (~4e-41 with 1 - beta2) would be a float32 denormal with a third of its precision.
    g = np.array([1.5e19, 1e18, -3e18, 5e17, 7.0], dtype=np.float32)
    scale = 1.0 / float(np.linalg.norm(g.astype(np.float64)))
    start = np.linspace(-1, 1, g.size).astype(np.float32)
    params, grad = start.copy(), g.copy()
    opt = AdamW(params, grad, 0, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    opt.step(1e-2, grad_scale=scale)
    clipped = g.astype(np.float64) * scale
    m, v = 0.1 * clipped, 0.01 * clipped**2
    np.testing.assert_allclose(opt.v, v, rtol=2e-6)
    np.testing.assert_allclose(params, start - 1e-2 * (m / 0.1) / (np.sqrt(v / 0.01) + 1e-8), rtol=1e-6)
