"""95 % intervals for a mean gain: a t-interval over independent units and a
cluster bootstrap over items that carry several queries.

* :func:`t_interval` — mean ± t(0.975, n-1) · sd / √n of per-unit values
  (e.g. one R@1 gain per cross-validation fold, seeds averaged inside a fold).
* :func:`cluster_bootstrap` — resamples clusters (e.g. Tux Paint stamps, each
  with its captions in every language) with replacement; a replicate's
  statistic is the mean over groups (languages) of the per-group mean of the
  per-query values, i.e. the macro average the reports use. Percentile interval.
"""

from __future__ import annotations

import math

import numpy as np

from frozenlens.errors import EvalError

__all__ = ["cluster_bootstrap", "macro_mean", "t975", "t_interval"]


#: Student-t 97.5 % quantiles for 1..30 degrees of freedom (two-sided 95 %)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (table to 30,
    then the Cornish-Fisher expansion, within 0.001)."""
    if df < 1:
        raise EvalError("a t quantile needs at least 1 degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: np.ndarray | list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95 % Student-t interval; needs at least 2 values."""
    a = np.asarray(values, np.float64)
    if a.size < 2:
        raise EvalError("a t-interval needs at least 2 values")
    m = float(a.mean())
    half = t975(a.size - 1) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return m, m - half, m + half


def macro_mean(values: np.ndarray, clusters: np.ndarray, groups: np.ndarray,
               weights: np.ndarray | None = None) -> float:
    """Mean over groups of the per-group mean of ``values`` (queries weighted by
    their cluster's ``weights``, default 1)."""
    w = np.ones(int(clusters.max()) + 1) if weights is None else weights
    qw = w[clusters]
    means = []
    for g in np.unique(groups):
        sel = groups == g
        total = qw[sel].sum()
        if total > 0:
            means.append(float((qw[sel] * values[sel]).sum() / total))
    return float(np.mean(means))


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, groups: np.ndarray, *,
                      replicates: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): the macro mean of ``values`` and its percentile
    interval when whole clusters are resampled.

    values: float (Q,) per query; clusters: int (Q,) cluster of each query
    (0..C-1); groups: (Q,) group of each query (a language).
    """
    values = np.asarray(values, np.float64)
    clusters = np.asarray(clusters, np.int64)
    groups = np.asarray(groups)
    if not (values.shape == clusters.shape == groups.shape) or values.size == 0:
        raise EvalError("values, clusters and groups must be equal-length and non-empty")
    n_clusters = int(clusters.max()) + 1
    labels, g_idx = np.unique(groups, return_inverse=True)
    # per (cluster, group): sum of values and number of queries
    sums = np.zeros((n_clusters, labels.size))
    counts = np.zeros((n_clusters, labels.size))
    np.add.at(sums, (clusters, g_idx), values)
    np.add.at(counts, (clusters, g_idx), 1.0)
    present = np.flatnonzero(counts.sum(axis=1) > 0)
    rng = np.random.default_rng(seed)
    w = np.zeros((replicates, n_clusters))
    draws = rng.choice(present, size=(replicates, present.size), replace=True)
    for r in range(replicates):
        np.add.at(w[r], draws[r], 1.0)
    num, den = w @ sums, w @ counts  # (R, G)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.nanmean(np.where(den > 0, num / den, np.nan), axis=1)
    estimate = macro_mean(values, clusters, groups)
    low, high = np.nanpercentile(stat, [50 * (1 - level), 50 * (1 + level)])
    return estimate, float(low), float(high)
