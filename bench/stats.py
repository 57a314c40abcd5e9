"""Percentiles and summaries shared by the harness, the cost model and their tests."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (index round(q/100 * (n - 1)) of the sorted values)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def distribution_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p99/max of delays given in seconds, reported in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def early_count(starts: Sequence[float], dues_ms: Sequence[int]) -> int:
    """Starts before their due time at millisecond resolution: floor(start ms) < due ms."""
    return sum(1 for start, due in zip(starts, dues_ms, strict=True) if int(start * 1000) < due)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median and range of one figure over repetitions."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }
