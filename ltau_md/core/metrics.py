"""Uncertainty-quantification metrics on plain arrays (numpy/scipy only).

* :func:`spearman` - rank correlation (ties get average ranks), e.g. uncertainty vs |error|.
* :func:`auroc` - area under the ROC curve as the Mann-Whitney U statistic (ties count 1/2),
  e.g. structure uncertainty as a detector of out-of-domain structures.
* :func:`miscalibration_area` - area between a calibration curve and the diagonal.
* :func:`calibration_curve` (-> :class:`CalibrationCurve`) - confidences binned against
  within-tolerance outcomes; :func:`within_tolerance` and :func:`force_error_norm` give the
  outcomes from force errors in eV/A.
* :func:`binned_error_calibration` - error-based calibration of a predicted error in eV/A
  (bins by predicted error, RMSE of the observed error per bin, ENCE summary).
* :func:`aggregate_by_frame` - per-structure max/mean of per-atom values.
* :func:`frame_statistic` / :func:`frame_statistics` - a structure's max, mean or quantile of a
  per-atom signal over selected atoms (:func:`selection_mask`: mask, indices or OC20 tags),
  named by :func:`stat_key` (e.g. "novelty:max@tags=2"); :func:`alarm_threshold` - the
  conformal threshold that in-domain frames exceed at a chosen alarm rate.

Miscalibration area (the number reported everywhere in ltau-md, and minimised by
:func:`ltau_md.core.calibration.fit_scale`): the area between the calibration curve and the
diagonal,
*weighted by bin population*, i.e. sum_b n_b |observed_b - mean_confidence_b| / n (the expected
calibration error; it tends to int |P(ok | p) - p| dF(p) as bins shrink). Population weighting
measures the area along the distribution of the predictions, so it cannot be lowered by
squeezing all confidences into a narrow band, which an unweighted integral over the populated
range allows. The uncertainty-toolbox style integrated area, int |observed(x) - x| dx over the
populated span, is reported alongside as ``integrated_area``. Both are 0 for a perfectly
calibrated predictor, up to sampling noise (about 0.8 * sqrt(p(1-p)/n_b) per bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ltau_md.core._io import to_json_safe
from ltau_md.core._validate import check_frame_offsets
from ltau_md.core.exceptions import DataError, InvalidParameterError

__all__ = [
    "FRAME_STATISTICS",
    "BinnedErrorCalibration",
    "CalibrationCurve",
    "aggregate_by_frame",
    "alarm_threshold",
    "auroc",
    "binned_error_calibration",
    "calibration_curve",
    "force_error_norm",
    "frame_statistic",
    "frame_statistics",
    "miscalibration_area",
    "parse_selection",
    "parse_stat_key",
    "selection_mask",
    "spearman",
    "stat_key",
    "within_tolerance",
]

Binning = Literal["uniform", "quantile"]


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
        raise InvalidParameterError(f"statistic must be 'rmse' or 'mae', got {statistic!r}")
    n_bins = int(n_bins)
    if n_bins < 1 or p.size < n_bins:
        raise InvalidParameterError(
            f"need 1 <= n_bins <= n_points, got n_bins={n_bins}, n={p.size}")
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
    off = check_frame_offsets(frame_offsets, v.size)
    if how == "max":
        return np.maximum.reduceat(v, off[:-1])
    if how == "mean":
        return np.add.reduceat(v, off[:-1]) / np.diff(off)
    raise InvalidParameterError(f"how must be 'max' or 'mean', got {how!r}")


# ---------------------------------------------------------------------------- calibration curves
@dataclass
class CalibrationCurve:
    """Binned calibration of confidences against within-tolerance outcomes.

    Per bin b (``bin_edges`` (B+1,) in confidence): ``counts`` (B,), ``mean_confidence`` (B,)
    and ``observed`` fraction within tolerance (B,), NaN for empty bins.
    ``miscalibration_area``: population-weighted |observed - confidence| (module docstring);
    ``integrated_area``: int |observed(x) - x| dx over the populated span;
    ``sharpness``: sqrt(mean p(1-p)), the RMS Bernoulli spread of the forecasts (0 = every
    forecast is 0 or 1); ``dispersion``: std of p over atoms (how much the confidences
    discriminate); ``brier``: mean (p - outcome)^2; ``accuracy``: overall fraction within
    tolerance; ``mean_confidence_all``: mean p. ``s`` is the scale the confidences were
    computed at, if known.
    """

    bin_edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    observed: np.ndarray
    miscalibration_area: float
    integrated_area: float
    sharpness: float
    dispersion: float
    brier: float
    accuracy: float
    mean_confidence_all: float
    n: int
    s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (arrays as lists, NaN as None)."""
        return to_json_safe(asdict(self))


def force_error_norm(force_errors: np.ndarray) -> np.ndarray:
    """|error| per atom in eV/A from (n, 3) error vectors, or (n,) magnitudes as given."""
    e = np.asarray(force_errors, dtype=np.float64)
    if e.ndim == 2 and e.shape[1] == 3:
        e = np.linalg.norm(e, axis=1)
    elif e.ndim != 1:
        raise DataError(f"force errors must be (n,) magnitudes or (n, 3) vectors, got {e.shape}")
    if not np.all(np.isfinite(e)):
        bad = np.flatnonzero(~np.isfinite(e))[:10].tolist()
        raise DataError(f"force errors contain NaN/inf at atoms {bad}")
    if np.any(e < 0):
        raise DataError("force error magnitudes must be >= 0")
    return e


def within_tolerance(abs_error: np.ndarray, atol: float, s: float = 1.0, rtol: float = 0.0,
                     ref_force_norm: np.ndarray | None = None) -> np.ndarray:
    """Boolean (n,): |error_j| <= atol*s + rtol*|F_j,ref| (all in eV/A)."""
    err = force_error_norm(abs_error)
    if not (np.isfinite(atol) and atol > 0):
        raise InvalidParameterError(f"atol must be positive and finite (eV/A), got {atol}")
    if not (np.isfinite(s) and s > 0):
        raise InvalidParameterError(f"scaling factor s must be positive and finite, got {s}")
    tol = np.full(err.shape, float(atol) * float(s))
    if rtol:
        if ref_force_norm is None:
            raise DataError("rtol > 0 needs the reference force norms |F_j| of the test atoms")
        ref = np.asarray(ref_force_norm, dtype=np.float64)
        if ref.shape != err.shape:
            raise DataError(f"ref_force_norm has shape {ref.shape}, expected {err.shape}")
        tol = tol + float(rtol) * ref
    return err <= tol


def _bin_ids(p: np.ndarray, n_bins: int, binning: Binning) -> tuple[np.ndarray, np.ndarray]:
    if binning == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        ids = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
        return ids, edges
    if binning == "quantile":
        order = np.argsort(p, kind="stable")
        ids = np.empty(p.size, dtype=np.int64)
        for b, chunk in enumerate(np.array_split(order, n_bins)):
            ids[chunk] = b
        edges = np.concatenate([[0.0], [p[c[-1]] for c in np.array_split(order, n_bins)
                                        if c.size][:-1], [1.0]])
        if edges.size != n_bins + 1:  # fewer points than bins
            edges = np.linspace(0.0, 1.0, n_bins + 1)
        return ids, edges
    raise InvalidParameterError(f"binning must be 'uniform' or 'quantile', got {binning!r}")


def calibration_curve(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 20,
                      binning: Binning = "uniform", s: float | None = None
                      ) -> CalibrationCurve:
    """Calibration curve of ``confidence`` (n,) in [0, 1] against boolean outcomes ``correct``
    (n,) (|error| within tolerance, see :func:`within_tolerance`).

    ``binning``: "uniform" = ``n_bins`` equal-width bins over [0, 1]; "quantile" = equal-count
    bins. A bin's x is the mean confidence of its atoms (not its centre).
    """
    p = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct)
    if p.ndim != 1 or p.size == 0:
        raise DataError(f"confidence must be a non-empty 1-D array, got shape {p.shape}")
    if y.shape != p.shape:
        raise DataError(f"correct has shape {y.shape}, confidence {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < -1e-6) or np.any(p > 1 + 1e-6):
        raise DataError("confidence must be finite and within [0, 1]")
    if y.dtype != bool:
        if not np.all(np.isin(y, (0, 1))):
            raise DataError("correct must be boolean or 0/1")
        y = y.astype(bool)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise InvalidParameterError(f"n_bins must be >= 1, got {n_bins}")
    p = np.clip(p, 0.0, 1.0)
    ids, edges = _bin_ids(p, n_bins, binning)
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        obs = np.where(counts > 0, sum_y / counts, np.nan)
    area = miscalibration_area(np.nan_to_num(mean_p), np.nan_to_num(obs), weights=counts)
    integ = miscalibration_area(mean_p, obs)
    yf = y.astype(np.float64)
    return CalibrationCurve(
        bin_edges=edges, counts=counts, mean_confidence=mean_p, observed=obs,
        miscalibration_area=area, integrated_area=integ,
        sharpness=float(np.sqrt(np.mean(p * (1.0 - p)))), dispersion=float(np.std(p)),
        brier=float(np.mean((p - yf) ** 2)), accuracy=float(yf.mean()),
        mean_confidence_all=float(p.mean()), n=int(p.size),
        s=None if s is None else float(s),
    )


# ---------------------------------------------------------------------------- frame statistics
#: per-structure statistics of a per-atom signal: max, mean, or a quantile "qNN" (0 < NN <= 100)
FRAME_STATISTICS = ("max", "mean", "q90", "q99")


def _quantile_of(on: str) -> float | None:
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


def parse_selection(select: str) -> tuple[str, tuple[int, ...]]:
    """``"tags=2"`` or ``"tags=1,2"`` -> ("tags", (1, 2)) (sorted, unique): OC20 tags, 0 fixed
    subsurface, 1 surface, 2 adsorbate. InvalidParameterError for anything else."""
    name, sep, rest = str(select).partition("=")
    try:
        vals = tuple(sorted({int(t) for t in rest.split(",")})) if sep else ()
    except ValueError:
        vals = ()
    if name.strip() != "tags" or not vals:
        raise InvalidParameterError(
            f"select must be a boolean mask, an index array or 'tags=T[,T...]' (e.g. 'tags=2' "
            f"for OC20 adsorbate atoms), got {select!r}")
    return "tags", vals


def selection_mask(select: Any, n_atoms: int, tags: Any = None) -> np.ndarray | None:
    """The atoms a statistic is taken over, as a boolean mask (n_atoms,), or None for all.

    ``select``: None (all atoms), a boolean mask (n_atoms,), an integer index array, or a
    string ``"tags=2"`` / ``"tags=1,2"`` resolved with ``tags`` (n_atoms,) integer tags (e.g.
    ``atoms.get_tags()``; resolved again at every call, so it follows the structure). One rule
    for the observers (per step) and for fitting in-domain alarm statistics."""
    if select is None:
        return None
    if isinstance(select, str):
        _, vals = parse_selection(select)
        if tags is None:
            raise DataError(f"select={select!r} needs the atoms' tags")
        t = np.asarray(tags)
        if t.shape != (n_atoms,):
            raise DataError(f"tags have shape {t.shape}, expected ({n_atoms},)")
        return np.isin(t, vals)
    sel = np.asarray(select)
    if sel.dtype == bool:
        if sel.shape != (n_atoms,):
            raise DataError(f"a boolean select mask must have shape ({n_atoms},), got "
                            f"{sel.shape}")
        return sel
    if sel.ndim != 1 or (sel.size and not np.issubdtype(sel.dtype, np.integer)):
        raise DataError(f"select must be a boolean mask, integer indices or 'tags=...', got "
                        f"an array of shape {sel.shape} dtype {sel.dtype}")
    sel = sel.astype(np.int64)
    if sel.size and (sel.min() < -n_atoms or sel.max() >= n_atoms):
        raise DataError(f"select indices out of range for {n_atoms} atoms")
    mask = np.zeros(n_atoms, dtype=bool)
    mask[sel] = True
    return mask


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
    q = _quantile_of(on)
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
    q = _quantile_of(on)
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


def stat_key(signal: str, on: str = "max", select: str | None = None) -> str:
    """The name of a frame statistic, e.g. ``"novelty:max"``, ``"novelty:q99"``,
    ``"novelty:max@tags=2"``: the key of its in-domain values in
    ``estimator.calibration_.thresholds``. ``select`` must be None or a "tags=..." string (a
    mask or index array names no reusable statistic). Inverse: :func:`parse_stat_key`."""
    if not isinstance(signal, str) or not signal or any(c in signal for c in ":@"):
        raise InvalidParameterError(f"signal must be a per-atom result name, got {signal!r}")
    _quantile_of(on)
    key = f"{signal}:{on}"
    if select is None:
        return key
    if not isinstance(select, str):
        raise InvalidParameterError(
            "an in-domain statistic needs select=None or a 'tags=...' string, not a mask or "
            "index array (their atoms are not the same from one structure to the next)")
    _, vals = parse_selection(select)
    return f"{key}@tags={','.join(map(str, vals))}"


def parse_stat_key(key: str) -> tuple[str, str, str | None]:
    """``"novelty:max@tags=2"`` -> ("novelty", "max", "tags=2"); inverse of :func:`stat_key`
    (which normalises the selection, e.g. "tags=2,1" -> "tags=1,2")."""
    head, _, select = str(key).partition("@")
    signal, sep, on = head.partition(":")
    if not sep:
        raise InvalidParameterError(f"a statistic key reads 'SIGNAL:ON[@tags=T]', got {key!r}")
    sel = select or None
    stat_key(signal, on, sel)  # validates
    if sel is not None:
        sel = "tags=" + ",".join(map(str, parse_selection(sel)[1]))
    return signal, on, sel


def alarm_threshold(in_domain_values: np.ndarray, alarm_rate: float) -> float:
    """Threshold that a new in-domain frame statistic exceeds with probability <= alarm_rate.

    The conformal (split-conformal, one-sided) quantile of the n in-domain values: the
    k-th smallest with k = ceil((n + 1)(1 - alarm_rate)). If the new frame and the n
    in-domain frames are exchangeable, P(new > threshold) <= (n + 1 - k)/(n + 1) <= alarm_rate
    (and >= alarm_rate - 1/(n + 1) for continuous values). With too few values for the rate
    (k > n, i.e. alarm_rate < 1/(n + 1)) no finite threshold guarantees it: returns inf (the
    alarm never fires) with a warning naming the smallest attainable rate, 1/(n + 1).

    in_domain_values: (n,) finite or +inf statistics of in-domain frames (NaN raises)."""
    import warnings

    v = np.asarray(in_domain_values, dtype=np.float64).ravel()
    if not (isinstance(alarm_rate, (int, float, np.floating)) and not isinstance(alarm_rate, bool)
            and 0 < alarm_rate < 1):
        raise InvalidParameterError(f"alarm_rate must be a number in (0, 1), got {alarm_rate!r}")
    if v.size == 0:
        raise DataError("no in-domain values to set an alarm threshold from")
    if np.isnan(v).any():
        raise DataError(f"in-domain values contain NaN at positions "
                        f"{np.flatnonzero(np.isnan(v))[:10].tolist()}")
    n = v.size
    k = int(np.ceil((n + 1) * (1.0 - float(alarm_rate)) - 1e-9))
    if k > n:
        warnings.warn(f"alarm_rate {alarm_rate:g} is below the smallest rate {n} in-domain "
                      f"frames can guarantee, 1/(n+1) = {1.0 / (n + 1):.3g}: the threshold is "
                      "inf and the alarm never fires; use more in-domain frames or a larger "
                      "alarm_rate", UserWarning, stacklevel=2)
        return float("inf")
    return float(np.sort(v)[max(k, 1) - 1])


# ---------------------------------------------------------------------------- bootstrap
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
