"""Calibration of LTAU confidences, fitting the tolerance scale s, and dataset cartography.

Convention. The estimator's confidence p_j at scale s is the mean over the k nearest training
atoms of the fraction of their logged training errors <= atol*s (+ rtol*|F_i|). Calibrated, it
is read as the probability that the deployed model's force error on atom j is within a *fixed
target tolerance* T (default T = atol, the tolerance the estimator was built with):

    P(|F_j,ref - F_j,model|_2 <= T + rtol*|F_j,ref|) = p_j(s).

s only scales the tolerance at which the training-error distributions are read; it absorbs the
gap between training-time and test-time errors (test errors c times the logged training errors
give s = 1/c). This is the convention of the LTAU paper's code, which compares the logged
errors at atol with test errors at atol*s (their s is our 1/s). The alternative, judging the
outcome at the same tolerance atol*s that p is computed at (``outcome="scaled"`` in
:func:`evaluate_calibration`), cannot be *fitted*: for s -> 0 every p -> 0 and every error is
out of tolerance, for s -> oo every p -> 1 and every error is within it, so both extremes are
trivially perfectly calibrated and minimising the area runs to a bound of the search.

The *calibration curve* bins test atoms by p_j and compares each bin's mean confidence with the
observed fraction of its atoms within tolerance.

Miscalibration area (the number reported everywhere in ltau-md, and minimised by
:func:`fit_scale`): the area between the calibration curve and the diagonal, *weighted by bin
population*, i.e. sum_b n_b |observed_b - mean_confidence_b| / n (the expected calibration
error; it tends to int |P(ok | p) - p| dF(p) as bins shrink). Population weighting measures the
area along the distribution of the predictions, so it cannot be lowered by squeezing all
confidences into a narrow band, which an unweighted integral over the populated range allows.
The uncertainty-toolbox style integrated area, int |observed(x) - x| dx over the populated span,
is reported alongside as ``integrated_area``. Both are 0 for a perfectly calibrated predictor,
up to sampling noise (about 0.8 * sqrt(p(1-p)/n_b) per bin).

:func:`fit_scale` finds s on a calibration split by a log-spaced grid search over s followed by
a finer grid around the best point, re-scoring the neighbours of a single FAISS search with
:meth:`LTAUEstimator.confidence_from_neighbors`. It stores the fitted s in the estimator
(``estimator.s``; per group in ``estimator.metadata["s_per_group"]``; the target tolerance and
areas in ``estimator.metadata["calibration"]``), so ``save`` persists them.

:func:`cartography` (LTAU paper, App. E): mu_M(p_i) vs sigma_M(p_i) of the training atoms over
ensemble members, labelling atoms easy / ambiguous / hard.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .exceptions import DataError, LTAUError
from .metrics import miscalibration_area

if TYPE_CHECKING:
    from .confidence import ErrorSummary
    from .estimator import LTAUEstimator

__all__ = [
    "CARTOGRAPHY_LABELS",
    "CalibrationCurve",
    "Cartography",
    "ScaleFit",
    "calibrate_structures",
    "calibration_curve",
    "cartography",
    "cartography_from",
    "evaluate_calibration",
    "fit_scale",
    "force_error_norm",
    "reference_forces",
    "split_frames",
    "target_tolerance",
    "within_tolerance",
]

Binning = Literal["uniform", "quantile"]


# ---------------------------------------------------------------------------- curves
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
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, np.ndarray):
                out[k] = [None if not np.isfinite(x) else float(x) for x in v.astype(float)]
            else:
                out[k] = v
        return out


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
        raise DataError(f"atol must be positive and finite (eV/A), got {atol}")
    if not (np.isfinite(s) and s > 0):
        raise DataError(f"scaling factor s must be positive and finite, got {s}")
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
    raise DataError(f"binning must be 'uniform' or 'quantile', got {binning!r}")


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
        raise DataError(f"n_bins must be >= 1, got {n_bins}")
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


# ---------------------------------------------------------------------------- estimator glue
def _check_estimator(estimator: LTAUEstimator) -> None:
    if not getattr(estimator, "is_fitted", False):
        raise LTAUError("the estimator is not fitted: call fit() or load() first")


def _neighbors(estimator: LTAUEstimator, descriptors: np.ndarray | None,
               indices: np.ndarray | None) -> np.ndarray:
    if indices is not None:
        idx = np.asarray(indices)
        if idx.ndim != 2:
            raise DataError(f"indices must be (n, k), got shape {idx.shape}")
        return idx
    if descriptors is None:
        raise DataError("pass descriptors (n, D) or precomputed neighbour indices (n, k)")
    return estimator.kneighbors(descriptors)[1]


def _tolerance_args(estimator: LTAUEstimator, n: int, ref_force_norm: np.ndarray | None
                    ) -> tuple[float, np.ndarray | None]:
    rtol = float(estimator.summary_.rtol)
    if rtol > 0 and ref_force_norm is None:
        raise DataError(f"the estimator uses rtol={rtol}: pass ref_force_norm, the reference "
                        "force norms |F_j| (eV/A) of the calibration atoms")
    if ref_force_norm is not None:
        ref_force_norm = np.asarray(ref_force_norm, dtype=np.float64)
        if ref_force_norm.shape != (n,):
            raise DataError(f"ref_force_norm has shape {ref_force_norm.shape}, expected ({n},)")
    return rtol, ref_force_norm


def target_tolerance(estimator: LTAUEstimator, target_atol: float | None = None) -> float:
    """The tolerance T (eV/A) calibrated confidences refer to: ``target_atol`` if given, else
    the one stored by :func:`fit_scale` in ``estimator.metadata["calibration"]``, else the
    estimator's atol."""
    if target_atol is None:
        target_atol = (estimator.metadata.get("calibration") or {}).get("target_atol")
    t = float(estimator.atol_ if target_atol is None else target_atol)
    if not (np.isfinite(t) and t > 0):
        raise DataError(f"target tolerance must be positive and finite (eV/A), got {t}")
    return t


def evaluate_calibration(
    estimator: LTAUEstimator,
    descriptors: np.ndarray | None,
    force_errors: np.ndarray,
    *,
    s: float | None = None,
    indices: np.ndarray | None = None,
    target_atol: float | None = None,
    outcome: Literal["target", "scaled"] = "target",
    ref_force_norm: np.ndarray | None = None,
    n_bins: int = 20,
    binning: Binning = "uniform",
) -> CalibrationCurve:
    """Calibration curve of the estimator's confidences at scale ``s`` (default
    ``estimator.s``) on test atoms with ``descriptors`` (n, D) (or neighbour ``indices``
    (n, k) from an earlier search) and observed force errors (n,) or (n, 3) in eV/A.

    outcome "target": an atom is within tolerance if |error| <= T + rtol*|F_ref| with T from
    :func:`target_tolerance` (the convention :func:`fit_scale` calibrates for);
    "scaled": if |error| <= atol*s + rtol*|F_ref| (same tolerance as p; diagnostic only, see
    the module docstring)."""
    _check_estimator(estimator)
    err = force_error_norm(force_errors)
    idx = _neighbors(estimator, descriptors, indices)
    if idx.shape[0] != err.shape[0]:
        raise DataError(f"{idx.shape[0]} atoms have neighbours but {err.shape[0]} have errors")
    s = float(estimator.s if s is None else s)
    rtol, ref = _tolerance_args(estimator, err.shape[0], ref_force_norm)
    if outcome == "target":
        ok = within_tolerance(err, target_tolerance(estimator, target_atol), 1.0, rtol, ref)
    elif outcome == "scaled":
        ok = within_tolerance(err, float(estimator.atol_), s, rtol, ref)
    else:
        raise DataError(f"outcome must be 'target' or 'scaled', got {outcome!r}")
    conf, _ = estimator.confidence_from_neighbors(idx, s)
    return calibration_curve(conf, ok, n_bins=n_bins, binning=binning, s=s)


@dataclass
class ScaleFit:
    """Result of :func:`fit_scale`: fitted ``s`` (training tolerance atol*s), the target
    tolerance ``target_atol`` (eV/A) the confidences are calibrated for, the miscalibration
    area at s and at s = 1 (``area_unscaled``), the searched grid (``s_grid``, ``area_grid``),
    per-group scales and areas, and the number of calibration atoms."""

    s: float
    area: float
    area_unscaled: float
    target_atol: float
    s_grid: np.ndarray
    area_grid: np.ndarray
    n_atoms: int
    s_per_group: dict[str, float] = field(default_factory=dict)
    area_per_group: dict[str, float] = field(default_factory=dict)
    n_per_group: dict[str, int] = field(default_factory=dict)
    at_bound: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["s_grid"] = self.s_grid.tolist()
        d["area_grid"] = self.area_grid.tolist()
        return d


def _search_scale(area_at, s_bounds: tuple[float, float], n_grid: int, n_refine: int
                  ) -> tuple[float, float, np.ndarray, np.ndarray, bool]:
    """Minimise area_at(s) over log s: coarse log grid, then a finer grid between the best
    point's neighbours. Returns (s, area, all s evaluated (sorted), their areas, at_bound)."""
    lo, hi = np.log(s_bounds[0]), np.log(s_bounds[1])
    coarse = np.linspace(lo, hi, n_grid)
    vals = {float(x): area_at(float(np.exp(x))) for x in coarse}
    i = int(np.argmin([vals[float(x)] for x in coarse]))
    a, b = coarse[max(i - 1, 0)], coarse[min(i + 1, n_grid - 1)]
    for x in np.linspace(a, b, n_refine + 2)[1:-1]:
        if float(x) not in vals:
            vals[float(x)] = area_at(float(np.exp(x)))
    xs = np.array(sorted(vals))
    ar = np.array([vals[float(x)] for x in xs])
    # smallest area; among (numerically) equal minima take the middle one, so a flat valley
    # yields its centre rather than an edge
    best = np.flatnonzero(ar <= ar.min() + 1e-12)
    j = int(best[len(best) // 2])
    at_bound = bool(xs[j] <= lo + 1e-12 or xs[j] >= hi - 1e-12)
    return float(np.exp(xs[j])), float(ar[j]), np.exp(xs), ar, at_bound


def fit_scale(
    estimator: LTAUEstimator,
    descriptors: np.ndarray | None,
    force_errors: np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    indices: np.ndarray | None = None,
    target_atol: float | None = None,
    ref_force_norm: np.ndarray | None = None,
    s_bounds: tuple[float, float] = (0.02, 50.0),
    n_grid: int = 61,
    n_refine: int = 20,
    n_bins: int = 20,
    binning: Binning = "uniform",
    min_group_atoms: int = 50,
    store: bool = True,
) -> ScaleFit:
    """Fit the tolerance scale s minimising the miscalibration area on calibration atoms.

    estimator: a fitted LTAUEstimator. descriptors (n, D) of the calibration atoms, or their
    neighbour ``indices`` (n, k) (one FAISS search is done either way, then every s re-scores
    the same neighbours). force_errors: (n,) |F_ref - F_model| or (n, 3) vectors, eV/A.
    groups: optional (n,) labels (e.g. config_type per atom); each label with at least
    ``min_group_atoms`` atoms gets its own s as well. target_atol: the tolerance T (eV/A) the
    confidences should be calibrated for (default: the estimator's atol; see the module
    docstring). ref_force_norm (n,): |F_j,ref| in eV/A, required if the estimator uses
    rtol > 0. s_bounds: search interval for s (the error histograms resolve atol*1e-2 ..
    atol*1e2). n_grid: log-spaced coarse grid points; n_refine: extra points between the best
    coarse point's neighbours.

    With ``store`` the estimator gets ``estimator.s = s`` and
    ``estimator.metadata["s_per_group"]`` / ``["calibration"]``; ``estimator.save`` persists
    them. A fit that ends at a bound of ``s_bounds`` warns (widen the bounds).
    """
    _check_estimator(estimator)
    err = force_error_norm(force_errors)
    n = err.shape[0]
    if n == 0:
        raise DataError("no calibration atoms")
    lo, hi = map(float, s_bounds)
    if not (0 < lo < hi and np.isfinite(hi)):
        raise DataError(f"s_bounds must satisfy 0 < low < high, got {s_bounds}")
    if n_grid < 3 or n_refine < 0:
        raise DataError("n_grid must be >= 3 and n_refine >= 0")
    idx = _neighbors(estimator, descriptors, indices)
    if idx.shape[0] != n:
        raise DataError(f"{idx.shape[0]} atoms have neighbours but {n} have errors")
    rtol, ref = _tolerance_args(estimator, n, ref_force_norm)
    target = float(estimator.atol_ if target_atol is None else target_atol)
    ok = within_tolerance(err, target, 1.0, rtol, ref)
    if ok.all() or not ok.any():
        raise DataError(f"{'every' if ok.all() else 'no'} calibration atom is within the target "
                        f"tolerance {target:.4g} eV/A: choose a target_atol inside the error "
                        f"range ({err.min():.3g} .. {err.max():.3g} eV/A)")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise DataError(f"groups must be one label per atom ({n},), got {groups.shape}")

    cache: dict[float, np.ndarray] = {}

    def conf_at(s: float) -> np.ndarray:
        if s not in cache:
            cache[s] = np.asarray(estimator.confidence_from_neighbors(idx, s)[0])
        return cache[s]

    def area_for(mask: np.ndarray | None):
        o = ok if mask is None else ok[mask]

        def area_at(s: float) -> float:
            c = conf_at(s) if mask is None else conf_at(s)[mask]
            return calibration_curve(c, o, n_bins=n_bins, binning=binning).miscalibration_area
        return area_at

    area_all = area_for(None)
    s_fit, a_fit, s_grid, a_grid, at_bound = _search_scale(area_all, (lo, hi), n_grid, n_refine)
    if at_bound:
        warnings.warn(f"fitted s={s_fit:.4g} lies at a bound of s_bounds={s_bounds}; widen "
                      "the bounds", RuntimeWarning, stacklevel=2)
    fit = ScaleFit(s=s_fit, area=a_fit, area_unscaled=area_all(1.0), target_atol=target,
                   s_grid=s_grid, area_grid=a_grid, n_atoms=n, at_bound=at_bound)
    if groups is not None:
        for g in np.unique(groups):
            mask = groups == g
            fit.n_per_group[str(g)] = int(mask.sum())
            if mask.sum() < min_group_atoms or ok[mask].all() or not ok[mask].any():
                continue
            sg, ag, _, _, _ = _search_scale(area_for(mask), (lo, hi), n_grid, n_refine)
            fit.s_per_group[str(g)] = sg
            fit.area_per_group[str(g)] = ag
    if store:
        estimator.s = s_fit
        estimator.metadata["s_per_group"] = dict(fit.s_per_group)
        estimator.metadata["calibration"] = {
            "s": s_fit, "target_atol": target, "miscalibration_area": a_fit,
            "area_unscaled": fit.area_unscaled, "n_atoms": n, "n_bins": int(n_bins),
            "binning": binning, "area_per_group": dict(fit.area_per_group),
            "n_per_group": dict(fit.n_per_group),
        }
    return fit


def split_frames(frame_offsets: np.ndarray, fraction: float = 0.5, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Split atoms by whole structures into (calibration, evaluation) boolean masks (n_atoms,).

    ``fraction`` of the frames (rounded, at least one each side) go to calibration, chosen
    with ``seed``; splitting by frame keeps correlated atoms of one structure together."""
    off = np.asarray(frame_offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 3 or off[0] != 0 or np.any(np.diff(off) <= 0):
        raise DataError("frame_offsets must start at 0, increase strictly and hold >= 2 frames")
    if not 0 < fraction < 1:
        raise DataError(f"fraction must be in (0, 1), got {fraction}")
    n_frames = off.size - 1
    n_cal = int(np.clip(round(fraction * n_frames), 1, n_frames - 1))
    rng = np.random.default_rng(seed)
    cal_frames = np.zeros(n_frames, dtype=bool)
    cal_frames[rng.choice(n_frames, n_cal, replace=False)] = True
    cal = np.repeat(cal_frames, np.diff(off))
    return cal, ~cal


# ---------------------------------------------------------------------------- cartography
CARTOGRAPHY_LABELS = ("easy", "ambiguous", "hard")


@dataclass
class Cartography:
    """Dataset cartography of training atoms: ``mu`` = mu_M(p_i), ``sigma`` = sigma_M(p_i)
    over ensemble members, ``labels`` (n,) int codes into :data:`CARTOGRAPHY_LABELS`
    (0 easy, 1 ambiguous, 2 hard), ``weights`` (n,) suggested resampling weights (mean 1),
    and the thresholds used."""

    mu: np.ndarray
    sigma: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    sigma_threshold: float
    mu_threshold: float

    def label_names(self) -> np.ndarray:
        return np.asarray(CARTOGRAPHY_LABELS)[self.labels]

    def fractions(self) -> dict[str, float]:
        n = max(self.labels.size, 1)
        return {name: float(np.sum(self.labels == i) / n)
                for i, name in enumerate(CARTOGRAPHY_LABELS)}


def cartography(
    mu: np.ndarray,
    sigma: np.ndarray,
    *,
    ambiguous_quantile: float = 2.0 / 3.0,
    min_ambiguous_sigma: float = 0.05,
    mu_threshold: float = 0.5,
) -> Cartography:
    """Label training atoms from their ensemble mean mu and spread sigma of p (Swayamdipta et
    al. 2020 cartography applied to LTAU, paper App. E).

    ambiguous: sigma >= max(quantile(sigma, ``ambiguous_quantile``), ``min_ambiguous_sigma``)
    (members disagree); otherwise easy if mu >= ``mu_threshold`` else hard (consistently
    learnt / consistently not learnt). weights = (1 - mu) + sigma normalised to mean 1
    (uniform if all zero): emphasis for hard and ambiguous atoms when resampling.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or mu.shape != sigma.shape or mu.size == 0:
        raise DataError(f"mu and sigma must be non-empty 1-D of equal shape, got {mu.shape}, "
                        f"{sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise DataError("mu/sigma contain NaN/inf")
    if not 0 <= ambiguous_quantile <= 1:
        raise DataError(f"ambiguous_quantile must be in [0, 1], got {ambiguous_quantile}")
    thr = max(float(np.quantile(sigma, ambiguous_quantile)), float(min_ambiguous_sigma))
    amb = (sigma >= thr) & (sigma > 0)
    labels = np.where(amb, 1, np.where(mu >= mu_threshold, 0, 2)).astype(np.int8)
    w = (1.0 - mu) + sigma
    w = w / w.mean() if w.sum() > 0 else np.ones_like(w)
    return Cartography(mu=mu, sigma=sigma, labels=labels, weights=w, sigma_threshold=thr,
                       mu_threshold=float(mu_threshold))


def cartography_from(source: LTAUEstimator | ErrorSummary, s: float | None = None,
                     **kwargs: Any) -> Cartography:
    """:func:`cartography` of the training atoms of a fitted estimator or an ErrorSummary at
    tolerance atol*s (default: the estimator's s, or 1 for a summary)."""
    summary = getattr(source, "summary_", source)
    if s is None:
        s = float(getattr(source, "s", 1.0)) if hasattr(source, "summary_") else 1.0
    mu, sigma = summary.confidence(float(s))
    return cartography(mu, sigma, **kwargs)


# ---------------------------------------------------------------------------- structures, CLI
def reference_forces(atoms: Any, index: int = 0) -> np.ndarray:
    """Reference forces (n, 3) eV/A of a labelled structure: its calculator's results (e.g.
    extxyz ``forces`` read back into a SinglePointCalculator) or an ``arrays["forces"]``."""
    calc = getattr(atoms, "calc", None)
    res = getattr(calc, "results", None) or {}
    if "forces" in res:
        return np.asarray(res["forces"], dtype=np.float64)
    if "forces" in getattr(atoms, "arrays", {}):
        return np.asarray(atoms.arrays["forces"], dtype=np.float64)
    raise DataError(f"structure {index} has no reference forces (needed for calibration)")


def calibrate_structures(
    model: Any,
    estimator: LTAUEstimator,
    frames: Sequence[Any],
    *,
    group_key: str | None = None,
    target_atol: float | None = None,
    batch_size: int = 16,
    **fit_kwargs: Any,
) -> tuple[ScaleFit, dict[str, np.ndarray]]:
    """Fit s on labelled structures (ASE Atoms with reference forces, eV/A) evaluated with a
    :class:`~ltau_md.model.FeatureModel` (the deployed model the estimator was fitted for).

    ``group_key``: an ``atoms.info`` key (e.g. "config_type") whose value labels every atom
    of a structure for per-group s. Returns the :class:`ScaleFit` (stored in the estimator
    unless ``store=False`` is passed) and the arrays used: ``errors`` (n,) eV/A,
    ``indices`` (n, k), ``groups`` (n,) or absent, ``frame_offsets`` (F+1,)."""
    frames = list(frames)
    if not frames:
        raise DataError("no calibration structures given")
    refs = [reference_forces(a, i) for i, a in enumerate(frames)]
    outs: list[Any] = []
    many = getattr(model, "evaluate_many", None)
    for i in range(0, len(frames), max(int(batch_size), 1)):
        part = frames[i:i + max(int(batch_size), 1)]
        outs.extend(many(part) if many is not None else [model.evaluate(a) for a in part])
    feats = np.concatenate([np.asarray(o.features) for o in outs])
    err = np.linalg.norm(np.concatenate(refs) - np.concatenate([o.forces for o in outs]), axis=1)
    idx = estimator.kneighbors(feats)[1]
    arrays: dict[str, np.ndarray] = {
        "errors": err, "indices": idx,
        "frame_offsets": np.concatenate([[0], np.cumsum([len(a) for a in frames])]),
    }
    groups = None
    if group_key is not None:
        missing = [i for i, a in enumerate(frames) if group_key not in a.info]
        if missing:
            raise DataError(f"structures {missing[:10]} lack info[{group_key!r}]")
        groups = np.concatenate([[str(a.info[group_key])] * len(a) for a in frames])
        arrays["groups"] = groups
    ref_norm = None
    if float(estimator.summary_.rtol) > 0:
        ref_norm = np.linalg.norm(np.concatenate(refs), axis=1)
    fit = fit_scale(estimator, None, err, groups, indices=idx, target_atol=target_atol,
                    ref_force_norm=ref_norm, **fit_kwargs)
    return fit, arrays
