"""Columns of IS2RS result rows as arrays: the helpers the analysis and its figures share."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["binned_means", "column", "finite_pairs"]


def finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) as float arrays without the pairs where either is NaN or inf."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def column(results: Sequence[dict], key: str) -> np.ndarray:
    """The field ``key`` of every result row as floats (NaN where a row lacks it)."""
    return np.array([r.get(key, math.nan) for r in results], dtype=float)


def binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Count, mean and standard error of the mean (std / sqrt(n), ddof 1; None below 2
    values) of ``y`` per bin of ``x`` (bin edges ``edges``) over the finite pairs."""
    xf, yf = finite_pairs(x, y)
    n_b = max(len(edges) - 1, 0)
    idx = np.clip(np.searchsorted(edges, xf, side="right") - 1, 0, max(n_b - 1, 0))
    counts, means, ses = [], [], []
    for b in range(n_b):
        sel = idx == b
        counts.append(int(sel.sum()))
        means.append(float(yf[sel].mean()) if sel.any() else None)
        ses.append(float(yf[sel].std(ddof=1) / math.sqrt(sel.sum())) if sel.sum() > 1
                   else None)
    return {"edges": edges.tolist(), "count": counts, "mean_rmsd": means, "se_rmsd": ses}
