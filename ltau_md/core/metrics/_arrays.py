"""Checked 1-D float arrays, the input form of the metrics."""

from __future__ import annotations

import numpy as np

from ltau_md.core.exceptions import DataError

__all__: list[str] = []


def as_1d(x: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise DataError(f"{name} has {a.shape[0]} entries, expected {n}")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a))[:10].tolist()
        raise DataError(f"{name} contains NaN/inf at positions {bad}")
    return a
