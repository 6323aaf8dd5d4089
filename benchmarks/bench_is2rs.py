"""IS2RS benchmark: does LTAU uncertainty along a NequIP relaxation predict the RMSD to the
reference (EMT) relaxed structure?

Pipeline: generate the OC20-style EMT benchmark -> train a small NequIP on the training frames
with LTAU error logging -> fit the LTAU estimator -> relax every validation system with the
NequIP + LTAU calculator, serially and on a 2-worker dask LocalCluster (wall times; the results
must agree) -> analysis (Spearman(max UQ, RMSD), AUROC for RMSD > 0.5 A, ADwT per split).

Prints one JSON line at the end and writes OUT/report.json, OUT/uq_vs_rmsd.png.

    python benchmarks/bench_is2rs.py --out bench_out/is2rs            # ~20-40 min on 2 cores
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
VAL_SPLITS = ("val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out/is2rs", help="work directory")
    p.add_argument("--quick", action="store_true", help="small everything (smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=None, help="training systems (default 150)")
    p.add_argument("--n-val", type=int, default=None, help="systems per val split (default 50)")
    p.add_argument("--frames", type=int, default=4, help="training frames per system")
    p.add_argument("--epochs", type=int, default=None, help="NequIP epochs (default 15)")
    p.add_argument("--features", type=int, default=16, help="NequIP features")
    p.add_argument("--log-mode", default="eval", choices=["eval", "train"],
                   help="LTAU error logging mode of the callback")
    p.add_argument("--steps", type=int, default=None, help="max relaxation steps (default 200)")
    p.add_argument("--workers", type=int, default=2, help="dask LocalCluster workers")
    p.add_argument("--skip-serial", action="store_true", help="dask run only (no timing pair)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per process (torch, BLAS, FAISS) for training and the serial "
                   "campaign; dask workers always use 1")
    p.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = p.parse_args(argv)
    q = args.quick
    args.n_train = args.n_train if args.n_train is not None else (20 if q else 150)
    args.n_val = args.n_val if args.n_val is not None else (5 if q else 50)
    args.epochs = args.epochs if args.epochs is not None else (3 if q else 15)
    args.steps = args.steps if args.steps is not None else (80 if q else 200)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # before numpy/torch/faiss are imported: oversubscribed OpenMP threads are very slow
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    from ltau_md.is2rs import analysis, load_systems
    from ltau_md.is2rs.generate import GeneratorConfig, generate_benchmark
    from ltau_md.is2rs.runner import RelaxSettings, run_campaign
    from ltau_md.nequip import fit_from_runs, load_calculator, toy

    out = Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    # 1. data ------------------------------------------------------------------------------
    bench = out / "benchmark"
    t0 = time.perf_counter()
    if not (bench / "manifest.json").exists():
        cfg = GeneratorConfig(frames_per_system=args.frames, val_frames_per_system=2)
        generate_benchmark(bench, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                           cfg=cfg, n_workers=args.workers, progress=False)
    times["generate_s"] = time.perf_counter() - t0
    manifest = json.loads((bench / "manifest.json").read_text())
    n_frames = manifest["splits"]["train"]["n_frames"]
    counts = {k: v["n_systems"] for k, v in manifest["splits"].items()}
    print(f"[is2rs] benchmark: {json.dumps(counts)}, {n_frames} training frames "
          f"({times['generate_s']:.0f} s)", flush=True)

    # 2. NequIP with LTAU error logging ------------------------------------------------------
    run = out / "nequip_run"
    t0 = time.perf_counter()
    if not (run / "last.ckpt").exists():
        cfg = toy.tiny_config(
            bench / "train" / "frames.extxyz", bench / "val_id" / "frames.extxyz",
            type_names=ELEMENTS, seed=args.seed + 1, max_epochs=args.epochs,
            num_features=args.features, num_layers=2, l_max=1, r_max=4.5, batch_size=8,
            lr=0.01, loggers=[{"mode": args.log_mode}],
        )
        conf = toy.write_config(cfg, out / "nequip.yaml")
        shutil.rmtree(run, ignore_errors=True)
        toy.nequip_train(conf, run, threads=args.threads, timeout=6 * 3600)
    times["train_s"] = time.perf_counter() - t0
    print(f"[is2rs] NequIP trained ({times['train_s']:.0f} s)", flush=True)

    # 3. LTAU estimator --------------------------------------------------------------------
    est_dir = out / "estimator"
    t0 = time.perf_counter()
    if not (est_dir / "manifest.json").exists():
        fit_from_runs([run], run / "last.ckpt", est_dir, k=10, progress=False)
    times["fit_s"] = time.perf_counter() - t0

    # 4. campaign: serial and dask -----------------------------------------------------------
    systems = load_systems(bench, splits=list(VAL_SPLITS))
    factory = functools.partial(load_calculator, model=str(run / "last.ckpt"),
                                estimator=str(est_dir))
    settings = RelaxSettings(fmax=0.05, steps=args.steps)
    serial = None
    if not args.skip_serial:
        t0 = time.perf_counter()
        serial = run_campaign(systems, factory, out / "campaign_serial", settings, n_workers=0,
                              resume=False, progress=False)
        times["campaign_serial_s"] = time.perf_counter() - t0
        print(f"[is2rs] serial campaign ({times['campaign_serial_s']:.0f} s)", flush=True)
    t0 = time.perf_counter()
    dask = run_campaign(systems, factory, out / "campaign_dask", settings,
                        n_workers=args.workers, resume=False, progress=False)
    times[f"campaign_dask{args.workers}_s"] = time.perf_counter() - t0
    print(f"[is2rs] dask campaign ({times[f'campaign_dask{args.workers}_s']:.0f} s)", flush=True)
    agree = None
    if serial is not None:
        d_rmsd = [abs(a["rmsd"] - b["rmsd"]) for a, b in zip(serial, dask, strict=True)
                  if a["status"] == b["status"] == "ok"]
        agree = {
            "same_n_steps": all(a.get("n_steps") == b.get("n_steps")
                                for a, b in zip(serial, dask, strict=True)),
            "max_abs_rmsd_diff": max(d_rmsd) if d_rmsd else None,
        }

    # 5. analysis --------------------------------------------------------------------------
    report = analysis.write_report(out, dask, rmsd_threshold=0.5)
    line = {
        "bench": "is2rs",
        "quick": args.quick,
        "n_train_systems": args.n_train,
        "n_train_frames": n_frames,
        "n_val_per_split": args.n_val,
        "epochs": args.epochs,
        "threads_serial": args.threads,
        "dask_workers": args.workers,
        "n_errors": report["n_errors"],
        "splits": {},
        "serial_vs_dask": agree,
        **{k: round(v, 1) for k, v in times.items()},
    }
    for name, e in report["splits"].items():
        line["splits"][name] = {
            "n": e.get("n_ok"),
            "spearman_uq_max_rmsd": _r(e.get("spearman", {}).get("uq_max")),
            "spearman_uq_final_rmsd": _r(e.get("spearman", {}).get("uq_final")),
            "spearman_uq_mean_rmsd": _r(e.get("spearman", {}).get("uq_mean")),
            "auroc_uq_max_rmsd>0.5": _r(e.get("auroc", {}).get("uq_max")),
            "auroc_uq_final_rmsd>0.5": _r(e.get("auroc", {}).get("uq_final")),
            "adwt": _r(e.get("adwt")),
            "rmsd_mean": _r(e.get("rmsd_mean")),
            "failure_rate": _r(e.get("failure_rate")),
            "uq_to_rmsd_mae": _r((e.get("uq_to_rmsd") or {}).get("mae")),
            "baseline_mae": _r((e.get("uq_to_rmsd") or {}).get("baseline_mae")),
        }
    print(json.dumps(line))
    return 0


def _r(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(x, 3)


if __name__ == "__main__":
    sys.exit(main())
