"""The metrics store: growable columns without Qt."""

import math

import numpy as np
import pytest

from app.metrics_store import STEP_MEDIAN_WINDOW, Column, MetricsStore, Pace


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


def test_smoothing_is_a_centred_mean_that_survives_a_nan():
    store = MetricsStore()
    store.extend([{"iter": i + 1, "loss": v} for i, v in enumerate([1.0, 3.0, 5.0, math.nan, 7.0])])
    # the NaN counts as the 5 before it; the newest has no iteration after it yet
    np.testing.assert_allclose(store.smoothed_loss(2), [1.0, 3.0, 13 / 3, 17 / 3, math.nan])
    np.testing.assert_array_equal(store.smoothed_loss(1)[:3], [1.0, 3.0, 5.0])


def test_one_smoothed_point_is_the_curves_point():
    rng = np.random.default_rng(1)
    losses = rng.uniform(1, 5, 120)
    losses[30] = math.nan
    store = MetricsStore()
    store.extend([{"iter": i + 1, "loss": v} for i, v in enumerate(losses)])
    for window in (1, 2, 3, 51, 301):
        curve = store.smoothed_loss(window)
        np.testing.assert_allclose([store.smoothed_at(i, window) for i in range(120)], curve, equal_nan=True)


def test_smoothing_does_not_lag_a_falling_loss():
    store = MetricsStore()
    store.extend([{"iter": i, "loss": 5.0 - i / 100} for i in range(1, 1001)])
    smooth = store.smoothed_loss(50)
    np.testing.assert_allclose(smooth[:975], store["loss"][:975])  # a trailing mean sat 0.25 above
    assert np.isnan(smooth[975:]).all()  # the last half window waits for the iterations after it


def test_the_step_time_median_passes_over_spikes_and_gaps_and_grows_with_the_rows():
    rng = np.random.default_rng(0)
    steps = rng.uniform(0.01, 0.02, 300)
    steps[::40] = 0.5  # a checkpoint written, the window repainting
    steps[7] = math.nan  # a row without a step time
    whole, pieces = MetricsStore(), MetricsStore()
    whole.extend({"iter": i + 1, "step_s": v} for i, v in enumerate(steps))
    for lo in (0, 1, 30, 31, 200):
        hi = {0: 1, 1: 30, 30: 31, 31: 200, 200: 300}[lo]
        pieces.extend({"iter": i + 1, "step_s": steps[i]} for i in range(lo, hi))
    w = STEP_MEDIAN_WINDOW
    expected = [np.nanmedian(steps[max(0, i - w + 1) : i + 1]) for i in range(300)]
    np.testing.assert_allclose(whole.step_median.view(), expected)
    np.testing.assert_allclose(pieces.step_median.view(), expected)
    assert whole.step_median.view()[2:].max() < 0.02  # past the first rows, no spike shows
    whole.clear()
    whole.extend([{"iter": 1, "loss": 2.0}])  # no step time at all
    assert np.isnan(whole.step_median.view()).all()


def test_two_hundred_thousand_iterations_fit_and_index():
    store = MetricsStore()
    for start in range(1, 200_001, 10_000):
        store.extend(records(start, start + 10_000))
    assert len(store) == 200_000
    assert store.index_at(123_456.4) == 123_455
    assert store.smoothed_loss(50).shape == (200_000,)


def test_pace_is_wall_time_per_iteration_over_the_last_window():
    pace = Pace(window=10.0)
    assert math.isnan(pace.seconds_per_iteration())
    pace.add(0.0, 0)
    assert math.isnan(pace.seconds_per_iteration())
    pace.add(1.0, 100)  # steps of 8 ms, and an evaluation between them: 10 ms an iteration
    assert pace.seconds_per_iteration() == pytest.approx(0.01)
    for t in range(2, 31):  # slower now: 20 ms an iteration
        pace.add(float(t), 100 + 50 * (t - 1))
    assert pace.seconds_per_iteration() == pytest.approx(0.02)  # the first second has gone
    pace.clear()  # paused: the time without iterations is no pace
    pace.add(100.0, 1550)
    assert math.isnan(pace.seconds_per_iteration())
