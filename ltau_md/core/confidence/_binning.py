"""The fixed log-spaced histogram bins of logged errors around atol (eV/A), and the fraction
of errors below a tolerance read from them."""

from __future__ import annotations

import numpy as np

from ltau_md.core._param_validation import check_positive
from ltau_md.core.exceptions import DataError

__all__ = ["DEFAULT_BINS", "SPAN_DECADES", "bin_index", "fraction_below", "make_edges"]


DEFAULT_BINS = 64
SPAN_DECADES = 2.0  # bins span atol * 10**-2 .. atol * 10**2


def make_edges(atol: float, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin edges (n_bins + 1,): 0, log-spaced atol*1e-2 .. atol*1e2 with atol an exact edge, inf.

    Bin b holds errors in (edges[b], edges[b+1]].
    """
    check_positive("atol (eV/A)", atol, DataError)
    if n_bins < 4 or n_bins % 2:
        raise DataError(f"n_bins must be an even number >= 4, got {n_bins}")
    inner = atol * 10.0 ** np.linspace(-SPAN_DECADES, SPAN_DECADES, n_bins - 1)
    inner[(n_bins - 2) // 2] = atol
    return np.concatenate([[0.0], inner, [np.inf]])


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: b with edges[b] < v <= edges[b+1] (0 for v <= 0)."""
    idx = np.searchsorted(edges, values, side="left") - 1
    return np.clip(idx, 0, len(edges) - 2)


def fraction_below(hist: np.ndarray, edges: np.ndarray, tol: np.ndarray,
                   n_epochs: np.ndarray) -> np.ndarray:
    """Fraction of logged errors <= tol from histograms.

    hist: (..., n, B) counts; tol: (n,) tolerances in eV/A; n_epochs: (...,) counts per member.
    Within a bin the count is interpolated in log(error) (linearly in the first bin, none in the
    open last bin), so the result is exact whenever tol is a bin edge.
    """
    tol = np.asarray(tol, dtype=np.float64)
    j = bin_index(edges, tol)  # tol lies in (edges[j], edges[j+1]]
    cum = np.cumsum(hist, axis=-1, dtype=np.int64)
    below = np.where(j > 0, _take_last(cum, np.maximum(j - 1, 0)), 0)
    lo, hi = edges[j], edges[j + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(
            j == 0,
            np.clip(tol / hi, 0.0, 1.0),
            np.where(np.isinf(hi), 0.0, np.log(np.maximum(tol, lo) / lo) / np.log(hi / lo)),
        )
    inbin = _take_last(hist, j)
    counts = below + frac * inbin
    ne = np.asarray(n_epochs, dtype=np.float64).reshape(np.shape(n_epochs) + (1,))
    return (counts / ne).astype(np.float32)


def _take_last(a: np.ndarray, j: np.ndarray) -> np.ndarray:
    """a[..., r, j[r]] for every row r (a: (..., n, B), j: (n,))."""
    idx = np.broadcast_to(j[:, None], a.shape[:-1] + (1,))
    return np.take_along_axis(a, idx, -1)[..., 0]
