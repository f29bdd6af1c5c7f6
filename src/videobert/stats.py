"""95% confidence intervals for the figures the evaluation reports.

- A proportion (accuracy, recall@k: k successes of n independent items): Wilson's score interval, which
  stays inside [0, 1] and is sound for small n and for rates near 0 or 1 (unlike the normal
  approximation).
- A mean of per-video values (summary F1): the percentile bootstrap over test videos.

Every task's metrics name their proportions and where their n is (`RATES`: metric -> the result key that
holds its n); `with_intervals` adds `<metric>_ci_low` / `<metric>_ci_high` for each, so intervals reach the
log, the W&B summary, the run folder's json and `videobert report` through one path.
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion successes / n (n > 0)."""
    if n <= 0:
        raise ValueError(f"wilson: n must be positive, got {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(values, draws: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (one per test video), resampled with replacement."""
    x = np.asarray(values, dtype=float)
    if not len(x):
        raise ValueError("bootstrap_mean: no values")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(draws, len(x)))
    means = x[idx].mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def with_intervals(results: dict[str, float], rates: dict[str, str]) -> dict[str, float]:
    """`results` plus the Wilson interval of every proportion in `rates` (metric -> key of its n) present."""
    out = dict(results)
    for metric, n_key in rates.items():
        if metric in results and results.get(n_key, 0) > 0:
            n = results[n_key]
            out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = wilson(results[metric] * n, n)
    return out
