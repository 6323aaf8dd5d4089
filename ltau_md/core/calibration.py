"""Calibrating LTAU confidences: fitting the tolerance scale s, evaluating the calibration.

Convention. The estimator's confidence p_j at scale s is the mean over the k nearest training
atoms of the fraction of their logged training errors <= atol*s (+ rtol*|F_i|). Calibrated, it
is read as the probability that the deployed model's force error on atom j is within a *fixed
target tolerance* T (:func:`target_tolerance`: the one given, else the fitted calibration's,
else the estimator's atol; the same default in :func:`fit_scale` and
:func:`evaluate_calibration`):

    P(|F_j,ref - F_j,model|_2 <= T + rtol*|F_j,ref|) = p_j(s).

s only scales the tolerance at which the training-error distributions are read; it absorbs the
gap between training-time and test-time errors (test errors c times the logged training errors
give s = 1/c). This is the convention of the LTAU paper's code, which compares the logged
errors at atol with test errors at atol*s (their s is our 1/s). The alternative, judging the
outcome at the same tolerance atol*s that p is computed at (``outcome="scaled"`` in
:func:`evaluate_calibration`), cannot be *fitted*: for s -> 0 every p -> 0 and every error is
out of tolerance, for s -> oo every p -> 1 and every error is within it, so both extremes are
trivially perfectly calibrated and minimising the area runs to a bound of the search.

Calibration curves and the miscalibration area are defined in :mod:`ltau_md.core.metrics`
(:func:`~ltau_md.core.metrics.calibration_curve`).

:func:`fit_scale` finds s on a calibration split by a log-spaced grid search over s followed by
a finer grid around the best point, re-scoring the neighbours of a single FAISS search with
:meth:`LTAUEstimator.confidence_from_neighbors`. It stores the result as the estimator's fitted
calibration, ``estimator.calibration_`` (:class:`~ltau_md.core.estimator.Calibration`: s, T,
per-group s, areas, counts), which ``save`` writes to the manifest's ``"calibration"`` section.
The estimator's ``s`` parameter is left alone: None (the default) means "use the calibration".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ltau_md.core._io import reference_forces
from ltau_md.core._validate import check_frame_offsets
from ltau_md.core.estimator import Calibration
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics import (
    Binning,
    CalibrationCurve,
    calibration_curve,
    force_error_norm,
    frame_statistics,
    parse_stat_key,
    selection_mask,
    stat_key,
    within_tolerance,
)
from ltau_md.core.model import evaluate_structures, structure_offsets
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = [
    "DEFAULT_ALARM_STATS",
    "Calibration",
    "CalibrationCurve",
    "ScaleFit",
    "alarm_statistics_from_structures",
    "alarm_statistics_from_training",
    "calibrate_structures",
    "calibration_curve",
    "evaluate_calibration",
    "fit_alarm_thresholds",
    "fit_scale",
    "force_error_norm",
    "reference_forces",
    "split_frames",
    "target_tolerance",
    "within_tolerance",
]


# ---------------------------------------------------------------------------- estimator glue
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


def _groups(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (n,):
        raise DataError(f"groups must be one label per atom ({n},), got {g.shape}")
    return g.astype(str)


def target_tolerance(estimator: LTAUEstimator, target_atol: float | None = None) -> float:
    """The target tolerance T (eV/A) calibrated confidences refer to: ``target_atol`` if given,
    else the fitted calibration's (``estimator.calibration_.target_atol``), else the
    estimator's atol. The one default of :func:`fit_scale` and :func:`evaluate_calibration`."""
    check_is_fitted(estimator)
    if target_atol is None:
        cal = estimator.calibration_
        target_atol = estimator.atol_ if cal is None else cal.target_atol
    t = float(target_atol)
    if not (np.isfinite(t) and t > 0):
        raise InvalidParameterError(
            f"target tolerance must be positive and finite (eV/A), got {t}")
    return t


def evaluate_calibration(
    estimator: LTAUEstimator,
    descriptors: np.ndarray | None,
    force_errors: np.ndarray,
    *,
    s: float | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    indices: np.ndarray | None = None,
    target_atol: float | None = None,
    outcome: Literal["target", "scaled"] = "target",
    ref_force_norm: np.ndarray | None = None,
    n_bins: int = 20,
    binning: Binning = "uniform",
) -> CalibrationCurve:
    """Calibration curve of the estimator's confidences on test atoms.

    Parameters
    ----------
    descriptors : (n, D) or None
        Descriptors of the test atoms (or pass their neighbour ``indices`` (n, k)).
    force_errors : (n,) or (n, 3)
        Observed force errors |F_ref - F_model| in eV/A.
    s : float, optional
        Scale the confidences are read at; default the estimator's
        :meth:`~LTAUEstimator.effective_s`, per atom's group if ``groups`` are given (as at
        inference).
    groups : (n,) labels, optional
        Group of each atom (e.g. config_type), selecting the fitted per-group scales.
    target_atol : float, optional
        T in eV/A, default :func:`target_tolerance`.
    outcome : {"target", "scaled"}
        "target": an atom is within tolerance if |error| <= T + rtol*|F_ref| (the convention
        :func:`fit_scale` calibrates for); "scaled": if |error| <= atol*s + rtol*|F_ref| (same
        tolerance as p; diagnostic only, see the module docstring; needs one s).
    """
    check_is_fitted(estimator)
    err = force_error_norm(force_errors)
    n = err.shape[0]
    idx = _neighbors(estimator, descriptors, indices)
    if idx.shape[0] != n:
        raise DataError(f"{idx.shape[0]} atoms have neighbours but {n} have errors")
    g = _groups(groups, n)
    rtol, ref = _tolerance_args(estimator, n, ref_force_norm)
    if s is not None or g is None:
        s_used: float | None = estimator.resolve_scale(s, None)
        conf = estimator.confidence_from_neighbors(idx, s_used)[0]
    else:
        conf = np.empty(n, dtype=np.float64)
        scales = set()
        for label in np.unique(g):
            mask = g == label
            scales.add(estimator.effective_s(label))
            conf[mask] = estimator.confidence_from_neighbors(idx[mask], group=label)[0]
        s_used = scales.pop() if len(scales) == 1 else None
    if outcome == "target":
        ok = within_tolerance(err, target_tolerance(estimator, target_atol), 1.0, rtol, ref)
    elif outcome == "scaled":
        if s_used is None:
            raise InvalidParameterError("outcome='scaled' needs one s, not per-group scales")
        ok = within_tolerance(err, float(estimator.atol_), s_used, rtol, ref)
    else:
        raise InvalidParameterError(f"outcome must be 'target' or 'scaled', got {outcome!r}")
    return calibration_curve(conf, ok, n_bins=n_bins, binning=binning, s=s_used)


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

    With ``store`` the result becomes ``estimator.calibration_`` (``estimator.save`` persists
    it); the ``s`` parameter is not changed, and a fit warns if it is set, since a set ``s``
    overrides the calibration. A fit that ends at a bound of ``s_bounds`` warns (widen the
    bounds).
    """
    check_is_fitted(estimator)
    err = force_error_norm(force_errors)
    n = err.shape[0]
    if n == 0:
        raise DataError("no calibration atoms")
    lo, hi = map(float, s_bounds)
    if not (0 < lo < hi and np.isfinite(hi)):
        raise InvalidParameterError(f"s_bounds must satisfy 0 < low < high, got {s_bounds}")
    if n_grid < 3 or n_refine < 0 or min_group_atoms < 1:
        raise InvalidParameterError("n_grid must be >= 3, n_refine >= 0, min_group_atoms >= 1")
    idx = _neighbors(estimator, descriptors, indices)
    if idx.shape[0] != n:
        raise DataError(f"{idx.shape[0]} atoms have neighbours but {n} have errors")
    rtol, ref = _tolerance_args(estimator, n, ref_force_norm)
    target = target_tolerance(estimator, target_atol)
    ok = within_tolerance(err, target, 1.0, rtol, ref)
    if ok.all() or not ok.any():
        raise DataError(f"{'every' if ok.all() else 'no'} calibration atom is within the target "
                        f"tolerance {target:.4g} eV/A: choose a target_atol inside the error "
                        f"range ({err.min():.3g} .. {err.max():.3g} eV/A)")
    groups = _groups(groups, n)

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
        old = estimator.calibration_
        estimator.calibration_ = fit.to_calibration(group_key=group_key, n_bins=n_bins,
                                                    binning=binning)
        if old is not None and old.thresholds:
            _carry_thresholds(old.thresholds, estimator.calibration_.thresholds)
        if estimator.s is not None:
            warnings.warn(f"the estimator's s parameter ({estimator.s}) overrides the fitted "
                          "calibration at inference; set estimator.s = None to use it",
                          UserWarning, stacklevel=2)
    return fit


def _carry_thresholds(old: dict, new: dict) -> None:
    """Copy the in-domain statistics that do not depend on s into a new calibration; warn
    about the dropped ones (uncertainty, confidence), which must be fitted again."""
    dropped = []
    for key, entry in old.items():
        if parse_stat_key(key)[0] in SCALE_DEPENDENT_SIGNALS:
            dropped.append(key)
        else:
            new.setdefault(key, entry)
    if dropped:
        warnings.warn(f"in-domain statistics {sorted(dropped)} depend on s and were dropped "
                      "with the new s: fit them again (fit_alarm_thresholds, "
                      "calibrate_structures)", UserWarning, stacklevel=3)


def split_frames(frame_offsets: np.ndarray, fraction: float = 0.5, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Split atoms by whole structures into (calibration, evaluation) boolean masks (n_atoms,).

    ``fraction`` of the frames (rounded, at least one each side) go to calibration, chosen
    with ``seed``; splitting by frame keeps correlated atoms of one structure together."""
    off = check_frame_offsets(frame_offsets, min_frames=2)
    if not 0 < fraction < 1:
        raise InvalidParameterError(f"fraction must be in (0, 1), got {fraction}")
    n_frames = off.size - 1
    n_cal = int(np.clip(round(fraction * n_frames), 1, n_frames - 1))
    rng = np.random.default_rng(seed)
    cal_frames = np.zeros(n_frames, dtype=bool)
    cal_frames[rng.choice(n_frames, n_cal, replace=False)] = True
    cal = np.repeat(cal_frames, np.diff(off))
    return cal, ~cal


# ---------------------------------------------------------------------------- structures
def calibrate_structures(
    model: Any,
    estimator: LTAUEstimator,
    frames: Sequence[Any],
    *,
    group_key: str | None = None,
    target_atol: float | None = None,
    batch_size: int = 16,
    alarm_stats: bool = True,
    **fit_kwargs: Any,
) -> tuple[ScaleFit, dict[str, np.ndarray]]:
    """Fit s on labelled structures (ASE Atoms with reference forces, eV/A) evaluated with a
    :class:`~ltau_md.core.model.FeatureModel` (the deployed model the estimator was fitted for).

    ``group_key``: an ``atoms.info`` key (e.g. "config_type") whose value labels every atom
    of a structure for per-group s (stored in the calibration, so the calculator reads it).
    Returns the :class:`ScaleFit` (stored as ``estimator.calibration_`` unless ``store=False``
    is passed) and the arrays used: ``errors`` (n,) eV/A,
    ``indices`` (n, k), ``groups`` (n,) or absent, ``frame_offsets`` (F+1,), ``novelty`` (n,).

    With ``alarm_stats`` (and ``store``) the in-domain frame statistics of the same structures
    (:data:`DEFAULT_ALARM_STATS`, uncertainty at the fitted s) are stored too, source
    "calibration" (:func:`fit_alarm_thresholds`), so Threshold(alarm_rate=...) works."""
    frames = list(frames)
    if not frames:
        raise DataError("no calibration structures given")
    refs = [reference_forces(a, i, "calibration") for i, a in enumerate(frames)]
    outs = evaluate_structures(model, frames, batch_size)
    feats = np.concatenate([np.asarray(o.features) for o in outs])
    err = np.linalg.norm(np.concatenate(refs) - np.concatenate([o.forces for o in outs]), axis=1)
    species = np.concatenate([a.numbers for a in frames])
    dist, idx = estimator.kneighbors(feats, species)
    arrays: dict[str, np.ndarray] = {
        "errors": err, "indices": idx,
        "frame_offsets": structure_offsets(frames),
        "novelty": estimator.novelty_of(dist, idx, species)[0],
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
    with warnings.catch_warnings():
        if alarm_stats:  # refitted below
            warnings.filterwarnings("ignore", message="in-domain statistics")
        fit = fit_scale(estimator, None, err, groups, indices=idx, target_atol=target_atol,
                        ref_force_norm=ref_norm, group_key=group_key, **fit_kwargs)
    if alarm_stats and fit_kwargs.get("store", True):
        per_atom = {"novelty": arrays["novelty"],
                    "uncertainty": _uncertainty(estimator, idx, frames)}
        fit_alarm_thresholds(estimator, per_atom, arrays["frame_offsets"],
                             **_tags_and_free(frames), source="calibration")
    return fit, arrays


# ---------------------------------------------------------------------------- alarm statistics
DEFAULT_ALARM_STATS = ("novelty:max", "novelty:mean", "uncertainty:max", "uncertainty:mean")
"""In-domain frame statistics fitted by default (plus their "@tags=2" variants, OC20 adsorbate
atoms, when the structures carry tag 2)."""

SCALE_DEPENDENT_SIGNALS = ("uncertainty", "confidence")
"""Signals whose values change with the tolerance scale s: their in-domain statistics are
dropped when a new s is fitted."""


def _uncertainty(estimator: LTAUEstimator, indices: np.ndarray, frames: Sequence[Any]
                 ) -> np.ndarray:
    """Per-atom uncertainty 1 - p at the scale the calculator would use for each structure
    (its calibration group's s where the calibration has a group key)."""
    cal = estimator.calibration_
    key = cal.group_key if cal is not None else None
    groups = np.concatenate([[str(a.info[key]) if key and key in a.info else ""] * len(a)
                             for a in frames])
    unc = np.empty(indices.shape[0])
    for g in np.unique(groups):
        m = groups == g
        unc[m] = 1.0 - estimator.confidence_from_neighbors(indices[m], group=g or None)[0]
    return unc


def _tags_and_free(frames: Sequence[Any]) -> dict[str, np.ndarray | None]:
    """{"tags": concatenated tags (None if all 0), "free": atoms not fixed by FixAtoms}."""
    from ase.constraints import FixAtoms

    tags = np.concatenate([a.get_tags() for a in frames])
    free = []
    for a in frames:
        f = np.ones(len(a), dtype=bool)
        for c in a.constraints:
            if isinstance(c, FixAtoms):
                f[c.index] = False
        free.append(f if f.any() else np.ones(len(a), dtype=bool))
    return {"tags": tags if tags.any() else None, "free": np.concatenate(free)}


def fit_alarm_thresholds(
    estimator: LTAUEstimator,
    per_atom: dict[str, np.ndarray],
    frame_offsets: np.ndarray,
    *,
    tags: np.ndarray | None = None,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    source: str = "held-out",
    free: np.ndarray | None = None,
    store: bool = True,
) -> dict[str, dict[str, Any]]:
    """Store the in-domain values of frame statistics, from which
    :class:`~ltau_md.core.observers.Threshold` (``alarm_rate=``) sets its threshold.

    Parameters
    ----------
    estimator : a fitted LTAUEstimator.
    per_atom : dict
        signal -> (n_atoms,) per-atom values of in-domain structures, e.g.
        ``{"novelty": ..., "uncertainty": ...}`` as the calculator returns them.
    frame_offsets : (F+1,) first atom of each structure, then n_atoms.
    tags : (n_atoms,) int, optional
        OC20 tags for "@tags=..." statistics.
    stats : keys "SIGNAL:ON[@tags=T]" (:func:`~ltau_md.core.metrics.stat_key`).
        The default, :data:`DEFAULT_ALARM_STATS`, keeps the signals present in ``per_atom``
        and adds the "@tags=2" variants when ``tags`` hold a 2; explicit keys must all be
        computable.
    source : where the values come from ("held-out", "validation", "calibration",
        "training-loo").
    free : (n_atoms,) bool, optional
        Atoms a statistic without "@" is taken over (the monitor uses the atoms not fixed by
        FixAtoms); default all atoms.
    store : put the entries into ``estimator.calibration_.thresholds`` (creating the
        calibration, s = the estimator's current scale, area None, if there is none);
        ``estimator.save`` persists them.

    Returns
    -------
    {key: {"values": sorted in-domain frame values, "n_frames": F used, "source": source}}.
    Frames without a selected atom (e.g. no adsorbate) are left out; frames with an infinite
    value too, with a warning.
    """
    check_is_fitted(estimator)
    off = check_frame_offsets(frame_offsets)
    n = int(off[-1])
    sig = {}
    for name, v in per_atom.items():
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (n,):
            raise DataError(f"per_atom[{name!r}] has shape {a.shape}, expected ({n},) (the "
                            "atoms of frame_offsets)")
        sig[name] = a
    t = None if tags is None else np.asarray(tags)
    default = tuple(stats) == DEFAULT_ALARM_STATS
    keys = [k for k in stats if not default or parse_stat_key(k)[0] in sig]
    if default and t is not None and np.any(t == 2):
        keys += [stat_key(*parse_stat_key(k)[:2], "tags=2") for k in keys]
    if free is not None:
        free = selection_mask(np.asarray(free, dtype=bool), n)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        signal, on, select = parse_stat_key(key)
        if signal not in sig:
            raise DataError(f"statistic {key!r} needs per_atom[{signal!r}]")
        mask = free if select is None else selection_mask(select, n, t)
        vals = frame_statistics(sig[signal], off, on, mask)
        vals = vals[~np.isnan(vals)]
        if np.isinf(vals).any():
            warnings.warn(f"{key}: {int(np.isinf(vals).sum())} in-domain frames with an "
                          "infinite value left out", UserWarning, stacklevel=2)
            vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            warnings.warn(f"{key}: no frame has a value (no selected atom); not stored",
                          UserWarning, stacklevel=2)
            continue
        out[stat_key(signal, on, select)] = {"values": np.sort(vals).tolist(),
                                             "n_frames": int(vals.size), "source": str(source)}
    if store and out:
        if estimator.calibration_ is None:
            estimator.calibration_ = Calibration(s=estimator.scale_, target_atol=estimator.atol_)
        estimator.calibration_.thresholds.update(out)
    return out


def alarm_statistics_from_structures(
    model: Any,
    estimator: LTAUEstimator,
    frames: Sequence[Any],
    *,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    source: str = "held-out",
    batch_size: int = 16,
    store: bool = True,
) -> dict[str, dict[str, Any]]:
    """In-domain frame statistics of ASE structures (no labels needed) evaluated with a
    :class:`~ltau_md.core.model.FeatureModel`, stored by :func:`fit_alarm_thresholds` (novelty and
    uncertainty as the calculator computes them; tags and FixAtoms from the structures).

    Use structures from the training distribution the model never saw, e.g. the training
    run's validation set; the alarm rate holds for new structures exchangeable with them."""
    frames = list(frames)
    if not frames:
        raise DataError("no in-domain structures given")
    outs = evaluate_structures(model, frames, batch_size)
    feats = np.concatenate([np.asarray(o.features) for o in outs])
    species = np.concatenate([a.numbers for a in frames])
    estimator.check_species(species)
    dist, idx = estimator.kneighbors(feats, species)
    per_atom = {"novelty": estimator.novelty_of(dist, idx, species)[0],
                "uncertainty": _uncertainty(estimator, idx, frames)}
    off = structure_offsets(frames)
    return fit_alarm_thresholds(estimator, per_atom, off, stats=stats, source=source,
                                store=store, **_tags_and_free(frames))


def alarm_statistics_from_training(
    estimator: LTAUEstimator,
    frame_offsets: np.ndarray,
    *,
    frames: Sequence[Any] | None = None,
    tags: np.ndarray | None = None,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    store: bool = True,
) -> dict[str, dict[str, Any]]:
    """Fallback without held-out structures: novelty statistics of the training frames from
    each training atom's leave-one-out novelty (``estimator.train_novelty_``), source
    "training-loo". ``frame_offsets`` (F+1,): the training frames (``ErrorLog.frame_offsets``).
    ``frames``: the training structures in the logged order, if at hand: their tags and
    FixAtoms constraints are used as :func:`alarm_statistics_from_structures` uses them (else
    ``tags`` (n_atoms,), and all atoms for statistics without a selection).

    Approximate: leaving one atom out keeps its frame-mates and the neighbouring frames of the
    same trajectory in the index, so training atoms look more familiar than new in-domain
    structures do; thresholds come out low and alarms fire more often than the nominal rate.
    Prefer held-out structures (:func:`alarm_statistics_from_structures`)."""
    check_is_fitted(estimator)
    extra: dict[str, Any] = {"tags": tags}
    if frames is not None:
        frames = list(frames)
        if sum(len(a) for a in frames) != estimator.n_train_:
            raise DataError(f"the frames hold {sum(len(a) for a in frames)} atoms, the "
                            f"estimator {estimator.n_train_} training atoms")
        extra = _tags_and_free(frames)
    return fit_alarm_thresholds(estimator, {"novelty": estimator.train_novelty_},
                                frame_offsets, stats=stats, source="training-loo",
                                store=store, **extra)
