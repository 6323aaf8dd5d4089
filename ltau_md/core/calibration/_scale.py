"""Fitting the tolerance scale s that minimises the miscalibration area (:func:`fit_scale`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core._param_validation import Interval, Satisfies, StrOptions, validate_params
from ltau_md.core.calibration._common import (
    group_labels,
    neighbors_of,
    target_tolerance,
    tolerance_args,
)
from ltau_md.core.estimator import Calibration
from ltau_md.core.exceptions import DataError
from ltau_md.core.metrics import Binning, calibration_curve, force_error_norm, within_tolerance
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = ["FIT_SCALE_CONSTRAINTS", "ScaleFit", "fit_scale", "search_scale"]


def _is_bounds(b: Any) -> bool:
    lo, hi = (float(v) for v in b)
    return 0 < lo < hi and math.isfinite(hi)


#: declared constraints of :func:`fit_scale`'s keyword arguments
FIT_SCALE_CONSTRAINTS: dict[str, list] = {
    "target_atol": [Interval(Real, 0, None, closed="neither"), None],
    "s_bounds": [Satisfies(_is_bounds, "(low, high) with 0 < low < high < inf")],
    "n_grid": [Interval(Integral, 3, None, closed="left")],
    "n_refine": [Interval(Integral, 0, None, closed="left")],
    "n_bins": [Interval(Integral, 1, None, closed="left")],
    "binning": [StrOptions({"uniform", "quantile"})],
    "min_group_atoms": [Interval(Integral, 1, None, closed="left")],
    "group_key": [str, None],
    "store": ["boolean"],
}


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

    def to_calibration(self, *, group_key: str | None = None, n_bins: int = 20,
                       binning: str = "uniform") -> Calibration:
        """The estimator's fitted state (:class:`~ltau_md.core.estimator.Calibration`) of this
        fit."""
        return Calibration(
            s=self.s, target_atol=self.target_atol, s_per_group=dict(self.s_per_group),
            group_key=group_key, area=self.area, area_unscaled=self.area_unscaled,
            n_atoms=self.n_atoms, n_bins=int(n_bins), binning=str(binning),
            area_per_group=dict(self.area_per_group), n_per_group=dict(self.n_per_group))


def search_scale(area_at, s_bounds: tuple[float, float], n_grid: int, n_refine: int
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
    group_key: str | None = None,
    store: bool = True,
) -> ScaleFit:
    """Fit the tolerance scale s minimising the miscalibration area on calibration atoms.

    estimator: a fitted LTAUEstimator. descriptors (n, D) of the calibration atoms, or their
    neighbour ``indices`` (n, k) (one FAISS search is done either way, then every s re-scores
    the same neighbours). force_errors: (n,) |F_ref - F_model| or (n, 3) vectors, eV/A.
    groups: optional (n,) labels (e.g. config_type per atom); each label with at least
    ``min_group_atoms`` atoms gets its own s as well (used at inference for that group).
    target_atol: the tolerance T (eV/A) the confidences should be calibrated for (default:
    :func:`target_tolerance`). group_key: the ``atoms.info`` key the labels came from, stored
    so the calculator can read each structure's group. ref_force_norm (n,): |F_j,ref| in eV/A,
    required if the estimator uses rtol > 0. s_bounds: search interval for s (the error
    histograms resolve atol*1e-2 .. atol*1e2). n_grid: log-spaced coarse grid points;
    n_refine: extra points between the best coarse point's neighbours.

    With ``store`` the result is set as ``estimator.calibration_`` by
    :meth:`~ltau_md.core.estimator.LTAUEstimator.set_calibration` (``estimator.save``
    persists it; alarm statistics of the uncertainty, computed at the old scale, are dropped
    with a warning); the ``s`` parameter is not changed, and a fit warns if it is set, since
    a set ``s`` overrides the calibration. Keyword arguments are checked against
    :data:`FIT_SCALE_CONSTRAINTS`. A fit that ends at a bound of ``s_bounds`` warns (widen the
    bounds).
    """
    check_is_fitted(estimator)
    err = force_error_norm(force_errors)
    n = err.shape[0]
    if n == 0:
        raise DataError("no calibration atoms")
    validate_params(FIT_SCALE_CONSTRAINTS, {
        "target_atol": target_atol, "s_bounds": s_bounds, "n_grid": n_grid,
        "n_refine": n_refine, "n_bins": n_bins, "binning": binning,
        "min_group_atoms": min_group_atoms, "group_key": group_key, "store": store},
        owner="fit_scale")
    lo, hi = map(float, s_bounds)
    idx = neighbors_of(estimator, descriptors, indices)
    if idx.shape[0] != n:
        raise DataError(f"{idx.shape[0]} atoms have neighbours but {n} have errors")
    rtol, ref = tolerance_args(estimator, n, ref_force_norm)
    target = target_tolerance(estimator, target_atol)
    ok = within_tolerance(err, target, 1.0, rtol, ref)
    if ok.all() or not ok.any():
        raise DataError(f"{'every' if ok.all() else 'no'} calibration atom is within the target "
                        f"tolerance {target:.4g} eV/A: choose a target_atol inside the error "
                        f"range ({err.min():.3g} .. {err.max():.3g} eV/A)")
    groups = group_labels(groups, n)

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
    s_fit, a_fit, s_grid, a_grid, at_bound = search_scale(area_all, (lo, hi), n_grid, n_refine)
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
            sg, ag, _, _, _ = search_scale(area_for(mask), (lo, hi), n_grid, n_refine)
            fit.s_per_group[str(g)] = sg
            fit.area_per_group[str(g)] = ag
    if store:
        estimator.set_calibration(fit.to_calibration(group_key=group_key, n_bins=n_bins,
                                                     binning=binning))
    return fit
