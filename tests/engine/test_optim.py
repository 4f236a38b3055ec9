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
