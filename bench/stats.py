"""Summary statistics for benchmark samples: percentiles, medians, ratios.

Percentiles use linear interpolation between closest ranks (numpy's default "linear" method,
Hyndman & Fan type 7), so p50 of an even-sized sample is the mean of the middle two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of `samples`; ValueError if empty or q out of range."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50.0)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Round-trip times in microseconds."""

    count: int
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float


def summarize_latency(samples_us: Sequence[float]) -> LatencySummary:
    return LatencySummary(
        count=len(samples_us),
        p50_us=percentile(samples_us, 50.0),
        p99_us=percentile(samples_us, 99.0),
        p999_us=percentile(samples_us, 99.9),
        max_us=max(samples_us),
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0.0:
        return None
    return numerator / denominator


def cdf_points(samples: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """At most `points` (value, fraction <= value) pairs of the empirical CDF, for plotting."""
    if not samples:
        return []
    ordered = sorted(samples)
    n = len(ordered)
    step = max(1, n // points)
    indices = list(range(0, n, step))
    if indices[-1] != n - 1:
        indices.append(n - 1)
    return [(ordered[i], (i + 1) / n) for i in indices]
