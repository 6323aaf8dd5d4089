"""Uncertainty-quantification metrics on plain arrays (numpy/scipy only).

* :func:`spearman` - rank correlation (ties get average ranks), e.g. uncertainty vs |error|.
* :func:`auroc` - area under the ROC curve as the Mann-Whitney U statistic (ties count 1/2),
  e.g. structure uncertainty as a detector of out-of-domain structures.
* :func:`miscalibration_area` - area between a calibration curve and the diagonal.
* :func:`binned_error_calibration` - error-based calibration of a predicted error in eV/A
  (bins by predicted error, RMSE of the observed error per bin, ENCE summary).
* :func:`aggregate_by_frame` - per-structure max/mean of per-atom values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .exceptions import DataError

__all__ = [
    "BinnedErrorCalibration",
    "aggregate_by_frame",
    "auroc",
    "binned_error_calibration",
    "miscalibration_area",
    "spearman",
]


def _as_1d(x: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise DataError(f"{name} has {a.shape[0]} entries, expected {n}")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a))[:10].tolist()
        raise DataError(f"{name} contains NaN/inf at positions {bad}")
    return a


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties).

    Returns NaN if either array is constant (the correlation is undefined)."""
    x = _as_1d(x, "x")
    y = _as_1d(y, "y", x.shape[0])
    if x.shape[0] < 2:
        raise DataError("spearman needs at least 2 points")
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    if den == 0:
        return float("nan")
    return float((rx * ry).sum() / den)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for detecting ``labels`` == True (positives).

    Computed as the Mann-Whitney U statistic: the probability that a random positive scores
    higher than a random negative, ties counting 1/2. 1.0 = perfect separation, 0.5 = chance.
    """
    s = _as_1d(scores, "scores")
    lab = np.asarray(labels)
    if lab.shape != s.shape:
        raise DataError(f"labels have shape {lab.shape}, scores {s.shape}")
    if lab.dtype != bool:
        if not np.all(np.isin(lab, (0, 1))):
            raise DataError("labels must be boolean or 0/1")
        lab = lab.astype(bool)
    n_pos = int(lab.sum())
    n_neg = int(lab.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"auroc needs positives and negatives, got {n_pos} and {n_neg}")
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks: ties contribute 1/2 per pair
    u = ranks[lab].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def miscalibration_area(expected: np.ndarray, observed: np.ndarray,
                        weights: np.ndarray | None = None) -> float:
    """Area between a calibration curve (``observed`` vs ``expected`` proportion) and y = x.

    * ``weights`` given (e.g. bin populations): sum_b w_b |observed_b - expected_b| / sum_b w_b,
      the area measured along the distribution of the predictions (= expected calibration
      error, ECE). Empty bins (w = 0, observed NaN) are skipped.
    * ``weights`` None: the integrated area int |observed(x) - x| dx between the
      piecewise-linear curve through the points (sorted by ``expected``) and the diagonal,
      exact where the curve crosses it (uncertainty-toolbox convention, which evaluates the
      curve on a fixed grid of expected proportions spanning [0, 1]). Only the span of
      ``expected`` is integrated.
    """
    e = np.asarray(expected, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    if e.ndim != 1 or e.shape != o.shape:
        raise DataError(f"expected and observed must be 1-D of equal length, got {e.shape}, "
                        f"{o.shape}")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != e.shape or np.any(w < 0):
            raise DataError("weights must be non-negative with the shape of expected")
        keep = w > 0
        if not keep.any():
            raise DataError("all calibration bins are empty")
        if not np.all(np.isfinite(e[keep]) & np.isfinite(o[keep])):
            raise DataError("expected/observed contain NaN/inf in populated bins")
        return float(np.sum(w[keep] * np.abs(o[keep] - e[keep])) / np.sum(w[keep]))
    keep = np.isfinite(e) & np.isfinite(o)
    e, o = e[keep], o[keep]
    if e.size < 2:
        return 0.0
    order = np.argsort(e, kind="stable")
    x, d = e[order], o[order] - e[order]
    dx = np.diff(x)
    d0, d1 = d[:-1], d[1:]
    same = d0 * d1 >= 0
    trap = 0.5 * dx * (np.abs(d0) + np.abs(d1))
    # a segment crossing the diagonal: two triangles, |d0|^2 + |d1|^2 over |d0| + |d1|
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = 0.5 * dx * (d0 * d0 + d1 * d1) / (np.abs(d0) + np.abs(d1))
    return float(np.sum(np.where(same, trap, cross)))


@dataclass
class BinnedErrorCalibration:
    """Error-based calibration (Levi et al. 2022) of a predicted error (eV/A), per bin of the
    predicted error: counts, RMS predicted (``rmv``), observed RMSE or MAE (``observed``), and
    the ENCE summary = mean_b |rmv_b - observed_b| / rmv_b."""

    bin_edges: np.ndarray
    counts: np.ndarray
    rmv: np.ndarray
    observed: np.ndarray
    ence: float
    statistic: str


def binned_error_calibration(
    predicted: np.ndarray,
    errors: np.ndarray,
    n_bins: int = 10,
    statistic: Literal["rmse", "mae"] = "rmse",
) -> BinnedErrorCalibration:
    """Bin atoms by predicted error (equal-count bins) and compare each bin's RMS predicted
    error (RMV) with the observed RMSE (or MAE) of ``errors``; both in eV/A.

    ``errors`` (n,) are observed error magnitudes (e.g. |F_ref - F_model|), or (n, 3)
    vectors whose norms are taken. A calibrated predictor has observed_b ~ rmv_b (ENCE ~ 0).
    """
    p = _as_1d(predicted, "predicted")
    err = np.asarray(errors, dtype=np.float64)
    if err.ndim == 2:
        err = np.linalg.norm(err, axis=1)
    err = _as_1d(err, "errors", p.shape[0])
    if statistic not in ("rmse", "mae"):
        raise DataError(f"statistic must be 'rmse' or 'mae', got {statistic!r}")
    n_bins = int(n_bins)
    if n_bins < 1 or p.size < n_bins:
        raise DataError(f"need 1 <= n_bins <= n_points, got n_bins={n_bins}, n={p.size}")
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, n_bins)
    edges = np.array([p[c[0]] for c in chunks] + [p[order[-1]]])
    counts = np.array([c.size for c in chunks])
    rmv = np.array([np.sqrt(np.mean(p[c] ** 2)) for c in chunks])
    if statistic == "rmse":
        obs = np.array([np.sqrt(np.mean(err[c] ** 2)) for c in chunks])
    else:
        obs = np.array([np.mean(np.abs(err[c])) for c in chunks])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(rmv - obs) / rmv
    ence = float(np.mean(rel[rmv > 0])) if np.any(rmv > 0) else float("nan")
    return BinnedErrorCalibration(bin_edges=edges, counts=counts, rmv=rmv, observed=obs,
                                  ence=ence, statistic=statistic)


def aggregate_by_frame(values: np.ndarray, frame_offsets: np.ndarray,
                       how: Literal["max", "mean"] = "max") -> np.ndarray:
    """Per-structure aggregate of per-atom ``values`` (n_atoms,); ``frame_offsets`` (F+1,)
    start of each frame, last = n_atoms. Returns (F,)."""
    v = _as_1d(values, "values")
    off = np.asarray(frame_offsets, dtype=np.int64)
    if (off.ndim != 1 or off.size < 2 or off[0] != 0 or off[-1] != v.size
            or np.any(np.diff(off) <= 0)):
        raise DataError("frame_offsets must start at 0, increase strictly and end at n_atoms")
    if how == "max":
        return np.maximum.reduceat(v, off[:-1])
    if how == "mean":
        return np.add.reduceat(v, off[:-1]) / np.diff(off)
    raise DataError(f"how must be 'max' or 'mean', got {how!r}")
