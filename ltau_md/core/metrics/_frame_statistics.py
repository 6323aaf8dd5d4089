"""Per-structure statistics of per-atom signals: max, mean or a quantile "qNN" over the
selected atoms of each frame."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics._arrays import as_1d
from ltau_md.core.metrics._selection import selection_mask
from ltau_md.core.validation import check_frame_offsets

__all__ = ["FRAME_STATISTICS", "aggregate_by_frame", "frame_statistic", "frame_statistics"]


def aggregate_by_frame(values: np.ndarray, frame_offsets: np.ndarray,
                       how: Literal["max", "mean"] = "max") -> np.ndarray:
    """Per-structure aggregate of per-atom ``values`` (n_atoms,); ``frame_offsets`` (F+1,)
    start of each frame, last = n_atoms. Returns (F,)."""
    v = as_1d(values, "values")
    off = check_frame_offsets(frame_offsets, v.size)
    if how == "max":
        return np.maximum.reduceat(v, off[:-1])
    if how == "mean":
        return np.add.reduceat(v, off[:-1]) / np.diff(off)
    raise InvalidParameterError(f"how must be 'max' or 'mean', got {how!r}")


#: per-structure statistics of a per-atom signal: max, mean, or a quantile "qNN" (0 < NN <= 100)
FRAME_STATISTICS = ("max", "mean", "q90", "q99")


def quantile_of(on: str) -> float | None:
    """None for "max"/"mean"; q/100 for "qNN" (e.g. "q90" -> 0.9, "q99.5" -> 0.995)."""
    if on in ("max", "mean"):
        return None
    if isinstance(on, str) and on.startswith("q"):
        try:
            q = float(on[1:])
        except ValueError:
            q = float("nan")
        if 0 < q <= 100:
            return q / 100.0
    raise InvalidParameterError(f"on must be 'max', 'mean' or a quantile 'qNN' with "
                                f"0 < NN <= 100 (e.g. 'q90', 'q99'), got {on!r}")


def _quantile(v: np.ndarray, q: float) -> float:
    """np.quantile (linear interpolation), +inf (not NaN) when the upper bracketing value is
    +inf."""
    lo, hi = np.quantile(v, q, method="lower"), np.quantile(v, q, method="higher")
    if lo == hi or np.isinf(hi):
        return float(hi)
    return float(np.quantile(v, q))


def frame_statistic(values: np.ndarray, on: str = "max", select: Any = None, *,
                    tags: Any = None) -> float:
    """One structure's statistic of per-atom ``values`` (n_atoms,), e.g. the max novelty.

    on: "max", "mean" or a quantile "qNN" (``np.quantile``, linear interpolation; "q90",
    "q99"). select: atoms to use (see :func:`selection_mask`; ``tags`` for "tags=..." strings).

    Non-finite values, explicitly: +inf is a value (the statistic may be inf, e.g. the novelty
    of a structure whose positions are NaN); a NaN among the selected atoms makes the result
    NaN; an empty selection (e.g. "tags=2" on a bare slab) gives NaN, "no value"."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise DataError(f"values must be 1-D (one per atom), got shape {v.shape}")
    q = quantile_of(on)
    mask = selection_mask(select, v.size, tags)
    if mask is not None:
        v = v[mask]
    if v.size == 0 or np.isnan(v).any():
        return float("nan")
    if q is not None:
        return _quantile(v, q)
    return float(v.max()) if on == "max" else float(v.mean())


def frame_statistics(values: np.ndarray, frame_offsets: np.ndarray, on: str = "max",
                     select: np.ndarray | None = None) -> np.ndarray:
    """:func:`frame_statistic` of every structure: ``values`` (n_atoms,) per atom of F frames,
    ``frame_offsets`` (F+1,) the first atom of each frame then n_atoms, ``select`` None or a
    boolean mask (n_atoms,) over all atoms. Returns (F,); NaN for a frame with no selected atom
    or a NaN among its selected atoms, inf handled as in :func:`frame_statistic`."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise DataError(f"values must be 1-D (one per atom), got shape {v.shape}")
    off = check_frame_offsets(frame_offsets, v.size)
    q = quantile_of(on)
    mask = np.ones(v.size, dtype=bool) if select is None else selection_mask(select, v.size)
    n_sel = np.add.reduceat(mask.astype(np.int64), off[:-1])
    has_nan = np.add.reduceat((np.isnan(v) & mask).astype(np.int64), off[:-1]) > 0
    if q is None:
        if on == "max":
            out = np.maximum.reduceat(np.where(mask, v, -np.inf), off[:-1])
        else:
            out = np.add.reduceat(np.where(mask & ~np.isnan(v), v, 0.0), off[:-1])
            with np.errstate(invalid="ignore", divide="ignore"):
                out = out / n_sel
    else:
        out = np.array([_quantile(v[a:b][mask[a:b]], q) if n else np.nan
                        for a, b, n in zip(off[:-1], off[1:], n_sel, strict=True)])
    out = out.astype(np.float64)
    out[(n_sel == 0) | has_nan] = np.nan
    return out
