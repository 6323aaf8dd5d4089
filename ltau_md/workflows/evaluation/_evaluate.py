"""evaluate(): one call that scores LTAU and its baselines on labelled data."""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core._param_validation import Interval, validate_params
from ltau_md.core.calibration import (
    DEFAULT_ALARM_STATS,
    check_statistic_signals,
    default_alarm,
    evaluate_calibration,
    fit_scale,
    fit_spread_scale,
    split_frames,
    spread_calibration,
)
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.files import (
    check_output_dir,
    output_dir,
    to_json_safe,
    write_text_atomic,
)
from ltau_md.core.metrics import (
    alarm_off_reason,
    alarm_threshold,
    alarm_thresholds_rows,
    combined_statistics,
    fit_combined,
    frame_statistics,
    gaussian_force_nll,
    is_combined,
    parse_stat_key,
    selection_mask,
    stat_key,
    statistic_signals,
)
from ltau_md.core.model import DEFAULT_BATCH_SIZE
from ltau_md.core.signals import SIGNAL_CLASSES
from ltau_md.core.structures import read_structures
from ltau_md.core.validation import check_is_fitted
from ltau_md.workflows.evaluation._cost import cost_per_step
from ltau_md.workflows.evaluation._data import (
    SIGNALS,
    SPREAD_SIGNALS,
    set_data,
    signal_values,
)
from ltau_md.workflows.evaluation._scores import (
    HIGH_ERROR_QUANTILE,
    boot_rng,
    ci95,
    combined_split_rates,
    detection_scores,
    per_atom_scores,
    split_thresholds,
)

if TYPE_CHECKING:
    from ase import Atoms

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.model import FeatureModel


__all__ = ["EVALUATE_CONSTRAINTS", "FRAME_STATS", "OUTPUT_KIND", "add_missing_signals",
           "evaluate"]

#: frame statistics scored for detection and alarms
FRAME_STATS = ("max", "mean", "q90")
#: in-domain alarm rates at which every statistic's out-of-domain alarm rate is reported
#: (besides ``alarm_rate``): 1 % (the rate users stop MD on) and 5 %
REPORTED_ALARM_RATES = (0.01, 0.05)
#: output-directory kind (marker) of ``evaluate`` outputs
OUTPUT_KIND = "evaluate"
#: random calibration/evaluation splits averaged for the in-domain alarm rate
N_ALARM_SPLITS = 200
#: declared constraints of :func:`evaluate`'s keyword arguments
EVALUATE_CONSTRAINTS: dict[str, list] = {
    "fraction": [Interval(Real, 0, 1, closed="neither")],
    "seed": [Interval(Integral, 0, None, closed="left")],
    "alarm_rate": [Interval(Real, 0, 1, closed="neither")],
    "n_boot": [Interval(Integral, 0, None, closed="left")],
    "n_splits": [Interval(Integral, 1, None, closed="left")],
    "target_atol": [Interval(Real, 0, None, closed="neither"), None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "overwrite": ["boolean"],
}


# ---------------------------------------------------------------------------- evaluate
def evaluate(
    model: FeatureModel,
    estimator: LTAUEstimator,
    in_domain: Sequence[Atoms] | str | os.PathLike,
    ood: Mapping[str, Sequence[Atoms] | str | os.PathLike],
    members: Sequence[FeatureModel] | None = None,
    *,
    fraction: float = 0.5,
    seed: int = 0,
    alarm_rate: float = 0.01,
    n_boot: int = 1000,
    n_splits: int = N_ALARM_SPLITS,
    target_atol: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timing: tuple[int, int] | None = (5, 10),
    signals: tuple[str, ...] | str = "all",
    alarm_stats: Sequence[str] = (),
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score LTAU and its baselines on an in-domain and named out-of-domain sets.

    Parameters
    ----------
    model : FeatureModel
        The deployed model (the one ``estimator`` was fitted for).
    estimator : LTAUEstimator
        Fitted estimator; not modified (calibration and thresholds are fitted on a copy).
    in_domain : list of Atoms or path
        Labelled in-domain structures (reference forces, eV/A), split by frame into
        calibration (``fraction``) and evaluation halves with ``seed``.
    ood : dict name -> list of Atoms or path
        Out-of-domain sets; labels are not needed (energies-only is fine). A set whose
        structures all carry reference forces is also scored per atom (``"per_atom_ood"``:
        Spearman, high-error AUROC, miscalibration area at the fitted s, force MAE).
    members : list of FeatureModel, optional
        Further ensemble members; the ensemble is ``[model, *members]`` and its per-atom force
        spread (:func:`~ltau_md.core.baselines.force_std`, eV/A) is scored as ``"force_std"``.
    fraction, seed : calibration fraction of the in-domain frames and the split seed.
    alarm_rate : float
        Nominal in-domain alarm rate of the conformal thresholds (default 1 %).
    n_boot : int
        Bootstrap resamples (over frames) for the 95 % intervals; 0 disables them.
    n_splits : int
        Random splits averaged for the in-domain alarm rate.
    target_atol : float, optional
        Target tolerance (eV/A) of the calibration (default: the estimator's atol).
    timing : (rounds, calls) or None
        Cost-per-step timing (None skips it).
    signals : "all" or tuple of str
        Latent signals (:data:`~ltau_md.core.signals.SIGNAL_CLASSES`) scored besides those
        fitted on the estimator: the missing ones are fitted on the copy from the training
        descriptors its index holds ("flat" and "hnsw" indexes; with "ivfpq" only the fitted
        ones are scored).
    alarm_stats : sequence of str
        Frame statistics scored besides every signal's max, mean and q90 and the default
        alarm, e.g. ``"gmm:q99"`` or a combination such as
        ``"doptimality+clustered_doptimality/element:max"``
        (:func:`~ltau_md.core.metrics.stat_key`), or over the atoms of some tags,
        ``"gmm:max@tags=2"`` (OC20 adsorbate atoms; every frame of every set must hold one):
        detection, alarms and ranking like the others, a combination fitted on the calibration
        frames as the default alarm is.
    out : path, optional
        Write ``evaluation.json``, the figures and the calibrated estimator here (kind
        "evaluate"; a non-empty directory is refused unless it is an earlier evaluation and
        ``overwrite``).

    Returns
    -------
    dict
        JSON-safe report (see the module docstring); ``"summary"`` holds the headline figures.

    Frame statistics are taken over the atoms the monitor watches: those not fixed by FixAtoms
    (all atoms of a structure whose atoms are all fixed), as ``ltau-md fit --validation``
    stores them.
    """
    t_start = time.perf_counter()
    validate_params(EVALUATE_CONSTRAINTS, {
        "fraction": fraction, "seed": seed, "alarm_rate": alarm_rate, "n_boot": n_boot,
        "n_splits": n_splits, "target_atol": target_atol, "batch_size": batch_size,
        "overwrite": overwrite, "signals": signals}, owner="evaluate")
    ood = dict(ood)
    bad = [n for n in ood if not isinstance(n, str) or not n or "/" in n]
    if bad:
        raise InvalidParameterError(f"out-of-domain set names must be non-empty strings "
                                    f"without '/', got {bad}")
    if out is not None:  # refused now; created only once there is something to write
        check_output_dir(out, OUTPUT_KIND, overwrite)
    check_is_fitted(estimator)
    members = list(members or [])
    extra = _extra_stats(alarm_stats, estimator, signals, bool(members))
    in_domain = read_structures(in_domain)  # bad input refused before the slow work
    ood = {name: read_structures(frames) for name, frames in ood.items()}
    _check_selections(extra, {"in_domain": in_domain, **ood})
    est = estimator.without_calibration()  # the caller's keeps its calibration, statistics
    add_missing_signals(est, signals)

    # -- model passes and one neighbour search per set --------------------------------------
    ind = set_data("in_domain", in_domain, model, members, est, batch_size, labelled=True)
    sets = {name: set_data(name, frames, model, members, est, batch_size, labelled=None)
            for name, frames in ood.items()}
    off = ind["offsets"]
    n_frames = off.size - 1
    if n_frames < 4:
        raise DataError(f"the in-domain set has {n_frames} frames; at least 4 are needed "
                        "for calibration and evaluation halves")
    cal, evl = split_frames(off, fraction, seed)
    cal_f, evl_f = cal[off[:-1]], evl[off[:-1]]
    sizes = np.diff(off)
    off_cal = np.concatenate([[0], np.cumsum(sizes[cal_f])])
    off_evl = np.concatenate([[0], np.cumsum(sizes[evl_f])])
    err = ind["err"]

    # -- calibration on the calibration half --------------------------------------------------
    fit = fit_scale(est, None, err[cal], indices=ind["idx"][cal], target_atol=target_atol)
    curves = {label: evaluate_calibration(est, None, err[evl], indices=ind["idx"][evl], s=s)
              for label, s in (("s=1", 1.0), ("fitted s", fit.s))}
    calibration = {
        "s": fit.s, "target_atol": fit.target_atol, "at_bound": fit.at_bound,
        "area_s1": curves["s=1"].miscalibration_area,
        "area_fitted": curves["fitted s"].miscalibration_area,
        "calibration_half_area": fit.area, "calibration_half_area_s1": fit.area_unscaled,
        "curves": {k: c.to_dict() for k, c in curves.items()},
    }

    # -- signals ------------------------------------------------------------------------------
    sig_in = signal_values(ind, est, fit.s)
    # the Gaussian force spreads (the ensemble's, a model's heads): their predicted error
    # distribution's calibration at the same tolerance, and its NLL, on the evaluation half
    spread_calibration = {
        name: _spread_calibration(v[cal], err[cal], v[evl], err[evl], fit.target_atol)
        for name, v in sig_in.items() if name in SPREAD_SIGNALS}
    sig_ood = {name: signal_values(d, est, fit.s) for name, d in sets.items()}
    names = list(sig_in)
    for key in extra:  # a model's own signal is known only now
        missing = sorted(statistic_signals(key) - set(names))
        if missing:
            raise DataError(f"alarm statistic {key!r} needs the signal {missing[0]!r}, which "
                            f"is not among the signals scored ({sorted(names)})")
    # bootstrap intervals: a generator per figure (boot_rng), so adding a signal or a
    # statistic leaves every other figure's interval as it was
    high_thr = float(np.quantile(err[evl], HIGH_ERROR_QUANTILE))
    per_atom = per_atom_scores({k: v[evl] for k, v in sig_in.items()}, err[evl],
                               ind["numbers"][evl], off_evl, n_boot,
                               boot_rng(seed, "per_atom", "in_domain"), high_thr)
    # labelled out-of-domain sets: the same ranking (high error: above the in-domain
    # threshold) and the calibration at the fitted s
    per_atom_ood: dict[str, Any] = {}
    for name, d in sets.items():
        if "err" in d:
            per_atom_ood[name] = per_atom_scores(sig_ood[name], d["err"], d["numbers"],
                                                 d["offsets"], n_boot,
                                                 boot_rng(seed, "per_atom", name), high_thr)
            per_atom_ood[name]["miscalibration_area_fitted"] = evaluate_calibration(
                est, None, d["err"], indices=d["idx"], s=fit.s).miscalibration_area
            per_atom_ood[name]["force_mae"] = float(d["err"].mean())

    # -- frame statistics, detection and alarms -----------------------------------------------
    # over the atoms the monitor watches (free), or a selection's
    stats_in = {stat_key(n, on): frame_statistics(sig_in[n], off, on, ind["free"])
                for n in names for on in FRAME_STATS}
    stats_ood = {name: {stat_key(n, on): frame_statistics(sig[n], sets[name]["offsets"], on,
                                                          sets[name]["free"])
                        for n in names for on in FRAME_STATS} for name, sig in sig_ood.items()}
    # the statistics asked for besides; combined ones (the default alarm's too): references
    # fitted on the calibration frames, which get leave-one-out values (as the stored
    # in-domain values are)
    for key in extra:
        signal, on, select = parse_stat_key(key)
        if not is_combined(signal) and key not in stats_in:
            stats_in[key] = frame_statistics(sig_in[signal], off, on, _atoms(ind, select))
            for name, sig in sig_ood.items():
                stats_ood[name][key] = frame_statistics(sig[signal], sets[name]["offsets"], on,
                                                        _atoms(sets[name], select))
    # (their rates averaged over random splits with the references refitted on each: on a
    # slab's few adsorbate atoms the references move the rate as much as the threshold does)
    combined_splits: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    split_seed = seed + 1  # the random splits of every statistic's split means
    for key in dict.fromkeys((*DEFAULT_ALARM_STATS, *extra)):
        signal, on, select = parse_stat_key(key)
        if not is_combined(signal) or not statistic_signals(key) <= set(names):
            continue
        mask = _atoms(ind, select)
        ref, loo = fit_combined(signal, on, {k: v[cal] for k, v in sig_in.items()}, off_cal,
                                ind["numbers"][cal], mask[cal])
        stats_in[key] = combined_statistics(signal, on, sig_in, off, ref, ind["numbers"], mask)
        stats_in[key][cal_f] = loo
        for name, sig in sig_ood.items():
            d = sets[name]
            stats_ood[name][key] = combined_statistics(signal, on, sig, d["offsets"], ref,
                                                       d["numbers"], _atoms(d, select))
        combined_splits[key] = combined_split_rates(
            key, sig_in, off, ind["numbers"], mask,
            {name: (sig, sets[name]["offsets"], sets[name]["numbers"],
                    _atoms(sets[name], select)) for name, sig in sig_ood.items()},
            fraction, alarm_rate, n_splits, split_seed)
    detection: dict[str, Any] = {}
    for name in sets:
        detection[name] = {"n_frames": int(sets[name]["offsets"].size - 1)}
        for key, v in stats_in.items():
            detection[name][key] = detection_scores(v[evl_f], stats_ood[name][key], n_boot,
                                                    boot_rng(seed, "detection", name, key))
    detection_summary = {}
    for key in stats_in:
        vals = {name: detection[name][key]["value"] for name in sets}
        finite = {k: x for k, x in vals.items() if np.isfinite(x)}
        worst = min(finite, key=finite.get) if finite else None
        detection_summary[key] = {
            "mean": float(np.mean(list(finite.values()))) if finite else float("nan"),
            "worst": finite.get(worst, float("nan")), "worst_set": worst}

    # thresholds: the conformal quantile of the calibration frames' values, stored in the
    # (copied) estimator's calibration as Threshold(alarm_rate=...) would read them
    fitted = _fit_thresholds(est, {k: v[cal] for k, v in sig_in.items()}, off_cal,
                             list(stats_in), ind["numbers"][cal], ind["free"][cal],
                             None if ind["tags"] is None else ind["tags"][cal])
    alarms = {key: _alarms_of(v, fitted.get(key), evl_f, {n: stats_ood[n][key] for n in sets},
                              alarm_rate, fraction, n_splits, split_seed, n_boot,
                              functools.partial(boot_rng, seed, "alarm", key),
                              combined_splits.get(key))
              for key, v in stats_in.items()}
    ranking = _ranking(alarms, detection, list(sets))

    # -- cost ---------------------------------------------------------------------------------
    cost = (cost_per_step(model, members, est, ind["frames"][0], *timing)
            if timing is not None else None)
    for row in ranking:  # what watching each statistic adds to a step, beside its figures
        row["cost_per_step_s"] = None if cost is None else _statistic_cost(row["statistic"],
                                                                           cost)

    default_key = default_alarm(est)  # DEFAULT_ALARM, or the fallback without its signal
    summary = {
        "miscalibration_area_s1": calibration["area_s1"],
        "miscalibration_area_fitted": calibration["area_fitted"],
        "spread_miscalibration_area": {n: c["miscalibration_area"]
                                       for n, c in spread_calibration.items()},
        "spread_miscalibration_area_fitted": {n: c["miscalibration_area_fitted"]
                                              for n, c in spread_calibration.items()},
        "s": fit.s,
        "spearman": {n: per_atom[n]["spearman"] for n in names},
        "high_error_auroc": {n: per_atom[n]["high_error_auroc"] for n in names},
        "default_alarm": default_key,
        "ood_auroc": {name: {k: detection[name][k] for k in (default_key,) + tuple(
            stat_key(n, "max") for n in names if stat_key(n, "max") != default_key)}
                         for name in sets},
        "alarm_rate_nominal": alarm_rate,
        "alarm_rate_in_domain": alarms[default_key]["in_domain_rate"],
        "alarm_rate_in_domain_mean_splits": (alarms[default_key]["in_domain_rate_splits"]
                                             or {}).get("mean"),
        "alarm_rate_ood": alarms[default_key]["ood_rate"],
        "alarm_rate_ood_mean_splits": alarms[default_key]["ood_rate_splits"],
        "alarm_off_reason": alarms[default_key]["reason"],
        "best_alarm_at_1pct": ranking[0]["statistic"] if ranking else None,
    }
    if cost is not None:
        summary["cost_per_step_s"] = {k: v for k, v in cost.items() if k.endswith("_s")}
    report: dict[str, Any] = {
        "summary": summary,
        "settings": {"fraction": fraction, "seed": seed, "alarm_rate": alarm_rate,
                     "n_boot": n_boot, "n_splits": n_splits, "k": int(est.k),
                     "alarm_stats": list(extra),
                     "high_error_quantile": HIGH_ERROR_QUANTILE, "frame_stats": FRAME_STATS,
                     "ensemble_members": 1 + len(members) if members else None},
        "sizes": {"in_domain_frames": int(n_frames), "calibration_frames": int(cal_f.sum()),
                  "evaluation_frames": int(evl_f.sum()), "evaluation_atoms": int(evl.sum()),
                  "ood_frames": {n: int(d["offsets"].size - 1) for n, d in sets.items()}},
        "signals": {n: SIGNALS[n] for n in names},
        "calibration": calibration,
        "spread_calibration": spread_calibration,
        "in_domain_force_mae": float(err[evl].mean()),
        "high_error_threshold": high_thr,
        "per_atom": per_atom,
        "per_atom_ood": per_atom_ood,
        "detection": detection,
        "detection_summary": detection_summary,
        "alarms": alarms,
        "ranking": ranking,
        "cost_per_step": cost,
        "frame_values": {"in_domain": {k: v for k, v in stats_in.items()},
                         "in_domain_evaluation_frames": np.flatnonzero(evl_f),
                         **stats_ood},
    }
    report["wall_seconds"] = time.perf_counter() - t_start
    report = to_json_safe(report)
    if out is not None:
        with output_dir(out, OUTPUT_KIND, overwrite) as out:
            figures = _figures(out, curves, sig_in, err, evl, stats_in, stats_ood, evl_f,
                               fit.target_atol)
            report["figures"] = {k: str(v) for k, v in figures.items()}
            report["estimator"] = str(est.save(out / "estimator"))
            report["per_atom_values"] = str(_write_per_atom(out / "per_atom.npz", ind, sig_in,
                                                            sets, sig_ood))
            write_text_atomic(out / "evaluation.json",
                              json.dumps(report, indent=2, sort_keys=True, allow_nan=False))
    return report


def _extra_stats(keys: Sequence[str], estimator: LTAUEstimator,
                 signals: tuple[str, ...] | str, ensemble: bool) -> list[str]:
    """The statistic ``keys`` of :func:`evaluate`'s ``alarm_stats``, normalised; one
    InvalidParameterError naming the first malformed one or one whose signal will not be
    scored (checked before any model pass)."""
    if isinstance(keys, str):
        raise InvalidParameterError(f"evaluate: alarm_stats must be a sequence of statistic "
                                    f"keys, got the string {keys!r}")
    out = []
    for key in keys:
        try:
            signal, on, select = parse_stat_key(key)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"evaluate: alarm_stats: {exc}") from None
        out.append(stat_key(signal, on, select))
    latent = set(SIGNAL_CLASSES) if signals == "all" else set(signals)
    available = ({n for n in SIGNALS if n not in SIGNAL_CLASSES and n != "force_std"}
                 | latent | set(getattr(estimator, "signals_", {}))
                 | ({"force_std"} if ensemble else set()))
    try:
        check_statistic_signals(out, available)
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"evaluate: alarm_stats: {exc}") from None
    return list(dict.fromkeys(out))


def add_missing_signals(est: LTAUEstimator, signals: tuple[str, ...] | str) -> None:
    """Fit the latent ``signals`` ("all" = every kind) that ``est`` lacks, from the training
    descriptors its index holds; an index that does not hold them exactly (IVF-PQ) is
    skipped with a warning."""
    wanted = list(SIGNAL_CLASSES) if signals == "all" else list(signals)
    missing = [n for n in wanted if n not in est.signals_]
    if not missing:
        return
    x = est.training_descriptors()
    if x is None:
        warnings.warn(f"signals {missing} not scored: the {est.index_kind_} index does not "
                      "hold the training descriptors exactly; fit them with "
                      "LTAUEstimator(signals=...)", UserWarning, stacklevel=3)
        return
    est.add_signals(x, missing)


#: signals one LTAU neighbour query gives together (their cost is the query's)
_QUERY_SIGNALS = ("uncertainty", "predicted_error", "novelty", "latent_distance")


def _statistic_cost(key: str, cost: Mapping[str, Any]) -> float | None:
    """Seconds per step that watching statistic ``key`` adds to the model's forward pass:
    its signals' costs (an LTAU query for LTAU's signals, the other members' passes for the
    ensemble spread, each latent signal's own), plus a combination's own work; None where a
    part was not timed (e.g. a model's own signals, computed in its forward pass)."""
    parts = []
    for name in sorted(statistic_signals(key)):
        if name in _QUERY_SIGNALS:
            parts.append(cost.get("ltau_query_s"))
        elif name == "force_std":
            ens = cost.get("ensemble_step_s")
            parts.append(None if ens is None else max(ens - cost["model_s"], 0.0))
        else:
            parts.append(cost.get(f"{name}_s"))
    signal, on, _ = parse_stat_key(key)
    if is_combined(signal):
        parts.append(cost.get(f"{stat_key(signal, on)}_s"))
    return None if any(p is None for p in parts) else float(sum(parts))


def _alarm_at(cal: dict[str, Any] | None, rate: float, in_eval: np.ndarray,
              ood: Mapping[str, np.ndarray], n_boot: int = 0,
              rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Threshold at in-domain ``rate`` from the calibration frames' values ``cal`` and the
    rates at which held-out in-domain and out-of-domain frames exceed it; off (null rates
    with the reason, never 0.0) when the calibration frames cannot resolve ``rate``. With
    ``n_boot``, 95 % intervals of the out-of-domain rates (``"ood_rate_ci95"``): calibration
    and out-of-domain frames resampled together, the threshold refitted each time."""
    n_cal = 0 if cal is None else int(cal["n_frames"])
    reason = alarm_off_reason(n_cal, rate, "calibration frames")
    if reason:
        return {"off": True, "threshold": None, "n_calibration_frames": n_cal,
                "reason": reason, "in_domain_rate": None,
                "ood_rate": {name: None for name in ood}}
    thr = alarm_threshold(cal["values"], rate)
    out = {"off": False, "threshold": thr, "n_calibration_frames": n_cal, "reason": None,
           "in_domain_rate": float(np.mean(in_eval > thr)),
           "ood_rate": {name: float(np.mean(v > thr)) for name, v in ood.items()}}
    if n_boot and rng is not None:
        c = np.asarray(cal["values"])
        cal_draws: list[np.ndarray] = []
        ood_draws: dict[str, list[np.ndarray]] = {name: [] for name in ood}
        for _ in range(n_boot):  # the random stream of one resample after another
            cal_draws.append(rng.integers(0, c.size, c.size))
            for name, v in ood.items():
                ood_draws[name].append(rng.integers(0, v.size, v.size))
        t = alarm_thresholds_rows(c[np.stack(cal_draws)], rate)
        out["ood_rate_ci95"] = {
            name: ci95(np.mean(v[np.stack(ood_draws[name])] > t[:, None], axis=1))
            for name, v in ood.items()}
    return out


def _alarms_of(values: np.ndarray, cal: dict[str, Any] | None, evl_f: np.ndarray,
               ood: Mapping[str, np.ndarray], alarm_rate: float, fraction: float,
               n_splits: int, split_seed: int, n_boot: int,
               rng: Callable[[str], np.random.Generator],
               splits: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = None
               ) -> dict[str, Any]:
    """One statistic's alarms: at ``alarm_rate`` (with the in-domain and out-of-domain rates
    averaged over random splits, whose thresholds move with their calibration halves: one
    split's out-of-domain rate at 1 % can be far from the mean; ``split_seed`` draws the
    splits of :func:`~ltau_md.workflows.evaluation._scores.split_thresholds`; ``splits``: the
    rates per split where they are not the values' (a combined statistic's,
    :func:`~ltau_md.workflows.evaluation._scores.combined_split_rates`)) and at each of
    :data:`REPORTED_ALARM_RATES` (``"at_rate"``, with bootstrap intervals of the out-of-domain
    rates; ``rng(rate)``: the bootstrap generator of the rate, "0.01")."""
    entry = _alarm_at(cal, alarm_rate, values[evl_f], ood)
    entry["in_domain_rate_splits"] = None
    entry["ood_rate_splits"] = {name: None for name in ood}
    if not entry["off"]:
        if splits is None:
            thr, rates = split_thresholds(values, fraction, alarm_rate, n_splits, split_seed)
            splits = rates, {name: np.mean(np.asarray(v, dtype=np.float64)[None, :]
                                           > thr[:, None], axis=1) for name, v in ood.items()}
        rates = splits[0]
        entry["in_domain_rate_splits"] = {"mean": float(rates.mean()),
                                          "worst": float(rates.max()),
                                          "p95": float(np.percentile(rates, 95)),
                                          "n_splits": int(rates.size)}
        entry["ood_rate_splits"] = {name: float(np.mean(r)) for name, r in splits[1].items()}
    entry["at_rate"] = {f"{r:g}": _alarm_at(cal, r, values[evl_f], ood, n_boot, rng(f"{r:g}"))
                        for r in REPORTED_ALARM_RATES}
    return entry


def _ranking(alarms: Mapping[str, Any], detection: Mapping[str, Any], sets: list[str]
             ) -> list[dict[str, Any]]:
    """Every statistic ranked by its mean out-of-domain alarm rate at the 1 % in-domain
    threshold (then by mean AUROC); the worst set beside each mean; statistics whose 1 %
    alarm is off come last."""
    rows = []
    for key, a in alarms.items():
        at1 = a["at_rate"][f"{REPORTED_ALARM_RATES[0]:g}"]
        at5 = a["at_rate"][f"{REPORTED_ALARM_RATES[1]:g}"]
        au = {n: detection[n][key]["value"] for n in sets}
        fin = [v for v in au.values() if v is not None and np.isfinite(v)]
        row = {"statistic": key,
               "ood_rate_at_1pct": at1["ood_rate"], "ood_rate_at_5pct": at5["ood_rate"],
               "ood_rate_at_1pct_ci95": at1.get("ood_rate_ci95"),
               "in_domain_rate_at_1pct": at1["in_domain_rate"],
               "auroc": au, "auroc_mean": float(np.mean(fin)) if fin else None,
               "auroc_worst": float(np.min(fin)) if fin else None}
        for tag, d in (("1pct", at1["ood_rate"]), ("5pct", at5["ood_rate"])):
            v = [x for x in d.values() if x is not None]
            row[f"ood_rate_at_{tag}_mean"] = float(np.mean(v)) if v else None
            row[f"ood_rate_at_{tag}_worst"] = float(np.min(v)) if v else None
        rows.append(row)
    rows.sort(key=lambda r: (r["ood_rate_at_1pct_mean"] is None,
                             -(r["ood_rate_at_1pct_mean"] or 0.0), -(r["auroc_mean"] or 0.0)))
    return rows


def _write_per_atom(path: Path, ind: Mapping[str, Any], sig_in: Mapping[str, np.ndarray],
                    sets: Mapping[str, Any], sig_ood: Mapping[str, Mapping[str, np.ndarray]]
                    ) -> Path:
    """``per_atom.npz``: for each set S (``in_domain`` and the out-of-domain names) the arrays
    ``S/SIGNAL`` (per atom), ``S/offsets`` (frame offsets), ``S/numbers``, ``S/free`` (the
    atoms frame statistics are taken over: not fixed by FixAtoms), ``S/tags`` where any tag
    is set and, where labelled, ``S/abs_force_error`` (|dF|, eV/A), plus ``sets`` (the names):
    every signal on the same frames, so an outside method can be scored alike."""
    import io

    from ltau_md.core.files import atomic_path

    arrays: dict[str, np.ndarray] = {}
    for name, d, sig in (("in_domain", ind, sig_in),
                         *((n, sets[n], sig_ood[n]) for n in sets)):
        arrays[f"{name}/offsets"] = np.asarray(d["offsets"])
        arrays[f"{name}/numbers"] = np.asarray(d["numbers"])
        arrays[f"{name}/free"] = np.asarray(d["free"], dtype=bool)
        if d["tags"] is not None:
            arrays[f"{name}/tags"] = np.asarray(d["tags"])
        if "err" in d:
            arrays[f"{name}/abs_force_error"] = np.asarray(d["err"])
        for k, v in sig.items():
            arrays[f"{name}/{k}"] = np.asarray(v)
    arrays["sets"] = np.array(["in_domain", *sets])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path, suffix=".npz") as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _fit_thresholds(est: LTAUEstimator, per_atom: dict[str, np.ndarray],
                    frame_offsets: np.ndarray, keys: list[str], numbers: np.ndarray,
                    free: np.ndarray, tags: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """In-domain values of the frame statistics ``keys`` on the calibration frames, stored in
    ``est.alarm_statistics_`` (:func:`~ltau_md.core.calibration.fit_alarm_thresholds`)."""
    from ltau_md.core.calibration import fit_alarm_thresholds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit_alarm_thresholds(est, per_atom, frame_offsets, stats=keys,
                                    source="calibration", numbers=numbers, free=free,
                                    tags=tags)


def _atoms(d: Mapping[str, Any], select: str | None) -> np.ndarray:
    """The atoms of set ``d`` a statistic with selection ``select`` is taken over: the free
    ones without a selection."""
    if select is None:
        return d["free"]
    n = int(d["offsets"][-1])
    return (np.zeros(n, bool) if d["tags"] is None else selection_mask(select, n, d["tags"]))


def _check_selections(keys: Sequence[str], sets: Mapping[str, Sequence[Atoms]]) -> None:
    """DataError naming the first statistic with a "@tags=" selection and the set some of
    whose frames hold no selected atom (such frames have no value to score)."""
    for key in keys:
        select = parse_stat_key(key)[2]
        if select is None:
            continue
        for name, frames in sets.items():
            empty = sum(not selection_mask(select, len(a), a.get_tags()).any() for a in frames)
            if empty:
                raise DataError(f"alarm statistic {key!r}: {empty} of {len(frames)} frames of "
                                f"set {name!r} hold no atom with {select}; a selection is "
                                "scored on sets whose every frame holds one")


def _figures(out: Path, curves, sig_in, err, evl, stats_in, stats_ood, evl_f,
             target_atol: float) -> dict[str, Path]:
    from ltau_md.core.plots import (
        plot_calibration,
        plot_error_vs_uncertainty,
        plot_roc,
        save_figure,
    )

    figs: dict[str, Path] = {
        "calibration": save_figure(
            plot_calibration(curves, target_label=f"{target_atol:.3g} eV/Å",
                             title="in-domain evaluation half"), out / "calibration.png"),
        "error_vs_uncertainty": save_figure(plot_error_vs_uncertainty(
            {SIGNALS[n]: (v[evl], err[evl]) for n, v in sig_in.items()},
            xlabels={SIGNALS[n]: SIGNALS[n] for n in sig_in},
            title="in-domain evaluation half: |ΔF| of the deployed model"),
            out / "error_vs_uncertainty.png"),
    }
    for name, st in stats_ood.items():
        series = {}
        for n in sig_in:
            key = stat_key(n, "max")
            pos, neg = st[key], stats_in[key][evl_f]
            sc = np.nan_to_num(np.concatenate([pos, neg]), posinf=np.finfo(float).max)
            series[f"{n} max"] = (sc, np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)])
        figs[f"roc_{name}"] = save_figure(
            plot_roc(series, title=f"{name} vs in-domain frames (max over atoms)"),
            out / f"roc_{name}.png")
    return figs


def _spread_calibration(sd_cal: np.ndarray, err_cal: np.ndarray, sd_evl: np.ndarray,
                     err_evl: np.ndarray, atol: float) -> dict[str, Any]:
    """Calibration of a Gaussian force spread (eV/A; :data:`SPREAD_SIGNALS`) at tolerance
    ``atol``, as
    LTAU's: the confidence it predicts (:func:`~ltau_md.core.metrics.gaussian_confidence`)
    against the outcome on the evaluation atoms, as given and with a factor on the spread
    fitted on the calibration atoms (:func:`~ltau_md.core.calibration.fit_spread_scale`);
    the Gaussian NLL per component, both ways."""
    f = fit_spread_scale(sd_cal, err_cal, atol)
    raw = spread_calibration(sd_evl, err_evl, atol)
    scaled = spread_calibration(sd_evl, err_evl, atol, f.scale)
    sd = np.maximum(np.asarray(sd_evl, dtype=np.float64), 1e-12)
    return {"miscalibration_area": raw.miscalibration_area, "target_atol": atol,
            "nll_per_component": gaussian_force_nll(sd, err_evl),
            "scale": f.scale, "scale_at_bound": f.at_bound,
            "miscalibration_area_fitted": scaled.miscalibration_area,
            "nll_per_component_fitted": gaussian_force_nll(sd * f.scale, err_evl),
            "curve": raw.to_dict(), "curve_fitted": scaled.to_dict()}
