"""Ranking metrics: Spearman rank correlation and AUROC (ties get average ranks)."""

from __future__ import annotations

import numpy as np

from ltau_md.core.exceptions import DataError
from ltau_md.core.metrics._arrays import as_1d

__all__ = ["auroc", "spearman"]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties).

    Returns NaN if either array is constant (the correlation is undefined)."""
    x = as_1d(x, "x")
    y = as_1d(y, "y", x.shape[0])
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
    s = as_1d(scores, "scores")
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
