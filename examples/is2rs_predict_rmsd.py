"""Predict how far a NequIP relaxation lands from the reference one, from LTAU uncertainty.

An OC20-style IS2RS study in miniature (EMT plays DFT):

1. generate adsorbate+slab systems with reference EMT relaxations and OC20-like splits;
2. train a tiny NequIP on frames along the training relaxations, logging per-atom force errors;
3. fit the LTAU estimator;
4. relax every validation system with NequIP + LTAU (on a 2-worker dask LocalCluster) and
   compare with the reference relaxed structure (RMSD, ADwT);
5. relate the uncertainty along each relaxation to its RMSD (Spearman, AUROC, a map
   uncertainty -> expected RMSD fitted on val_id), and plot it.

    python examples/is2rs_predict_rmsd.py --out ltau_demo/is2rs     # a few minutes on 2 cores

The same campaign from the command line, once a model and an estimator exist:

    ltau-md is2rs-generate --out bench --n-train 40 --n-val 8
    ltau-md is2rs --model run/last.ckpt --estimator est --systems bench --out campaign
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def main() -> None:
    p = argparse.ArgumentParser(description="IS2RS: LTAU uncertainty predicts relaxation RMSD")
    p.add_argument("--out", default="ltau_demo/is2rs")
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-val", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    from ltau_md.integrations.nequip import fit_from_runs, load_calculator, toy
    from ltau_md.workflows.is2rs import generate_benchmark, run_is2rs
    from ltau_md.workflows.is2rs.runner import summary_line

    out = Path(args.out).resolve()
    bench = out / "benchmark"
    if not bench.exists():
        generate_benchmark(bench, seed=0, n_train=args.n_train, n_val=args.n_val,
                           n_workers=args.workers)

    run = out / "nequip_run"
    if not (run / "last.ckpt").exists():
        cfg = toy.tiny_config(bench / "train" / "frames.extxyz",
                              bench / "val_id" / "frames.extxyz", type_names=ELEMENTS,
                              max_epochs=args.epochs, num_features=16, batch_size=8)
        toy.nequip_train(toy.write_config(cfg, out / "nequip.yaml"), run, threads=2)
    est = out / "estimator"
    if not (est / "manifest.json").exists():
        fit_from_runs([run], run / "last.ckpt", est, k=10)

    # the calculator factory must be picklable: each dask worker builds its own calculator
    factory = functools.partial(load_calculator, model=str(run / "last.ckpt"),
                                estimator=str(est))
    report = run_is2rs(bench, factory, out / "campaign",
                       splits=["val_id", "val_ood_ads", "val_ood_cat", "val_ood_both"],
                       n_workers=args.workers, steps=150)
    for split, row in summary_line(report).items():
        print(f"{split:14s} {json.dumps(row)}")
    print(f"figure: {out / 'campaign' / 'uq_vs_rmsd.png'}")


if __name__ == "__main__":
    main()
