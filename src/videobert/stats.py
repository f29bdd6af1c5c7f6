"""95% confidence intervals for the figures the evaluation reports.

- A proportion (accuracy, recall@k: k successes of n independent items): Wilson's score interval, which
  stays inside [0, 1] and is sound for small n and for rates near 0 or 1 (unlike the normal
  approximation).
- A mean of per-video values (summary F1): the percentile bootstrap over test videos.
- A figure that is no proportion of independent items (AUROC, macro-F1, BLEU, METEOR, ROUGE-L, CIDEr): the
  percentile bootstrap over test videos, the figure recomputed on each resample (`bootstrap_groups`); where
  each video is one item (sentiment), resampling the confusion matrix's cells is the same (`bootstrap_confusion`).

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


def bootstrap_groups(groups, statistic, draws: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic(indices)` (a figure of the items at those indices) when whole
    groups (`groups`: one id per item, e.g. its video) are resampled with replacement; resamples on which the
    statistic is undefined (it raises ValueError, e.g. one class only) are left out."""
    ids = np.asarray(groups)
    _, inverse = np.unique(ids, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(ids) else []
    if not members:
        raise ValueError("bootstrap_groups: no items")
    rng, values = np.random.default_rng(seed), []
    for _ in range(draws):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
        try:
            values.append(float(statistic(idx)))
        except ValueError:
            continue
    if not values:
        raise ValueError("bootstrap_groups: the statistic is undefined on every resample")
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))


def bootstrap_confusion(confusion, statistic, draws: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic(confusion matrix)` when the items (one per cell count, e.g.
    one per video) are resampled with replacement: the cells drawn multinomially."""
    c = np.asarray(confusion, dtype=float)
    n = int(c.sum())
    if n <= 0:
        raise ValueError("bootstrap_confusion: an empty confusion matrix")
    draws_ = np.random.default_rng(seed).multinomial(n, c.ravel() / n, size=draws).reshape(draws, *c.shape)
    values = [statistic(d) for d in draws_]
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))


def macro_f1(confusion) -> float:
    """Macro-F1 of a (truth x prediction) confusion matrix: the mean over classes of 2 tp / (2 tp + fp + fn)
    over the classes present or predicted (torchmetrics leaves the others out of the mean too)."""
    c = np.asarray(confusion, dtype=float)
    tp = np.diag(c)
    denom = 2 * tp + (c.sum(0) - tp) + (c.sum(1) - tp)
    return float(np.mean(2 * tp[denom > 0] / denom[denom > 0])) if (denom > 0).any() else 0.0


def auroc(scores, labels) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (1 = positive), ties counted half (Mann-Whitney
    U / (n1 n0)); ValueError when one class is missing."""
    x, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        raise ValueError(f"auroc: {n1} positives and {n0} negatives; both are needed")
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # average rank of each score, from 1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def with_intervals(results: dict[str, float], rates: dict[str, str]) -> dict[str, float]:
    """`results` plus the Wilson interval of every proportion in `rates` (metric -> key of its n) present."""
    out = dict(results)
    for metric, n_key in rates.items():
        if metric in results and results.get(n_key, 0) > 0:
            n = results[n_key]
            out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = wilson(results[metric] * n, n)
    return out
