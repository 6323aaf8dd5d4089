"""IS2RS benchmark: does LTAU uncertainty along a NequIP relaxation predict how good the
relaxed structure is (energy above the lowest reference minimum, basin, FbT, RMSD)?

Pipeline: generate the OC20-style EMT benchmark -> train a NequIP on the training frames
with LTAU error logging -> fit the LTAU estimator -> relax every validation system with the
NequIP + LTAU calculator on a 2-worker dask LocalCluster (and serially unless --skip-serial:
wall times; the results must agree) -> analysis with bootstrap intervals (see
ltau_md.workflows.is2rs.analysis). One seed per run; benchmarks/is2rs_summary.py pools seeds.

Prints one JSON line at the end and writes OUT/bench_line.json, OUT/report.json and figures.

    python benchmarks/bench_is2rs.py --out bench_out/is2rs_s0 --seed 0 --skip-serial
    python benchmarks/bench_is2rs.py --out bench_out/is2rs_q --quick  # ~3-5 min
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the result statistics, SIGNAL:STAT[@tags=T]/REDUCTION (after the sys.path line above)
from ltau_md.workflows.is2rs._results import (  # noqa: E402
    FERR,
    NOVELTY,
    NOVELTY_ADS,
    UQ,
    UQ_ADS,
    series_key,
)

ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
VAL_SPLITS = ("val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out/is2rs", help="work directory")
    p.add_argument("--quick", action="store_true", help="small everything (smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=None, help="training systems (default 600)")
    p.add_argument("--n-val", type=int, default=None, help="systems per val split (default 200)")
    p.add_argument("--frames", type=int, default=4, help="training frames per system")
    p.add_argument("--epochs", type=int, default=None, help="NequIP epochs (default 50)")
    p.add_argument("--features", type=int, default=None, help="NequIP features (default 32)")
    p.add_argument("--layers", type=int, default=None,
                   help="NequIP message-passing layers (default 3)")
    p.add_argument("--lmax", type=int, default=1, help="NequIP l_max")
    p.add_argument("--r-max", type=float, default=4.5, help="NequIP cutoff (A)")
    p.add_argument("--lr-min", type=float, default=1e-4,
                   help="cosine-decay the learning rate 0.01 -> LR_MIN over the epochs "
                   "(default 1e-4; 0 or less: constant)")
    p.add_argument("--log-mode", default="eval", choices=["eval", "train"],
                   help="LTAU error logging mode of the callback")
    p.add_argument("--steps", type=int, default=None,
                   help="max relaxation steps (default 1000, the LTAU paper's; --quick 80)")
    p.add_argument("--optimizer", default="FIRE", choices=["FIRE", "LBFGS", "BFGS"],
                   help="model relaxation optimizer: FIRE (the LTAU paper's Fig. 4, default) "
                   "or LBFGS (OC20's)")
    p.add_argument("--workers", type=int, default=2, help="dask LocalCluster workers")
    p.add_argument("--skip-serial", action="store_true", help="dask run only (no timing pair)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per process (torch, BLAS, FAISS) for training and the serial "
                   "campaign; dask workers always use 1")
    p.add_argument("--fresh", action="store_true", help="delete OUT first")
    p.add_argument("--stop-after", choices=["generate", "train", "fit"], default=None,
                   help="stop after this stage (e.g. prepare data and model, campaign later)")
    p.add_argument("--reuse", default=None,
                   help="directory of an earlier run whose benchmark/, nequip_run/ and "
                   "estimator/ are used (nothing is generated, trained or fitted)")
    p.add_argument("--reuse-benchmark", default=None,
                   help="directory of an earlier run whose benchmark/ is used (the model is "
                   "trained and fitted here)")
    p.add_argument("--error-stride", type=int, default=1,
                   help="true force error every K-th model step and the last (default 1)")
    p.add_argument("--reference", default="ase.calculators.emt:EMT",
                   help="reference calculator import path (default EMT)")
    p.add_argument("--oc20-adsorbates", default=None, metavar="WHEEL_OR_PKL",
                   help="OC20's adsorbates from the fairchem-data-oc wheel (C2 chemistry out "
                   "of domain) instead of the EMT set")
    p.add_argument("--batch-size", type=int, default=None,
                   help="systems per dask task (default: ~16 tasks per worker, <= 8)")
    p.add_argument("--worker-threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--limit", type=int, default=None,
                   help="campaign on the first N systems of each validation split")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--resume-campaign", action="store_true",
                   help="keep the finished systems of OUT/campaign_dask (same settings; e.g. "
                   "a campaign continued with `ltau-md is2rs`); the campaign time is then "
                   "only the rest's")
    p.add_argument("--finished-only", action="store_true",
                   help="with --resume-campaign: report on the systems the campaign finished, "
                   "relaxing nothing more (a campaign stopped part-way)")
    p.add_argument("--record", default=None,
                   help="record name (default bench_is2rs), e.g. is2rs_chgnet")
    args = p.parse_args(argv)
    q = args.quick
    args.n_train = args.n_train if args.n_train is not None else (20 if q else 600)
    args.n_val = args.n_val if args.n_val is not None else (5 if q else 200)
    args.epochs = args.epochs if args.epochs is not None else (3 if q else 50)
    args.features = args.features if args.features is not None else (8 if q else 32)
    args.layers = args.layers if args.layers is not None else (2 if q else 3)
    args.lr_min = args.lr_min if args.lr_min > 0 else None
    args.steps = args.steps if args.steps is not None else (80 if q else 1000)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # before numpy/torch/faiss are imported: oversubscribed OpenMP threads are very slow
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    from ltau_md.integrations.nequip import fit_from_runs, load_calculator, toy
    from ltau_md.workflows.is2rs import load_systems
    from ltau_md.workflows.is2rs import report as is2rs_report
    from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark
    from ltau_md.workflows.is2rs.runner import RelaxSettings, run_campaign

    out = Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    # 1. data ------------------------------------------------------------------------------
    src = Path(args.reuse).resolve() if args.reuse else out
    bench = (Path(args.reuse_benchmark).resolve() if args.reuse_benchmark else src) / "benchmark"
    t0 = time.perf_counter()
    if not (bench / "manifest.json").exists():
        kw: dict = {}
        if args.oc20_adsorbates:
            from ltau_md.workflows.is2rs.adsorbates import oc20_generator_settings

            kw = oc20_generator_settings(args.oc20_adsorbates)
        cfg = GeneratorConfig(frames_per_system=args.frames, val_frames_per_system=2,
                              reference=args.reference, **kw)
        generate_benchmark(bench, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                           cfg=cfg, n_workers=args.workers, progress=False)
    times["generate_s"] = time.perf_counter() - t0
    manifest = json.loads((bench / "manifest.json").read_text())
    n_frames = manifest["splits"]["train"]["n_frames"]
    counts = {k: v["n_systems"] for k, v in manifest["splits"].items()}
    print(f"[is2rs] benchmark: {json.dumps(counts)}, {n_frames} training frames "
          f"({times['generate_s']:.0f} s)", flush=True)

    if args.stop_after == "generate":
        return 0
    # 2. NequIP with LTAU error logging ------------------------------------------------------
    run = src / "nequip_run"
    t0 = time.perf_counter()
    if not (run / "last.ckpt").exists():
        cfg = toy.tiny_config(
            bench / "train" / "frames.extxyz", bench / "val_id" / "frames.extxyz",
            type_names=ELEMENTS, seed=args.seed + 1, max_epochs=args.epochs,
            num_features=args.features, num_layers=args.layers, l_max=args.lmax,
            r_max=args.r_max, batch_size=8, lr=0.01, lr_min=args.lr_min,
            loggers=[{"mode": args.log_mode}],
        )
        conf = toy.write_config(cfg, out / "nequip.yaml")
        shutil.rmtree(run, ignore_errors=True)
        toy.nequip_train(conf, run, threads=args.threads, timeout=6 * 3600)
    times["train_s"] = time.perf_counter() - t0
    print(f"[is2rs] NequIP trained ({times['train_s']:.0f} s)", flush=True)

    if args.stop_after == "train":
        return 0
    # 3. LTAU estimator --------------------------------------------------------------------
    est_dir = (out / "estimator") if not args.reuse else (out / "estimator_refit")
    t0 = time.perf_counter()
    if not (est_dir / "manifest.json").exists():
        if args.reuse and (src / "estimator_refit" / "manifest.json").exists():
            est_dir = src / "estimator_refit"
        else:
            fit_from_runs([run], run / "last.ckpt", est_dir, k=10, progress=False)
    times["fit_s"] = time.perf_counter() - t0
    if args.stop_after == "fit":
        return 0

    # 4. campaign: serial and dask, timed alike (model build, campaign, cluster start/close) --
    systems = load_systems(bench, splits=list(VAL_SPLITS))
    if args.limit is not None:
        systems = [s for sp in VAL_SPLITS for s in [x for x in systems if x.split == sp][
            :args.limit]]
    if args.finished_only:
        from ltau_md.workflows.is2rs._results import result_path

        systems = [s for s in systems if result_path(out / "campaign_dask", s.sid).exists()]
    factory = functools.partial(load_calculator, model=str(run / "last.ckpt"),
                                estimator=str(est_dir))
    settings = RelaxSettings(fmax=0.05, steps=args.steps, optimizer=args.optimizer,
                             reference=args.reference, error_stride=args.error_stride)
    serial = None
    if not args.skip_serial:
        t0 = time.perf_counter()
        serial = run_campaign(systems, factory, out / "campaign_serial", settings, n_workers=0,
                              resume=False, progress=False)
        times["campaign_serial_s"] = time.perf_counter() - t0
        print(f"[is2rs] serial campaign ({times['campaign_serial_s']:.0f} s)", flush=True)
    t0 = time.perf_counter()
    dask = run_campaign(systems, factory, out / "campaign_dask", settings,
                        n_workers=args.workers, resume=args.resume_campaign, progress=False,
                        batch_size=args.batch_size, worker_threads=args.worker_threads)
    times[f"campaign_dask{args.workers}_s"] = time.perf_counter() - t0
    print(f"[is2rs] dask campaign ({times[f'campaign_dask{args.workers}_s']:.0f} s) "
          f"{dask.counts}", flush=True)
    if serial is not None:
        times["speedup"] = times["campaign_serial_s"] / times[f"campaign_dask{args.workers}_s"]
    agree = None
    if serial is not None:
        by_sid = {r["sid"]: r for r in dask}
        pairs = [(a, by_sid[a["sid"]]) for a in serial if a["sid"] in by_sid]
        d_rmsd = [abs(a["rmsd"] - b["rmsd"]) for a, b in pairs
                  if a["status"] == b["status"] == "ok"]
        agree = {
            "same_n_steps": all(a.get("n_steps") == b.get("n_steps") for a, b in pairs),
            "max_abs_rmsd_diff": max(d_rmsd) if d_rmsd else None,
        }
    step_s = [(r["wall_s"] - r.get("trajectory_reference_s", 0.0)) / max(r["n_steps"] + 1, 1)
              for r in (serial or dask)
              if r.get("status") == "ok"]
    ref_s = [r["ref_wall_s"] for r in (serial or dask) if r.get("ref_wall_s") is not None]
    # wall seconds per system (1 thread): the model relaxation (UQ included), the reference's
    # forces along it, the reference scoring of the end point (re-relaxation included)
    cost: dict[str, dict] = {}
    for r in dask:
        if r.get("status") == "ok":
            traj = r.get("trajectory_reference_s") or 0.0
            c = cost.setdefault(r["split"], {"n": 0, "model": 0.0, "trajectory_reference": 0.0,
                                             "end_point_reference": 0.0})
            c["n"] += 1
            c["model"] += r["wall_s"] - traj
            c["trajectory_reference"] += traj
            c["end_point_reference"] += r.get("ref_wall_s") or 0.0
    cost_per_system = {sp: {k: (round(v / c["n"], 2) if k != "n" else v) for k, v in c.items()}
                       for sp, c in sorted(cost.items())}

    frames_mae = frames_force_mae(bench, factory)
    print(f"[is2rs] force MAE on reference frames: {json.dumps(frames_mae)}", flush=True)

    # 5. analysis --------------------------------------------------------------------------
    report = is2rs_report.write_report(out, dask, rmsd_threshold=0.5, not_done=dask.not_done,
                                   n_boot=args.n_boot)
    line = {
        "bench": "is2rs",
        "quick": args.quick,
        "n_train_systems": counts.get("train"),
        "n_train_frames": n_frames,
        "n_val_per_split": {k: v for k, v in counts.items() if k != "train"},
        "epochs": args.epochs,
        "optimizer": args.optimizer,
        "max_steps": args.steps,
        "reference": args.reference,
        "error_stride": args.error_stride,
        "resumed_campaign": args.resume_campaign,
        "finished_only": args.finished_only,
        "threads_serial": args.threads,
        "dask_workers": args.workers,
        "counts": report["counts"],
        "median_model_step_s": _r(sorted(step_s)[len(step_s) // 2]) if step_s else None,
        "median_reference_scoring_s": _r(sorted(ref_s)[len(ref_s) // 2]) if ref_s else None,
        "campaign_wall_s_per_system": cost_per_system,
        "splits": {},
        "serial_vs_dask": agree,
        "frames_force_mae": frames_mae,
        **{k: round(v, 1) for k, v in times.items()},
    }
    for name, e in report["splits"].items():
        line["splits"][name] = split_line(e)
    line["ood_detection_auroc"] = {
        st: _ci(report.get("ood_detection"), st)
        for st in (series_key(NOVELTY, "initial"), series_key(NOVELTY_ADS, "initial"),
                   series_key(UQ, "initial"), series_key(UQ_ADS, "initial"))
        if _ci(report.get("ood_detection"), st) is not None}
    print(json.dumps(line))
    record(__file__, line, name=args.record)
    (out / "bench_line.json").write_text(json.dumps(line) + "\n")
    return 0


def frames_force_mae(bench: Path, factory, splits=VAL_SPLITS) -> dict:
    """Force MAE (eV/A, free-atom components) and median per-frame max error of the model on
    each split's reference frames (``<split>/frames.extxyz``, sampled along the reference
    relaxations): is an "out-of-domain" split really harder for the model?"""
    import numpy as np
    from ase.io import read

    calc = factory()
    out = {}
    for split in splits:
        path = bench / split / "frames.extxyz"
        if not path.exists():
            continue
        errs, maxes = [], []
        for fr in read(path, index=":"):
            ref = fr.get_forces(apply_constraint=False)
            free = fr.get_tags() > 0
            a = fr.copy()
            a.calc = calc
            calc.reset()
            if hasattr(calc, "reset_trajectory"):
                calc.reset_trajectory()
            d = a.get_forces(apply_constraint=False)[free] - ref[free]
            errs.append(np.abs(d).ravel())
            maxes.append(float(np.linalg.norm(d, axis=1).max()))
        out[split] = {"n_frames": len(maxes), "force_mae": _r(float(np.concatenate(errs).mean())),
                      "median_max_error": _r(float(np.median(maxes)))}
    return out


def _ci(entry, stat):
    """"value [lo, hi]" of a {"value", "lo", "hi"} report entry."""
    if not entry or stat not in entry or entry[stat].get("value") is None:
        return None
    e = entry[stat]
    return f"{_r(e['value'])} [{_r(e['lo'])}, {_r(e['hi'])}]"


def split_line(e: dict) -> dict:
    """The figures of one report split entry."""
    sp, au = e.get("spearman_ci", {}), e.get("auroc_ci", {})
    out = {
        "n": e.get("n_ok"),
        "adwt": _r(e.get("adwt")),
        "adwt_min_sym": _r(e.get("adwt_min_sym")),
        "rmsd_mean": _r(e.get("rmsd_mean")),
        "failure_rates": {k: _r(v) for k, v in (e.get("failure_rates") or {}).items()},
        "energy_above_min_median": _r(e.get("energy_above_min_median")),
        "fbt": _r(e.get("fbt")),
        "afbt": _r(e.get("afbt")),
        "basin": e.get("basin"),
        "force_mae": _r(e.get("force_mae")),
        "force_mae_median": _r(e.get("force_mae_median")),
    }
    for target in ("rmsd", "energy_above_min"):
        for st in (series_key(UQ, "max"), series_key(UQ, "final"), series_key(UQ, "mean"),
                   series_key(FERR, "max"), series_key(FERR, "final"), "n_ads",
                   "ml_fmax_initial", series_key(NOVELTY, "max"), series_key(NOVELTY, "final")):
            if (v := _ci(sp.get(target), st)) is not None:
                out[f"spearman_{st}_vs_{target}"] = v
    for label in ("rmsd", "energy", "not_fbt", "higher_or_fmax"):
        for st in (series_key(UQ, "max"), series_key(UQ, "final"), series_key(FERR, "max"),
                   "n_ads", series_key(NOVELTY, "max")):
            if (v := _ci(au.get(label), st)) is not None:
                out[f"auroc_{st}_{label}_fail"] = v
    return out


def _r(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(x, 3)


if __name__ == "__main__":
    sys.exit(main())
