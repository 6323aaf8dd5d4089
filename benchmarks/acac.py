"""LTAU on real DFT data: acetylacetone (acac), a small ensemble of NequIP models.

Data: the acetylacetone dataset of D. P. Kovacs et al. (2022, MIT licence, (c) 2022 davkovacs;
used in "Evaluation of the MACE force field architecture", Kovacs et al., J. Chem. Phys. 159,
044118 (2023)); DFT: ORCA UHF PBE+D3/def2-SVP. Read from ``--data``, never copied into the
repository. Units: A, eV, eV/A.

Protocol
--------
1. ``train_300K.xyz`` (500 structures) is split into training (``--n-train``) and validation
   frames. ``--members`` small NequIP models (different seeds) are trained with
   ``nequip-train`` and the LTAU error-logging callback (eval mode) of :mod:`ltau_md.nequip`.
2. An LTAU estimator is fitted from all members' logs, indexed by member 0's descriptors
   (member 0 is the deployed model); atol = final training force MAE. The epoch window start
   (``--window-start``, default 0, E/6, E/3, E/2) and k (``--k``, default 10, 30) are chosen
   by the smallest fitted miscalibration area on the 300 K *calibration* half only.
3. Calibration: ``test_MD_300K`` is split by structure into a calibration and an evaluation
   half; s is fitted on the first (:func:`ltau_md.calibration.fit_scale`) and the
   miscalibration area reported on the second. ``test_MD_600K`` likewise, with its own s
   (and, for reference, with the 300 K s).
4. Ranking: Spearman(uncertainty, |F_ref - F_deployed|) of LTAU (1 - p), of the ensemble
   force spread (sqrt of the summed per-component variances over members) and of the latent
   distance (mean distance to the k nearest training atoms), on the 300 K evaluation half.
5. Out-of-domain detection: ``test_H_transfer`` (proton-transfer NEB path, energies only, so
   only uncertainties are used) against the 300 K evaluation structures; structure score =
   max or mean atom uncertainty; AUROC. ``test_dihedral`` is reported the same way.
6. Cost per MD step of one 15-atom structure: the deployed model alone, the LTAU query
   (FAISS search + aggregation), the full :class:`ltau_md.calculator.LTAUCalculator` step,
   and the M-model ensemble.

Usage::

    python benchmarks/acac.py --data ../shared/data/acac --out /tmp/acac_bench
    python benchmarks/acac.py --data ../shared/data/acac --out /tmp/acac_quick --quick

Writes ``OUT/results.json``, PNG figures in ``OUT``, the estimator in ``OUT/estimator`` and the
training runs in ``OUT/work``; prints one JSON line (key figures and targets). ``--reuse``
keeps finished training runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TYPE_NAMES = ("H", "C", "O")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers like 10,30, got {text!r}") from exc


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="directory of the acac xyz files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--members", type=int, default=4, help="ensemble members M (default 4)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs per member")
    p.add_argument("--features", type=int, default=16, help="NequIP num_features")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--r-max", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=0.01, help="initial learning rate")
    p.add_argument("--lr-final", type=float, default=5e-4,
                   help="learning rate reached at the last epoch (exponential decay)")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--n-train", type=int, default=450, help="training frames of train_300K")
    p.add_argument("--k", type=_ints, default=None,
                   help="LTAU neighbour counts to select from, e.g. 10,30 (default 10,30)")
    p.add_argument("--window-start", type=_ints, default=None,
                   help="first logged epochs to select from (default 0,E/6,E/3,E/2); the "
                   "(window, k) with the smallest fitted miscalibration area on the 300 K "
                   "calibration half is used")
    p.add_argument("--jobs", type=int, default=None,
                   help="members trained concurrently (default: CPU count, at most M)")
    p.add_argument("--seed", type=int, default=0, help="data split seed")
    p.add_argument("--reuse", action="store_true", help="keep finished training runs")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 members, 3 epochs, 60 training frames, 8 features")
    a = p.parse_args(argv)
    if a.quick:
        a.members, a.epochs, a.n_train, a.features = 2, 3, 60, 8
    a.k = a.k or [10, 30]
    a.window_start = a.window_start or sorted({0, a.epochs // 6, a.epochs // 3, a.epochs // 2})
    if a.members < 2:
        p.error("--members must be >= 2 (the ensemble baseline needs a spread)")
    return a


# ---------------------------------------------------------------------------- data
def read(path: Path) -> list:
    import ase.io

    if not path.exists():
        raise FileNotFoundError(f"{path} not found (is --data the acac directory?)")
    return ase.io.read(path, ":")


def offsets(frames) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(a) for a in frames])]).astype(np.int64)


def ref_forces(frames) -> np.ndarray:
    return np.concatenate([a.get_forces() for a in frames]).astype(np.float64)


# ---------------------------------------------------------------------------- training
def member_config(args, train: Path, val: Path, member: int) -> dict:
    from ltau_md.nequip import toy

    cfg = toy.tiny_config(train, val, type_names=TYPE_NAMES, seed=member + 1,
                          max_epochs=args.epochs, r_max=args.r_max, num_features=args.features,
                          num_layers=args.layers, l_max=1, batch_size=args.batch_size,
                          lr=args.lr, loggers=[{"mode": "eval", "member": member}])
    gamma = (args.lr_final / args.lr) ** (1.0 / max(args.epochs - 1, 1))
    cfg["training_module"]["lr_scheduler"] = {
        "scheduler": {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": gamma},
        "interval": "epoch", "frequency": 1,
    }
    return cfg


def run_complete(run: Path, epochs: int) -> bool:
    from ltau_md import ErrorLog

    try:
        log = ErrorLog.open(run / "ltau_log")
        return (run / "last.ckpt").exists() and len(log.epochs(log.members[0])) >= epochs
    except Exception:
        return False


def train_members(args, work: Path, train: Path, val: Path) -> tuple[list[Path], float]:
    from ltau_md.nequip import toy

    runs = [work / f"member{m}" for m in range(args.members)]
    todo = [m for m, r in enumerate(runs) if not (args.reuse and run_complete(r, args.epochs))]
    cores = os.cpu_count() or 1
    jobs = max(1, min(args.jobs or cores, len(todo) or 1))
    threads = max(1, cores // jobs)
    t0 = time.perf_counter()

    def one(m: int) -> None:
        import shutil

        shutil.rmtree(runs[m], ignore_errors=True)
        cfg = toy.write_config(member_config(args, train, val, m), work / f"member{m}.yaml")
        toy.nequip_train(cfg, runs[m], threads=threads, timeout=None)
        print(f"[acac] member {m} trained ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    with ThreadPoolExecutor(jobs) as pool:
        for f in [pool.submit(one, m) for m in todo]:
            f.result()
    return runs, time.perf_counter() - t0


# ---------------------------------------------------------------------------- evaluation
def evaluate(model, frames, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(forces (n, 3) eV/A, features (n, D)) of all atoms of ``frames``."""
    forces, feats = [], []
    for i in range(0, len(frames), batch):
        for o in model.evaluate_many(frames[i:i + batch]):
            forces.append(o.forces)
            feats.append(o.features)
    return np.concatenate(forces), np.concatenate(feats)


def ensemble_spread(forces: list[np.ndarray]) -> np.ndarray:
    """Per-atom ensemble force spread in eV/A: sqrt(sum_xyz var_members(F))."""
    f = np.stack(forces)  # (M, n, 3)
    return np.sqrt(f.var(axis=0).sum(axis=1))


def time_per_call(fn, n: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def cost_per_step(model, members_models, est, atoms, rounds: int = 10, n: int = 20) -> dict:
    """Seconds per MD step for one structure (positions jittered every call): the deployed
    model alone, the LTAU query, a full LTAUCalculator step and the M-model ensemble. The
    four are timed in interleaved rounds and medians are reported, so load changes on a
    shared machine affect them alike."""
    import torch

    from ltau_md.calculator import LTAUCalculator

    # one intra-op thread: a 15-atom molecule gains nothing from more, and oversubscribed
    # threads on a shared machine make timings erratic
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    a = atoms.copy()
    b = atoms.copy()

    def jitter(x):
        x.positions = base + rng.normal(scale=0.01, size=base.shape)

    feats = model.evaluate(a).features
    b.calc = LTAUCalculator(model, est)

    def calc_step():
        jitter(b)
        b.get_forces()
        b.calc.get_property("uncertainty", b)

    fns = {
        "model_s": lambda: (jitter(a), model.evaluate(a)),
        "ltau_query_s": lambda: est.predict(feats),
        "ltau_calculator_step_s": calc_step,
        "ensemble_step_s": lambda: (jitter(a), [m.evaluate(a) for m in members_models]),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(time_per_call(fn, n, warmup=2))
    med = {k: float(np.median(v)) for k, v in times.items()}
    ens = np.array(times["ensemble_step_s"])
    return {
        **med, "members": len(members_models), "rounds": rounds, "calls_per_round": n,
        "query_over_ensemble": float(np.median(np.array(times["ltau_query_s"]) / ens)),
        "calculator_step_over_ensemble": float(np.median(
            np.array(times["ltau_calculator_step_s"]) / ens)),
        "model_over_ensemble": float(np.median(np.array(times["model_s"]) / ens)),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import ase.io

    from ltau_md import ErrorLog, ErrorSummary
    from ltau_md._io import write_json_atomic
    from ltau_md.calibration import (
        cartography_from,
        evaluate_calibration,
        fit_scale,
        force_error_norm,
        split_frames,
    )
    from ltau_md.estimator import LTAUEstimator
    from ltau_md.metrics import aggregate_by_frame, auroc, binned_error_calibration, spearman
    from ltau_md.nequip import NequIPFeatureModel, find_error_log, fit_from_runs
    from ltau_md.plots import (
        plot_calibration,
        plot_cartography,
        plot_error_vs_uncertainty,
        plot_roc,
        plot_scale_fit,
    )

    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    work = out / "work"
    (work / "data").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # -- data ---------------------------------------------------------------------------
    train_all = read(data / "train_300K.xyz")
    perm = np.random.default_rng(args.seed).permutation(len(train_all))
    n_val = min(50, len(train_all) - args.n_train)
    train_xyz, val_xyz = work / "data" / "train.xyz", work / "data" / "val.xyz"
    ase.io.write(train_xyz, [train_all[i] for i in perm[:args.n_train]], format="extxyz")
    ase.io.write(val_xyz, [train_all[i] for i in perm[args.n_train:args.n_train + n_val]],
                 format="extxyz")
    tests = {name: read(data / f"{fname}.xyz") for name, fname in (
        ("300K", "test_MD_300K"), ("600K", "test_MD_600K"),
        ("H_transfer", "test_H_transfer"), ("dihedral", "test_dihedral"))}
    if args.quick:
        tests["300K"], tests["600K"] = tests["300K"][:120], tests["600K"][:120]

    # -- ensemble training with error logging --------------------------------------------
    runs, t_train = train_members(args, work, train_xyz, val_xyz)
    logs = [ErrorLog.open(find_error_log(r)) for r in runs]
    est_dir = out / "estimator"
    model = NequIPFeatureModel.from_file(runs[0] / "last.ckpt")
    members_models = [model] + [NequIPFeatureModel.from_file(r / "last.ckpt") for r in runs[1:]]

    # -- evaluate every test set with every member ------------------------------------------
    ev: dict[str, dict] = {}
    for name, frames in tests.items():
        per_member = [evaluate(m, frames) for m in members_models]
        forces0, feats0 = per_member[0]
        rec = {"frames": frames, "offsets": offsets(frames), "feats": feats0,
               "ens_std": ensemble_spread([f for f, _ in per_member])}
        if name in ("300K", "600K"):
            ref = ref_forces(frames)
            rec["err"] = force_error_norm(ref - forces0)
            rec["err_ens_mean"] = force_error_norm(
                ref - np.mean([f for f, _ in per_member], axis=0))
            rec["split"] = split_frames(rec["offsets"], 0.5, seed=args.seed)
        ev[name] = rec

    # -- LTAU estimator: (window start, k) chosen on the 300 K calibration half ---------------
    # fit_from_runs extracts the deployed model's descriptors of the logged training atoms;
    # the candidates re-use them (exact copies from the flat index).
    est = fit_from_runs(runs, runs[0] / "last.ckpt", est_dir, k=args.k[0], index="flat",
                        window=(args.window_start[0] or None, None), progress=False)
    x_train = est.index_.reconstruct_n(0, est.n_train_)
    cal300 = ev["300K"]["split"][0]
    selection = []
    for start in args.window_start:
        summary = ErrorSummary.from_logs(logs, start=start or None)
        for k in args.k:
            cand = LTAUEstimator(k=k, window=(start or None, None)).fit(x_train, summary)
            idx = cand.kneighbors(ev["300K"]["feats"][cal300])[1]
            f = fit_scale(cand, None, ev["300K"]["err"][cal300], indices=idx, store=False)
            selection.append({"window_start": start, "k": k, "s": f.s,
                              "calibration_half_area": f.area})
    best = min(selection, key=lambda r: r["calibration_half_area"])
    if (best["window_start"], best["k"]) != (args.window_start[0], args.k[0]):
        est = fit_from_runs(runs, runs[0] / "last.ckpt", est_dir, k=best["k"], index="flat",
                            window=(best["window_start"] or None, None), progress=False)
    atol = est.atol_
    for rec in ev.values():
        pred = est.predict(rec["feats"])
        rec.update(indices=pred.indices, distance=pred.distances.mean(axis=1),
                   predicted_error=pred.predicted_error)

    # -- calibration --------------------------------------------------------------------------
    res: dict = {"atol_eV_per_A": atol, "members": args.members, "epochs": args.epochs,
                 "n_train_frames": args.n_train, "n_train_atoms": est.n_train_,
                 "descriptor_dim": est.dim_, "k": est.k, "window": list(est.window),
                 "train_seconds": t_train}
    res["selection"] = {"candidates": selection, "chosen": best}
    splits, fits, curves = {}, {}, {}
    for name in ("300K", "600K"):
        r = ev[name]
        cal, evl = r["split"]
        splits[name] = (cal, evl)
        fits[name] = fit_scale(est, None, r["err"][cal], indices=r["indices"][cal],
                               store=(name == "300K"))
        res[f"test_force_mae_{name}"] = float(r["err"].mean())
        res[f"fraction_within_atol_{name}"] = float((r["err"] <= atol).mean())
    s300, s600 = fits["300K"].s, fits["600K"].s
    for name, s_list in (("300K", [("s=1", 1.0), ("fitted on 300K", s300)]),
                         ("600K", [("s=1", 1.0), ("300K s", s300), ("own s", s600)])):
        r = ev[name]
        evl = splits[name][1]
        for label, s in s_list:
            curves[f"{name} {label}"] = evaluate_calibration(
                est, None, r["err"][evl], indices=r["indices"][evl], s=s)
    res["calibration"] = {
        "s_300K": s300, "s_600K": s600,
        "fit_area_300K": fits["300K"].area, "fit_area_600K": fits["600K"].area,
        "curves": {k: {kk: v.to_dict()[kk] for kk in (
            "miscalibration_area", "integrated_area", "sharpness", "dispersion", "brier",
            "accuracy", "mean_confidence_all", "n", "s")} for k, v in curves.items()},
    }
    area300 = curves["300K fitted on 300K"].miscalibration_area
    area600 = curves["600K own s"].miscalibration_area

    # -- ranking ------------------------------------------------------------------------------
    ranking = {}
    for name in ("300K", "600K"):
        r = ev[name]
        evl = splits[name][1]
        conf, _ = est.confidence_from_neighbors(r["indices"][evl], s300)
        unc = 1.0 - conf
        e = r["err"][evl]
        r["ltau_unc_eval"] = unc
        ranking[name] = {
            "ltau_uncertainty": spearman(unc, e),
            "ltau_predicted_error": spearman(r["predicted_error"][evl], e),
            "ensemble_std": spearman(r["ens_std"][evl], e),
            "ensemble_std_vs_ensemble_mean_error": spearman(r["ens_std"][evl],
                                                            r["err_ens_mean"][evl]),
            "latent_distance": spearman(r["distance"][evl], e),
        }
    res["spearman"] = ranking
    bec = binned_error_calibration(ev["300K"]["predicted_error"][splits["300K"][1]],
                                   ev["300K"]["err"][splits["300K"][1]], n_bins=10)
    res["predicted_error_ence_300K"] = bec.ence

    # -- out-of-domain detection --------------------------------------------------------------
    def frame_scores(name: str, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        r = ev[name]
        conf, _ = est.confidence_from_neighbors(r["indices"], s300)
        off = r["offsets"]
        sc = {}
        for how in ("max", "mean"):
            sc[f"ltau_{how}"] = aggregate_by_frame(1.0 - conf, off, how)
            sc[f"ensemble_{how}"] = aggregate_by_frame(r["ens_std"], off, how)
            sc[f"latent_distance_{how}"] = aggregate_by_frame(r["distance"], off, how)
        if mask is not None:
            frame_mask = mask[off[:-1]]
            sc = {k: v[frame_mask] for k, v in sc.items()}
        return sc

    neg = frame_scores("300K", splits["300K"][1])
    ood = {}
    roc_series = {}
    for name in ("H_transfer", "dihedral"):
        pos = frame_scores(name)
        ood[name] = {}
        for key in pos:
            sc = np.concatenate([pos[key], neg[key]])
            lab = np.r_[np.ones(pos[key].size, bool), np.zeros(neg[key].size, bool)]
            ood[name][key] = auroc(sc, lab)
            if name == "H_transfer" and key.endswith("max"):
                roc_series[key.replace("_", " ")] = (sc, lab)
        ood[name]["n_structures"] = int(len(tests[name]))
    ood["n_negative_300K_structures"] = int(next(iter(neg.values())).size)
    # per frame along the proton-transfer path: the fraction of 300 K structures scoring lower
    pos = frame_scores("H_transfer")
    ood["H_transfer_path_percentile_vs_300K"] = {
        key: [float(np.mean(neg[key] < v)) for v in pos[key]]
        for key in ("ltau_max", "ensemble_max", "latent_distance_max")}
    res["auroc"] = ood

    # -- cost -----------------------------------------------------------------------------------
    cost = cost_per_step(model, members_models, est, tests["300K"][0],
                         rounds=3 if args.quick else 10, n=5 if args.quick else 20)
    res["cost_per_step"] = cost

    # -- cartography and figures ------------------------------------------------------------------
    cart = cartography_from(est, s=s300)
    res["cartography_fractions"] = cart.fractions()
    figs = {
        **{f"calibration_{t}": plot_calibration(
            {k: v for k, v in curves.items() if k.startswith(t)}, out / f"calibration_{t}.png",
            target_label=f"atol = {atol:.3f} eV/Å",
            title=f"acac {t} evaluation half, LTAU (M={args.members}, k={est.k})")
           for t in ("300K", "600K")},
        "scale_fit": plot_scale_fit({"300K": fits["300K"], "600K": fits["600K"]},
                                    out / "scale_fit.png", title="fit of s on calibration halves"),
        "error_vs_uncertainty": plot_error_vs_uncertainty(
            {"LTAU 1-p": (ev["300K"]["ltau_unc_eval"], ev["300K"]["err"][splits["300K"][1]]),
             "ensemble std": (ev["300K"]["ens_std"][splits["300K"][1]],
                              ev["300K"]["err"][splits["300K"][1]]),
             "latent distance": (ev["300K"]["distance"][splits["300K"][1]],
                                 ev["300K"]["err"][splits["300K"][1]])},
            out / "error_vs_uncertainty.png",
            xlabels={"LTAU 1-p": "1 - p", "ensemble std": "force spread (eV/Å)",
                     "latent distance": "mean k-NN distance"},
            title="300 K evaluation half: |ΔF| of the deployed model"),
        "cartography": plot_cartography(cart, out / "cartography.png"),
        "roc_h_transfer": plot_roc(roc_series, out / "roc_h_transfer.png",
                                   title="H-transfer vs 300 K structures (max over atoms)"),
    }
    res["figures"] = {k: str(v) for k, v in figs.items()}
    est.save(est_dir)  # persists the fitted s

    # -- targets --------------------------------------------------------------------------------
    sp = ranking["300K"]
    best_auroc = max(ood["H_transfer"]["ltau_max"], ood["H_transfer"]["ltau_mean"])
    targets = {
        "miscal_area_300K_le_0.05": (area300, area300 <= 0.05),
        "miscal_area_600K_own_s_le_0.10": (area600, area600 <= 0.10),
        "spearman_ltau_ge_ensemble_minus_0.05": (
            sp["ltau_uncertainty"] - sp["ensemble_std"],
            sp["ltau_uncertainty"] >= sp["ensemble_std"] - 0.05),
        "auroc_h_transfer_ge_0.9": (best_auroc, best_auroc >= 0.9),
        "ltau_query_le_ensemble_over_M": (
            cost["query_over_ensemble"], cost["query_over_ensemble"] <= 1.0 / args.members),
        "ltau_step_le_ensemble_over_M": (
            cost["calculator_step_over_ensemble"],
            cost["calculator_step_over_ensemble"] <= 1.0 / args.members),
    }
    res["targets"] = {k: {"value": float(v), "met": bool(ok)} for k, (v, ok) in targets.items()}
    res["wall_seconds"] = time.perf_counter() - t_start
    res["quick"] = bool(args.quick)
    write_json_atomic(out / "results.json", res)
    line = {
        "benchmark": "acac", "quick": bool(args.quick), "members": args.members,
        "epochs": args.epochs, "atol": round(atol, 4),
        "s_300K": round(s300, 4), "s_600K": round(s600, 4),
        "area_300K_eval": round(area300, 4), "area_600K_eval_own_s": round(area600, 4),
        "area_600K_eval_300K_s": round(curves["600K 300K s"].miscalibration_area, 4),
        "area_300K_eval_s1": round(curves["300K s=1"].miscalibration_area, 4),
        "spearman_300K": {k: round(v, 4) for k, v in sp.items()},
        "auroc_H_transfer": {k: round(v, 4) for k, v in ood["H_transfer"].items()
                             if k != "n_structures"},
        "cost_ratio_query": round(cost["query_over_ensemble"], 4),
        "cost_ratio_step": round(cost["calculator_step_over_ensemble"], 4),
        "targets_met": {k: bool(ok) for k, (_, ok) in targets.items()},
        "results": str(out / "results.json"),
    }
    print(json.dumps(line))
    # LTAUEstimator is imported for the estimator directory round trip check
    assert LTAUEstimator.load(est_dir).scale_ == est.scale_
    return 0


if __name__ == "__main__":
    sys.exit(main())
