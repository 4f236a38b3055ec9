"""The metrics store: growable columns without Qt."""

import math

import numpy as np

from app.metrics_store import Column, MetricsStore


def records(start: int, stop: int, **extra):
    return [
        {"iter": i, "loss": 5.0 - i / 1000, "step_s": 0.01, "rss": 1e8, **extra} for i in range(start, stop)
    ]


def test_columns_grow_by_doubling_and_keep_their_values():
    col = Column(capacity=4)
    for i in range(10):
        col.extend([i])
    np.testing.assert_array_equal(col.view(), np.arange(10))


def test_extend_keeps_order_skips_old_iterations_and_fills_missing_keys():
    store = MetricsStore()
    store.extend(records(1, 6))
    store.extend(records(3, 9))  # 3..5 again, as a follower that re-read the file would send
    np.testing.assert_array_equal(store["iter"], np.arange(1, 9))
    assert math.isnan(store["arena_in_use"][0])
    assert store.version == 2


def test_validation_points_are_sparse():
    store = MetricsStore()
    store.extend([{"iter": 1, "loss": 3.0}, {"iter": 2, "loss": 2.0, "val_loss": 2.5}])
    np.testing.assert_array_equal(store.val_iter.view(), [2])
    np.testing.assert_array_equal(store.val_loss.view(), [2.5])


def test_smoothing_is_a_trailing_mean_that_survives_a_nan():
    store = MetricsStore()
    store.extend([{"iter": i + 1, "loss": v} for i, v in enumerate([1.0, 3.0, 5.0, math.nan, 7.0])])
    np.testing.assert_allclose(store.smoothed_loss(2), [1.0, 2.0, 4.0, 5.0, 6.0])
    np.testing.assert_array_equal(store.smoothed_loss(1)[:3], [1.0, 3.0, 5.0])


def test_two_hundred_thousand_iterations_fit_and_index():
    store = MetricsStore()
    for start in range(1, 200_001, 10_000):
        store.extend(records(start, start + 10_000))
    assert len(store) == 200_000
    assert store.index_at(123_456.4) == 123_455
    assert store.smoothed_loss(50).shape == (200_000,)
