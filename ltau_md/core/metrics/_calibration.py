"""Calibration curves of confidences and of predicted errors, and the miscalibration area.

:func:`calibration_curve` (-> :class:`CalibrationCurve`) bins confidences against
within-tolerance outcomes (:func:`within_tolerance`, :func:`force_error_norm`, eV/A);
:func:`binned_error_calibration` is the error-based calibration of a predicted error in eV/A;
:func:`miscalibration_area` is the area between a calibration curve and the diagonal
(population-weighted, see :mod:`ltau_md.core.metrics`). A method that predicts a Gaussian
force error of spread sigma (eV/A, e.g. an ensemble or a variance head) gives confidences on
the same footing through :func:`gaussian_confidence`, and :func:`gaussian_force_nll` scores it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ltau_md.core._param_validation import check_positive
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.files import to_json_safe
from ltau_md.core.metrics._arrays import as_1d

__all__ = [
    "BinnedErrorCalibration",
    "Binning",
    "CalibrationCurve",
    "binned_error_calibration",
    "calibration_curve",
    "force_error_norm",
    "gaussian_confidence",
    "gaussian_force_nll",
    "miscalibration_area",
    "within_tolerance",
]


Binning = Literal["uniform", "quantile"]


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
    p = as_1d(predicted, "predicted")
    err = np.asarray(errors, dtype=np.float64)
    if err.ndim == 2:
        err = np.linalg.norm(err, axis=1)
    err = as_1d(err, "errors", p.shape[0])
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


@dataclass
class CalibrationCurve:
    """Binned calibration of confidences against within-tolerance outcomes.

    Per bin b (``bin_edges`` (B+1,) in confidence): ``counts`` (B,), ``mean_confidence`` (B,)
    and ``observed`` fraction within tolerance (B,), NaN for empty bins.
    ``miscalibration_area``: population-weighted |observed - confidence| (package docstring);
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


def _component_std(force_std: np.ndarray) -> np.ndarray:
    sd = np.asarray(force_std, dtype=np.float64) / np.sqrt(3.0)
    if sd.ndim != 1 or not np.all(np.isfinite(sd)) or np.any(sd <= 0):
        raise DataError("force_std must be a 1-D array of finite values > 0")
    return sd


def gaussian_confidence(force_std: np.ndarray, atol: float) -> np.ndarray:
    """P(|error| <= atol) per atom (n,) for an isotropic Gaussian force error whose spread
    ``force_std`` (n,) eV/A is sqrt of the variance summed over x, y, z (so each component's
    std is force_std / sqrt(3), and |error| / that std follows a chi distribution with 3
    degrees of freedom): the confidence such a method predicts at the tolerance LTAU uses."""
    from scipy.stats import chi

    check_positive("atol (eV/A)", atol)
    return chi.cdf(float(atol) / _component_std(force_std), 3)


def gaussian_force_nll(force_std: np.ndarray, abs_error: np.ndarray) -> float:
    """Mean negative log-likelihood per force component (nats) of errors of norm
    ``abs_error`` (n,) eV/A (or (n, 3) vectors) under the isotropic Gaussian of spread
    ``force_std`` (n,) eV/A (see :func:`gaussian_confidence`)."""
    sd = _component_std(force_std)
    err = force_error_norm(abs_error)
    if err.shape != sd.shape:
        raise DataError(f"abs_error has {err.shape[0]} atoms, force_std {sd.shape[0]}")
    var = sd**2
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + err**2 / (6.0 * var)))


def within_tolerance(abs_error: np.ndarray, atol: float, s: float = 1.0, rtol: float = 0.0,
                     ref_force_norm: np.ndarray | None = None) -> np.ndarray:
    """Boolean (n,): |error_j| <= atol*s + rtol*|F_j,ref| (all in eV/A)."""
    err = force_error_norm(abs_error)
    check_positive("atol (eV/A)", atol)
    check_positive("scaling factor s", s)
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
