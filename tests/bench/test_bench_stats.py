"""Percentile maths and ratios of the benchmark harness (bench/stats.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import cdf_points, median, percentile, ratio, summarize_latency


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [10.0, 20.0, 30.0, 40.0]
    assert percentile(samples, 0) == 10.0
    assert percentile(samples, 100) == 40.0
    assert median(samples) == 25.0  # mean of the middle two
    assert percentile(samples, 25) == pytest.approx(17.5)
    assert percentile([5.0], 99.9) == 5.0


def test_percentile_ignores_input_order_and_matches_numpy_linear() -> None:
    rng = random.Random(7)
    samples = [rng.uniform(0, 1000) for _ in range(3001)]
    shuffled = samples[:]
    rng.shuffle(shuffled)
    assert percentile(samples, 99.9) == percentile(shuffled, 99.9)
    ordered = sorted(samples)
    # 3001 samples: rank (n-1)*q/100 is exact for p50 and p99.
    assert percentile(samples, 50) == ordered[1500]
    assert percentile(samples, 99) == ordered[2970]
    assert percentile(samples, 99.9) == pytest.approx(ordered[2997])


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], float("nan"))


@given(st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=200), st.floats(0, 100),
       st.floats(0, 100))
def test_percentile_is_monotonic_and_bounded(samples: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    assert min(samples) <= percentile(samples, low) <= percentile(samples, high) <= max(samples)


def test_latency_summary_and_cdf() -> None:
    samples = [float(i) for i in range(1, 1001)]
    s = summarize_latency(samples)
    assert (s.count, s.max_us) == (1000, 1000.0)
    assert s.p50_us == pytest.approx(500.5)
    assert s.p99_us == pytest.approx(990.01)
    assert s.p999_us == pytest.approx(999.001)
    points = cdf_points(samples, points=100)
    assert points[0] == (1.0, 0.001) and points[-1] == (1000.0, 1.0)
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert len(points) <= 101


def test_ratio_handles_missing_values() -> None:
    assert ratio(300.0, 600.0) == 0.5
    assert ratio(None, 600.0) is None
    assert ratio(300.0, None) is None
    assert ratio(300.0, 0.0) is None
