"""IS2RS against real DFT: a NequIP model trained on universal-potential (CHGNet) labels of
the Xu-Kitchin chemistry, relaxed from displaced starts of the Xu-Kitchin DFT minima; does
its uncertainty track how far it lands from the DFT minimum?

Protocol
--------
1. ``is2rs-generate`` with the reference end to end (``--reference``, CHGNet by default) on
   the chemistry of the Xu & Kitchin (2014) set: the seven fcc metals (Pt, Ag, Ir, Au, Pd,
   Rh, Cu), pure, fcc(111) 2x2 with 4 layers (2 fixed), the eight atomic adsorbates (C, F,
   H, Cl, O, N, S, Br); ``--n-train`` training systems (``--frames`` frames each along the
   reference relaxations) and ``--n-val`` in-domain validation systems (``val_id``).
2. A tiny NequIP model (nequip-train, LTAU error logging) on the training frames; the LTAU
   estimator fitted from its error log.
3. The real-DFT split (:func:`ltau_md.workflows.is2rs.xu_kitchin.write_split`, 0.25 ML: 224
   systems, the adsorbate displaced 0.5-1.0 A sideways and 0.2-0.6 A up from the DFT
   minimum) and ``val_id``, relaxed with the model + LTAU (FIRE, fmax 0.05 eV/A, <= 1,000
   steps, the LTAU paper's protocol) on 2 dask workers; no reference scoring (RMSD to the
   given minimum: the DFT one for ``val_dft``, CHGNet's for ``val_id``).
4. The campaign report: per split RMSD, ADwT, failure rates (RMSD and mean distance > 0.5
   A), and the Spearman / AUROC of every uncertainty statistic with bootstrap intervals.

Usage::

    python benchmarks/is2rs_real_dft.py --xk XK --out OUT [--n-train 60] [--n-val 20]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METALS = ("Cu", "Rh", "Pd", "Ag", "Ir", "Pt", "Au")
ADSORBATES = ("H", "C", "N", "O", "F", "S", "Cl", "Br")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--xk", required=True, help="folder with the Xu-Kitchin JSON files")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", default="ltau_md.workflows.is2rs.universal:chgnet")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-val", type=int, default=20)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    from ltau_md.integrations.nequip import fit_from_runs, load_calculator, toy
    from ltau_md.workflows.is2rs import load_systems
    from ltau_md.workflows.is2rs import report as is2rs_report
    from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark
    from ltau_md.workflows.is2rs.runner import RelaxSettings, run_campaign
    from ltau_md.workflows.is2rs.xu_kitchin import write_split

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    bench = out / "benchmark"
    t0 = time.perf_counter()
    if not (bench / "manifest.json").exists():  # resumable: the generation cache
        cfg = GeneratorConfig(
            reference=args.reference, metals=METALS, facets=("fcc111",), ood_facets=(),
            layers={"fcc111": 4}, free_layers={"fcc111": 2}, alloy_fraction=0.0,
            ood_pairs=(), id_adsorbates=ADSORBATES, ood_adsorbates=("O",),
            frames_per_system=args.frames, val_frames_per_system=2)
        generate_benchmark(bench, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                           cfg=cfg, splits=("train", "val_id"), n_workers=args.workers,
                           progress=False)
    times["generate_s"] = time.perf_counter() - t0
    manifest = json.loads((bench / "manifest.json").read_text())
    print(f"[real_dft] generated ({times['generate_s']:.0f} s)", flush=True)

    run = out / "nequip_run"
    t0 = time.perf_counter()
    if not (run / "last.ckpt").exists():
        from ase.data import atomic_numbers

        names = tuple(sorted({*METALS, *ADSORBATES}, key=atomic_numbers.__getitem__))
        cfg = toy.tiny_config(bench / "train" / "frames.extxyz",
                              bench / "val_id" / "frames.extxyz", type_names=names,
                              seed=args.seed + 1, max_epochs=args.epochs,
                              num_features=args.features, num_layers=2, l_max=1, r_max=4.5,
                              batch_size=8, lr=0.01, lr_min=1e-4, loggers=[{"mode": "eval"}])
        toy.nequip_train(toy.write_config(cfg, out / "nequip.yaml"), run, threads=1,
                         timeout=6 * 3600)
    times["train_s"] = time.perf_counter() - t0
    print(f"[real_dft] trained ({times['train_s']:.0f} s)", flush=True)
    est = out / "estimator"
    if not (est / "manifest.json").exists():
        fit_from_runs([run], run / "last.ckpt", est, k=10, progress=False)

    split = out / "dft_split"
    if not split.exists():
        write_split(args.xk, split, seed=args.seed, coverages=("0.25",))
    systems = load_systems(split) + load_systems(bench, splits=["val_id"])
    factory = functools.partial(load_calculator, model=str(run / "last.ckpt"),
                                estimator=str(est))
    settings = RelaxSettings(fmax=0.05, steps=1000, optimizer="FIRE", reference=None)
    t0 = time.perf_counter()
    results = run_campaign(systems, factory, out / "campaign", settings,
                           n_workers=args.workers, progress=False)
    times["campaign_s"] = time.perf_counter() - t0
    report = is2rs_report.write_report(out / "campaign", results, rmsd_threshold=0.5,
                                       not_done=results.not_done, n_boot=args.n_boot)
    stats = ("uncertainty:max/initial", "uncertainty:max/final", "uncertainty:max/max",
             "uncertainty:max/mean", "novelty:max@tags=2/initial", "novelty:max@tags=2/final",
             "predicted_error:max/final", "n_ads", "ml_fmax_initial")
    # the generation's cost: CPU seconds of every system, kept beside the cached systems
    # (also for those a rerun took from the cache)
    cpu = [json.loads(f.read_text())["cpu_s"]
           for f in (out / "benchmark.cache").glob("*/*.cpu.json")]
    line = {"benchmark": "is2rs_real_dft", "reference": args.reference,
            "generation": {
                "reference_calls": sum(v["reference_calls"]
                                       for v in manifest["splits"].values()),
                "attempts": sum(v["attempts"] for v in manifest["splits"].values()),
                "systems": sum(v["n_systems"] for v in manifest["splits"].values()),
                "cpu_s_per_system": sum(cpu) / len(cpu) if cpu else None},
            "n_train_systems": manifest["splits"]["train"]["n_systems"],
            "n_train_frames": manifest["splits"]["train"]["n_frames"],
            "epochs": args.epochs, "features": args.features, "optimizer": "FIRE",
            "max_steps": 1000, "times_s": times, "counts": report["counts"], "splits": {}}
    for name in ("val_dft", "val_id"):
        e = report["splits"].get(name, {})
        line["splits"][name] = {
            k: e.get(k) for k in ("n", "n_ok", "n_converged", "adwt", "rmsd_mean",
                                  "rmsd_median", "failure_rates")}
        line["splits"][name]["spearman_rmsd"] = {
            st: e.get("spearman_ci", {}).get("rmsd", {}).get(st) for st in stats}
        line["splits"][name]["auroc_rmsd_fail"] = {
            st: e.get("auroc_ci", {}).get("rmsd", {}).get(st) for st in stats}
    print(json.dumps(line))
    record(__file__, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
