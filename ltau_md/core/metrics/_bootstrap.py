"""Row-wise (vectorised) ranking metrics and the percentile bootstrap interval built on them;
the same metrics of resamples given as counts per item (``*_weighted``), which a bootstrap over
frames of many atoms computes without sorting each resample."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ltau_md.core.exceptions import DataError

__all__ = ["auroc_rows", "auroc_weighted", "bootstrap_ci", "rank_rows", "spearman_rows",
           "spearman_weighted", "weighted_ranks"]


def rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) along the last axis."""
    from scipy.stats import rankdata

    return rankdata(a, axis=1)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman per row of (B, n) arrays (average ranks for ties); NaN for a constant row."""
    rx, ry = rank_rows(x), rank_rows(y)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)


def auroc_rows(s: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """AUROC per row (Mann-Whitney with average ranks); NaN for a row with one class."""
    r = rank_rows(s)
    n_pos = lab.sum(axis=1)
    n_neg = lab.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((r * lab).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def bootstrap_ci(metric: str, x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` ("spearman" of x with y, or "auroc" of
    scores x for boolean labels y) over the finite pairs, resampling systems with
    replacement; (NaN, NaN) with < 3 pairs or when no resample is defined."""
    if metric not in ("spearman", "auroc"):
        raise DataError(f"metric must be 'spearman' or 'auroc', got {metric!r}")
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size < 3:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, xa.size, size=(n_boot, xa.size))
    if metric == "spearman":
        vals = spearman_rows(xa[idx], ya[idx])
    else:
        vals = auroc_rows(xa[idx], ya[idx].astype(bool))
    vals = vals[np.isfinite(vals)]
    if vals.size < n_boot // 2:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks (B, n) of ``values`` (n,) in the B multisets that hold value i
    ``weights[b, i]`` times (integer counts, e.g. a bootstrap resample): what
    :func:`rank_rows` gives each copy of value i in the expanded resample (ties, copies
    included, averaged), without expanding or sorting per row."""
    v = np.asarray(values)
    order = np.argsort(v, kind="stable")
    vs = v[order]
    new = np.r_[True, vs[1:] != vs[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], vs.size] - 1
    group = np.empty(v.size, dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    w = np.asarray(weights, dtype=np.float64)
    ws = w[:, order]
    g = np.add.reduceat(ws, starts, axis=1)
    last = np.cumsum(ws, axis=1)[:, ends]
    ranks = (last - (g - 1.0) / 2.0)[:, group]
    nan = np.isnan(v) if np.issubdtype(v.dtype, np.floating) else np.zeros(v.size, bool)
    if nan.any():  # as rank_rows: a resample holding a NaN has NaN ranks
        ranks[(w[:, nan] > 0).any(axis=1)] = np.nan
    return ranks


def spearman_weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman (B,) of x with y (n,) in each multiset of ``weights`` (B, n) counts, equal to
    :func:`spearman_rows` of the expanded resamples; NaN where a rank is constant."""
    w = np.asarray(weights, dtype=np.float64)
    rx, ry = weighted_ranks(x, w), weighted_ranks(y, w)
    n = w.sum(axis=1, keepdims=True)
    rx = rx - (w * rx).sum(axis=1, keepdims=True) / n
    ry = ry - (w * ry).sum(axis=1, keepdims=True) / n
    den = np.sqrt((w * rx**2).sum(axis=1) * (w * ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (w * rx * ry).sum(axis=1) / den, np.nan)


def auroc_weighted(s: np.ndarray, lab: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC (B,) of scores s (n,) for boolean labels (n,) in each multiset of ``weights``
    (B, n) counts, equal to :func:`auroc_rows` of the expanded resamples; NaN for one class."""
    w = np.asarray(weights, dtype=np.float64)
    lab = np.asarray(lab, dtype=bool)
    r = weighted_ranks(s, w)
    n_pos = w[:, lab].sum(axis=1)
    n_neg = w[:, ~lab].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((w[:, lab] * r[:, lab]).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
