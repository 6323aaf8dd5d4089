"""Analysis of an IS2RS campaign: does the uncertainty along a model relaxation predict how far
the model-relaxed structure lands from the reference-relaxed one, and how good it is?

Per split, pooled over the OOD splits (``ood``) and over all validation splits (``all``):
done / failed / not-done counts, ADwT, RMSD summary, the reference-based targets (energy of
the model end point above the lowest reference minimum, FbT / AFbT from the reference forces at
the end point, basin outcome of the reference re-relaxation, RMSD to the lowest minimum), the
true force MAE along the model trajectories; for every statistic (named
``SIGNAL:STAT[@tags=T]/REDUCTION``, e.g. ``uncertainty:max/final``: uncertainty initial /
final / max / mean, the true force error ``force_error:max/*`` as the ceiling of any
force-error UQ, trivial baselines ``n_ads`` and ``ml_fmax_initial``, novelty when present)
the Spearman rank correlation with each continuous target and the AUROC for each failure
label, all with
bootstrap 95 % intervals; binned target means by statistic (the LTAU paper's Fig. 4); and a
monotone map uncertainty -> expected RMSD fitted on ``val_id`` and scored on the other splits;
``ood_detection``: the AUROC of each statistic for telling the out-of-domain systems from the
``val_id`` ones (e.g. novelty at step 0: is the system out of domain before relaxing?).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core import metrics as _metrics
from ltau_md.core.exceptions import DataError
from ltau_md.core.files import to_json_safe
from ltau_md.core.metrics import bootstrap_ci
from ltau_md.workflows.is2rs._columns import binned_means, column, finite_pairs
from ltau_md.workflows.is2rs._results import (
    FERR,
    NOVELTY,
    NOVELTY_ADS,
    PERR,
    STAT_NAMES,
    UQ,
    UQ_ADS,
    UQ_ATOM_MEAN,
    series_key,
)
from ltau_md.workflows.is2rs.metrics import BASIN_OUTCOMES, adwt, afbt, ewt, fbt

if TYPE_CHECKING:
    pass

__all__ = [
    "ALL_STATS",
    "ENERGY_FAIL",
    "FMAX_FAIL",
    "OOD_SPLITS",
    "REPORT_STATS",
    "STATS",
    "STAT_LABELS",
    "TARGETS",
    "TARGET_LABELS",
    "UQToRMSD",
    "analyze",
    "auroc",
    "failure_labels",
    "group_results",
    "isotonic_fit",
    "spearman",
]


def _all_reductions(frame_key: str) -> tuple[str, ...]:
    """The result statistics of every step reduction of ``frame_key``, in :data:`STAT_NAMES`
    order, e.g. ``uncertainty:max/initial``, ..., ``uncertainty:max/mean``."""
    return tuple(series_key(frame_key, k) for k in STAT_NAMES)


STATS: tuple[str, ...] = _all_reductions(UQ)
"""Structure uncertainty = max over free atoms of 1 - p (``uncertainty:max``); initial /
final / max / mean over the relaxation steps (the figure's four panels)."""
ALL_STATS: tuple[str, ...] = STATS + _all_reductions(UQ_ATOM_MEAN) + _all_reductions(PERR)
"""Also the mean over free atoms of 1 - p, and the max predicted error (eV/A)."""
STAT_LABELS: dict[str, str] = {
    series_key(UQ, "initial"): "initial uncertainty",
    series_key(UQ, "final"): "final uncertainty",
    series_key(UQ, "max"): "max uncertainty along relaxation",
    series_key(UQ, "mean"): "mean uncertainty along relaxation",
    series_key(FERR, "max"): "true max force error along relaxation (eV/A)",
    series_key(FERR, "final"): "true max force error at end point (eV/A)",
    "n_ads": "adsorbate atoms (trivial baseline)",
    series_key(PERR, "final"): "LTAU predicted max force error at end point (eV/A)",
    series_key(PERR, "max"): "LTAU predicted max force error along relaxation (eV/A)",
    series_key(NOVELTY, "initial"): "novelty at step 0 (latent distance / training scale)",
    series_key(NOVELTY, "final"): "novelty at end point (latent distance / training scale)",
}
OOD_SPLITS: tuple[str, ...] = ("val_ood_ads", "val_ood_cat", "val_ood_both")
REPORT_STATS: tuple[str, ...] = (
    *STATS, series_key(UQ_ATOM_MEAN, "mean"), series_key(PERR, "max"),
    series_key(PERR, "final"),
    *_all_reductions(UQ_ADS), *_all_reductions(NOVELTY), *_all_reductions(NOVELTY_ADS),
    *_all_reductions(FERR),
    "n_ads", "ml_fmax_initial",
)
"""Statistics scored in the report: uncertainty, novelty (when the calculator returns it), the
true force error ``force_error:max/*`` (reference row: the ceiling for a force-error UQ) and
two trivial baselines (number of adsorbate atoms; the model's initial max force)."""
TARGETS: tuple[str, ...] = ("rmsd", "energy_above_min", "ref_fmax_at_end", "rmsd_min_sym")
"""Continuous targets (Spearman): RMSD to the given reference (A), energy above the lowest
reference minimum (eV), reference max force at the model end point (eV/A), RMSD to the lowest
minimum modulo substrate symmetry (A)."""
TARGET_LABELS: dict[str, str] = {
    "rmsd": "RMSD to reference relaxed (A)",
    "energy_above_min": "reference energy above lowest minimum (eV)",
    "ref_fmax_at_end": "reference max force at model end point (eV/A)",
    "rmsd_min_sym": "RMSD to lowest minimum, modulo symmetry (A)",
}
ENERGY_FAIL = 0.1
"""eV above the lowest reference minimum beyond which a model end point counts as failed."""
FMAX_FAIL = 0.4
"""eV/A: reference max force at the model end point above which it is not near any minimum
(the top of OC20's AFbT threshold range, so the end point fails FbT at every AFbT level)."""


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """:func:`ltau_md.core.metrics.spearman` over the finite pairs; NaN for < 3 pairs or a
    constant input (no uncertainty, or every RMSD equal)."""
    x, y = finite_pairs(x, y)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(_metrics.spearman(x, y))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """:func:`ltau_md.core.metrics.auroc` of ``scores`` for the positive ``labels`` over the finite
    scores; NaN when only one class is present."""
    s = np.asarray(scores, dtype=float)
    lab = np.asarray(labels, dtype=bool)
    if s.shape != lab.shape:
        raise DataError(f"scores {s.shape} and labels {lab.shape} differ in shape")
    ok = np.isfinite(s)
    s, lab = s[ok], lab[ok]
    if lab.all() or not lab.any():
        return math.nan
    return float(_metrics.auroc(s, lab))


def isotonic_fit(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of y on x (pool-adjacent-violators).

    Returns the distinct x values (sorted) and the fitted y at them.
    """
    x, y = finite_pairs(x, y)
    if x.size == 0:
        raise DataError("isotonic fit needs at least one finite (x, y) pair")
    xu, inv = np.unique(x, return_inverse=True)
    w = np.bincount(inv).astype(float)
    yu = np.bincount(inv, weights=y) / w
    # PAVA over blocks (value, weight, count)
    vals: list[float] = []
    wts: list[float] = []
    cnts: list[int] = []
    for v, wt in zip(yu, w, strict=True):
        vals.append(float(v))
        wts.append(float(wt))
        cnts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, c2 = vals.pop(), wts.pop(), cnts.pop()
            wsum = wts[-1] + w2
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / wsum
            wts[-1] = wsum
            cnts[-1] += c2
    fitted = np.repeat(vals, cnts)
    return xu, fitted


class UQToRMSD:
    """Monotone map from a structure uncertainty statistic to the expected RMSD (A).

    ``method="isotonic"`` (default): isotonic regression, linear between fitted points and
    constant beyond them; ``"binned"``: mean RMSD in quantile bins of the uncertainty.
    """

    def __init__(self, method: str = "isotonic", n_bins: int = 5) -> None:
        if method not in ("isotonic", "binned"):
            raise DataError(f"method must be 'isotonic' or 'binned', got {method!r}")
        self.method = method
        self.n_bins = n_bins
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def fit(self, uq: Sequence[float], rmsd: Sequence[float]) -> UQToRMSD:
        x, y = finite_pairs(uq, rmsd)
        if x.size < 2:
            raise DataError(f"need >= 2 finite (uncertainty, RMSD) pairs to fit, got {x.size}")
        if self.method == "isotonic":
            self.x_, self.y_ = isotonic_fit(x, y)
        else:
            edges = np.unique(np.quantile(x, np.linspace(0, 1, self.n_bins + 1)))
            idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
            centers, means = [], []
            for b in range(max(len(edges) - 1, 1)):
                sel = idx == b
                if sel.any():
                    centers.append(float(x[sel].mean()))
                    means.append(float(y[sel].mean()))
            self.x_, self.y_ = np.array(centers), np.maximum.accumulate(np.array(means))
        return self

    def predict(self, uq: Sequence[float]) -> np.ndarray:
        if self.x_ is None or self.y_ is None:
            raise DataError("UQToRMSD.predict called before fit")
        u = np.asarray(uq, dtype=float)
        out = np.interp(u, self.x_, self.y_)
        return np.where(np.isfinite(u), out, np.nan)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": self.x_.tolist() if self.x_ is not None else None,
                "y": self.y_.tolist() if self.y_ is not None else None}


def _with_ci(metric: str, x: np.ndarray, y: np.ndarray, n_boot: int) -> dict[str, float]:
    if metric == "spearman":
        value = spearman(x, y)
    else:
        value = auroc(x, y.astype(bool))
    lo, hi = bootstrap_ci(metric, x, y, n_boot=n_boot) if math.isfinite(value) else (
        math.nan, math.nan)
    return {"value": value, "lo": lo, "hi": hi}


def failure_labels(rows: Sequence[dict], rmsd_threshold: float) -> dict[str, np.ndarray]:
    """Boolean failure labels per result: RMSD > threshold (or blown up), ``mean_distance``:
    the mean free-atom distance (ADwT's quantity) > threshold, energy above the
    lowest minimum > :data:`ENERGY_FAIL` eV, reference max force at the end point >= 0.05 eV/A
    (not FbT), basin not "same", and ``higher_or_fmax``: the reference re-relaxation of the end
    point lands in a higher basin, or the reference max force there exceeds
    :data:`FMAX_FAIL` eV/A. Labels that need the reference are NaN-free only when the
    reference targets exist; rows without them count as failed."""
    rmsd = column(rows, "rmsd")
    md = column(rows, "mean_distance")
    e = column(rows, "energy_above_min")
    f = column(rows, "ref_fmax_at_end")
    basin = [r.get("basin") for r in rows]
    return {
        "rmsd": ~np.isfinite(rmsd) | (rmsd > rmsd_threshold),
        "mean_distance": ~np.isfinite(md) | (md > rmsd_threshold),
        "energy": ~np.isfinite(e) | (e > ENERGY_FAIL),
        "not_fbt": ~np.isfinite(f) | (f >= 0.05),
        "basin": np.array([b != "same" for b in basin], dtype=bool),
        "higher_or_fmax": np.array([b == "higher" for b in basin], dtype=bool)
        | ~np.isfinite(f) | (f > FMAX_FAIL),
    }


def group_results(results: Sequence[dict]) -> dict[str, list[dict]]:
    """Results by split, plus ``"ood"`` pooling every ``val_ood_*`` split present and
    ``"all"`` pooling ``val_id`` with them (when both are present)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(str(r["split"]), []).append(r)
    ood = [r for r in results if str(r["split"]) in OOD_SPLITS]
    if ood:
        groups["ood"] = ood
        if any(str(r["split"]) == "val_id" for r in results):
            groups["all"] = [r for r in results
                             if str(r["split"]) in ("val_id", *OOD_SPLITS)]
    return groups


def analyze(
    results: Sequence[dict],
    *,
    rmsd_threshold: float = 0.5,
    fit_split: str = "val_id",
    map_stat: str = series_key(UQ, "max"),
    map_method: str = "isotonic",
    n_bins: int = 5,
    stats: Sequence[str] = REPORT_STATS,
    n_boot: int = 1000,
    not_done: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Campaign report (JSON-ready; NaN -> None). See the module docstring for the content.

    ``rmsd_threshold`` (A) defines a failed relaxation for the RMSD label; the uncertainty ->
    RMSD map is fitted on ``fit_split`` with statistic ``map_stat`` and scored on every split.
    Statistics absent from every result (e.g. novelty from a calculator without it) are
    left out (the uncertainty statistics :data:`STATS` are always reported). ``not_done``
    (sid -> reason) are systems the campaign could not finish.
    Spearman / AUROC entries are ``{"value", "lo", "hi"}`` with a bootstrap 95 % interval
    over ``n_boot`` resamples of the systems.
    """
    if not results:
        raise DataError("no campaign results to analyze")
    not_done = dict(not_done or {})
    ok = [r for r in results if r.get("status") == "ok"]
    # optional statistics (novelty, true force error) only where some result has them
    stats = [st for st in stats if st in STATS or np.isfinite(column(ok, st)).any()]
    report: dict[str, Any] = {
        "n_systems": len(results) + len(not_done),
        "n_ok": len(ok),
        "n_errors": len(results) - len(ok),
        "counts": {"done": len(ok), "failed": len(results) - len(ok),
                   "not_done": len(not_done), "total": len(results) + len(not_done)},
        "not_done": not_done,
        "rmsd_threshold": rmsd_threshold,
        "energy_fail_eV": ENERGY_FAIL,
        "errors": {r["sid"]: r.get("error", "") for r in results if r.get("status") != "ok"},
        "stats": list(stats),
        "targets": list(TARGETS),
        "splits": {},
    }
    all_uq = {st: column(ok, st) for st in stats}
    edges = {}
    for st in stats:
        v = all_uq[st][np.isfinite(all_uq[st])]
        edges[st] = (
            np.unique(np.quantile(v, np.linspace(0, 1, n_bins + 1))) if v.size else np.array([])
        )
    uq_map: UQToRMSD | None = None
    baseline = math.nan
    fit_rows = [r for r in ok if r["split"] == fit_split]
    if fit_rows:
        x, y = finite_pairs(column(fit_rows, map_stat), column(fit_rows, "rmsd"))
        if x.size >= 2:
            uq_map = UQToRMSD(map_method, n_bins).fit(x, y)
            baseline = float(y.mean())
    report["uq_to_rmsd"] = {
        "fit_split": fit_split, "stat": map_stat,
        "map": uq_map.to_dict() if uq_map is not None else None,
    }
    # out-of-domain detection before relaxing: does a statistic tell every val_ood_* system
    # from the val_id ones? (AUROC, OOD = positive)
    det = [r for r in ok if str(r["split"]) in ("val_id", *OOD_SPLITS)]
    is_ood = np.array([str(r["split"]) != "val_id" for r in det], dtype=float)
    report["ood_detection"] = (
        {st: _with_ci("auroc", column(det, st), is_ood, n_boot) for st in stats}
        if 0 < is_ood.sum() < len(det) else {})
    have_ref = any(np.isfinite(column(ok, "energy_above_min")))
    for name, rows_all in group_results(results).items():
        rows = [r for r in rows_all if r.get("status") == "ok"]
        entry: dict[str, Any] = {"n": len(rows_all), "n_ok": len(rows)}
        if not rows:
            report["splits"][name] = entry
            continue
        rmsd = column(rows, "rmsd")
        # a relaxation that blew up (NaN RMSD) is a failure and ranks above every finite RMSD
        finite = np.isfinite(rmsd)
        labels = failure_labels(rows, rmsd_threshold)
        if not have_ref:
            labels = {k: labels[k] for k in ("rmsd", "mean_distance")}
        target_cols = {}
        for t in TARGETS if have_ref else ("rmsd",):
            col = column(rows, t)
            fin = np.isfinite(col)
            big = 10.0 * (np.max(np.abs(col[fin])) + 1.0) if fin.any() else 1.0
            target_cols[t] = np.where(fin, col, big)
        entry.update({
            "n_converged": int(sum(bool(r.get("converged")) for r in rows)),
            "n_blown_up": int((~finite).sum()),
            "adwt": adwt(column(rows, "mean_distance")),
            "rmsd_mean": float(np.mean(rmsd[finite])) if finite.any() else math.nan,
            "rmsd_median": float(np.median(rmsd[finite])) if finite.any() else math.nan,
            "ref_travel_median": float(np.nanmedian(column(rows, "ref_travel")))
            if np.isfinite(column(rows, "ref_travel")).any() else math.nan,
            "failure_rate": float(labels["rmsd"].mean()),
            "failure_rates": {k: float(v.mean()) for k, v in labels.items()},
            "spearman": {st: spearman(column(rows, st), target_cols["rmsd"]) for st in stats},
            "auroc": {st: auroc(column(rows, st), labels["rmsd"]) for st in stats},
            "spearman_ci": {
                t: {st: _with_ci("spearman", column(rows, st), col, n_boot) for st in stats}
                for t, col in target_cols.items()
            },
            "auroc_ci": {
                lab: {st: _with_ci("auroc", column(rows, st), v.astype(float), n_boot)
                      for st in stats}
                for lab, v in labels.items()
            },
            "binned": {st: binned_means(column(rows, st), rmsd, edges[st]) for st in stats},
        })
        is2re = column(rows, "is2re_error")
        if np.isfinite(is2re).any():  # OC20's IS2RE: energy MAE (eV) and EwT (0.02 eV)
            entry["is2re_mae"] = float(np.nanmean(np.abs(is2re)))
            entry["is2re_ewt"] = ewt(is2re)
        fmae = column(rows, "force_mae")
        if np.isfinite(fmae).any():  # eV/A; the mean per system, and its median over systems
            entry["force_mae"] = float(np.nanmean(fmae))
            entry["force_mae_median"] = float(np.nanmedian(fmae))
        if have_ref:
            e = column(rows, "energy_above_min")
            f = column(rows, "ref_fmax_at_end")
            basins = [str(r.get("basin")) for r in rows]
            entry.update({
                "energy_above_min_median": float(np.nanmedian(e)),
                "energy_above_min_mean": float(np.nanmean(e)),
                "fbt": fbt(f),
                "afbt": afbt(f),
                "basin": {b: basins.count(b) for b in (*BASIN_OUTCOMES, "blown_up")},
                "reference_lower_found": int(sum(
                    r.get("reference_source") == "ml_rerelaxed" for r in rows)),
                "adwt_min_sym": adwt(column(rows, "mean_distance_min_sym")),
                "adwt_ads_min_sym": adwt(column(rows, "ads_displacement_min_sym")),
                "binned_energy": {st: binned_means(column(rows, st), e, edges[st])
                                  for st in stats},
            })
        if uq_map is not None:
            pred = uq_map.predict(column(rows, map_stat))
            p, a = finite_pairs(pred, rmsd)
            entry["uq_to_rmsd"] = {
                "mae": float(np.mean(np.abs(p - a))) if p.size else math.nan,
                "baseline_mae": float(np.mean(np.abs(baseline - a))) if a.size else math.nan,
                "spearman": spearman(p, a),
            }
        report["splits"][name] = entry
    return to_json_safe(report)
