"""Global vs per-species training tolerance (``atol`` of :class:`ltau_md.ErrorSummary`) on acac.

Both estimators are ``LTAUEstimator(k=10)`` fitted on the deployed model's (member 0's) training
descriptors with all members' error logs; they differ only in ``atol``: None (one tolerance, the
final training force MAE over all atoms) or ``"per_species"`` (each element's final training
force MAE). Protocol (as benchmarks/acac.py):

* the 300 K test set is split by structure into calibration / evaluation halves
  (:func:`ltau_md.core.calibration.split_frames`, seed 0); s is fitted on the calibration half with
  :func:`ltau_md.core.calibration.fit_scale` (target T = the reference atol, the same for both);
* on the evaluation half: Spearman(uncertainty 1 - p, |F_ref - F_member0|) and the
  miscalibration area of p against |error| <= T, each with a 95 % bootstrap interval over
  structures (``--n-boot`` resamples, the same ones for both, so the paired difference
  per-species - global has its own interval); Spearman within each element;
* the same calibration against a per-element outcome |error| <= atol_Z (the per-species
  tolerances), s re-fitted for it (errors rescaled by T/atol_Z, so fit_scale's single target
  expresses it);
* out-of-domain detection: AUROC of the structure-max uncertainty (at the fitted s) of the
  600 K, H_transfer and dihedral structures against the 300 K evaluation structures.

Inputs: ``--run DIR`` holding member*/ltau_log (the trained acac ensemble) and ``--feats`` an
npz of cached descriptors and forces (keys ``{set}_X`` member-0 descriptors, ``{set}_F{m}``
member forces (eV/A), ``{set}_ref`` DFT forces, ``{set}_Z``, ``{set}_off`` frame offsets; the
training atoms ``train_X``/``train_Z`` in the logs' atom order). Prints one JSON line.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/per_species_atol.py --run OUT/work \\
        --feats OUT/acac_feats.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _record import record

from ltau_md.core.calibration import evaluate_calibration, fit_scale, split_frames
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.metrics import aggregate_by_frame, auroc, calibration_curve, spearman

OOD_SETS = ("600K", "H_transfer", "dihedral")


def frame_atoms(off: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Atom indices of ``frames`` (in that order, repeats allowed)."""
    sizes = np.diff(off)[frames]
    starts = np.repeat(off[frames], sizes)
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return starts + within


def interval(values: list[float]) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return [round(float(np.quantile(v, 0.025)), 4), round(float(np.quantile(v, 0.975)), 4)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="dir with member*/ltau_log")
    ap.add_argument("--feats", type=Path, required=True,
                    help="npz of cached descriptors and forces (see above)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    d = np.load(args.feats)
    logs = [ErrorLog.open(p) for p in sorted(args.run.glob("member*/ltau_log"))]
    if not logs:
        raise SystemExit(f"no member*/ltau_log under {args.run}")
    if not np.array_equal(logs[0].species, d["train_Z"]):
        raise SystemExit("train_Z differs from the logs' species: atom orders do not match")
    x_train = d["train_X"]

    off = d["300K_off"]
    z300 = d["300K_Z"]
    err = np.linalg.norm(d["300K_ref"] - d["300K_F0"], axis=1)  # deployed model, eV/A
    cal, evl = split_frames(off, 0.5, seed=args.seed)
    n_frames = off.size - 1
    eval_frames = np.flatnonzero(evl[off[:-1]])
    cal_idx, ev_idx = np.flatnonzero(cal), np.flatnonzero(evl)
    eval_off = np.r_[0, np.cumsum(np.diff(off)[eval_frames])]  # of the evaluation atoms
    rng = np.random.default_rng(args.seed)
    boots = [frame_atoms(off, rng.choice(eval_frames, eval_frames.size, replace=True))
             for _ in range(args.n_boot)]
    pos_in_eval = np.full(err.size, -1)
    pos_in_eval[ev_idx] = np.arange(ev_idx.size)
    boots = [pos_in_eval[b] for b in boots]  # indices into the evaluation-half arrays
    # AUROC resamples: positive structures of each set and negative (300 K evaluation) ones
    n_pos = {name: d[f"{name}_off"].size - 1 for name in OOD_SETS}
    roc_boots = {name: [(rng.integers(0, n_pos[name], n_pos[name]),
                         rng.integers(0, eval_frames.size, eval_frames.size))
                        for _ in range(args.n_boot)] for name in OOD_SETS}

    ests = {mode: LTAUEstimator(k=args.k, atol=atol).fit(x_train, logs)
            for mode, atol in (("global", None), ("per_species", "per_species"))}
    per_z = ests["per_species"].summary_.atol_per_species
    target = float(ests["per_species"].atol_)  # T: the same reference atol for both
    rescale = target / np.array([per_z[int(z)] for z in z300])  # |e| <= atol_Z <=> |e|*r <= T

    res: dict = {
        "benchmark": "per_species_atol", "run": str(args.run), "k": args.k, "seed": args.seed,
        "n_boot": args.n_boot, "n_members": len(logs), "n_train_atoms": int(x_train.shape[0]),
        "n_eval_frames": int(eval_frames.size), "n_cal_frames": int(n_frames - eval_frames.size),
        "atol_global_eV_per_A": round(float(ests["global"].atol_), 5),
        "atol_per_species_eV_per_A": {str(z): round(a, 5) for z, a in per_z.items()},
        "test_mae_300K_per_species_eV_per_A": {
            str(int(z)): round(float(err[z300 == z].mean()), 5) for z in np.unique(z300)},
        "target_T_eV_per_A": round(target, 5),
    }
    draws: dict[str, dict[str, np.ndarray]] = {}
    for mode, est in ests.items():
        idx = {name: est.kneighbors(d[f"{name}_X"])[1] for name in ("300K", *OOD_SETS)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # at-bound warnings are reported
            fit = fit_scale(est, None, err[cal_idx], indices=idx["300K"][cal_idx],
                            target_atol=target)
            fit_z = fit_scale(est, None, err[cal_idx] * rescale[cal_idx],
                              indices=idx["300K"][cal_idx], target_atol=target, store=False)
        e_ev = err[ev_idx]
        conf = est.confidence_from_neighbors(idx["300K"][ev_idx], fit.s)[0]
        conf_z = est.confidence_from_neighbors(idx["300K"][ev_idx], fit_z.s)[0]
        ok, ok_z = e_ev <= target, e_ev * rescale[ev_idx] <= target
        unc = 1.0 - conf
        area = evaluate_calibration(est, None, e_ev, indices=idx["300K"][ev_idx], s=fit.s,
                                    target_atol=target).miscalibration_area

        def area_of(c, o):
            return calibration_curve(c, o).miscalibration_area

        b_sp = np.array([spearman(unc[b], e_ev[b]) for b in boots])
        b_area = np.array([area_of(conf[b], ok[b]) for b in boots])
        b_area_z = np.array([area_of(conf_z[b], ok_z[b]) for b in boots])
        draws[mode] = {"spearman": b_sp, "area": b_area, "area_per_species_target": b_area_z}
        # out-of-domain detection, structure max of 1 - p at the fitted s
        neg = aggregate_by_frame(unc, eval_off, "max")
        ood, ood_ci = {}, {}

        def roc(pos, neg):
            return auroc(np.r_[pos, neg], np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)])

        for name in OOD_SETS:
            u = 1.0 - est.confidence_from_neighbors(idx[name], fit.s)[0]
            pos = aggregate_by_frame(u, d[f"{name}_off"], "max")
            ood[name] = round(roc(pos, neg), 4)
            draws[mode][f"auroc_{name}"] = np.array([roc(pos[i], neg[j])
                                                     for i, j in roc_boots[name]])
            ood_ci[name] = interval(draws[mode][f"auroc_{name}"])
        res[mode] = {
            "s": round(fit.s, 4), "s_at_bound": fit.at_bound,
            "spearman_300K_eval": round(spearman(unc, e_ev), 4),
            "spearman_ci95": interval(b_sp),
            "spearman_within_element": {
                str(int(z)): round(spearman(unc[z300[ev_idx] == z], e_ev[z300[ev_idx] == z]), 4)
                for z in np.unique(z300)},
            "miscalibration_area_eval": round(area, 4),
            "miscalibration_area_ci95": interval(b_area),
            "miscalibration_area_uncalibrated_s1": round(area_of(
                est.confidence_from_neighbors(idx["300K"][ev_idx], 1.0)[0], ok), 4),
            "per_species_target": {"s": round(fit_z.s, 4),
                                   "miscalibration_area_eval": round(area_of(conf_z, ok_z), 4),
                                   "miscalibration_area_ci95": interval(b_area_z)},
            "auroc_frame_max_vs_300K_eval": ood,
            "auroc_ci95": ood_ci,
        }
    res["paired_difference_per_species_minus_global_ci95"] = {
        key: interval(list(draws["per_species"][key] - draws["global"][key]))
        for key in ("spearman", "area", "area_per_species_target",
                    *(f"auroc_{name}" for name in OOD_SETS))}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res))
    record(__file__, res)
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
