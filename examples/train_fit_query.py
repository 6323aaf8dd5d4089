"""Train -> fit -> query: LTAU uncertainty for a NequIP model on EMT toy data.

1. make EMT data (Cu bulk, Cu(111) + O/H adsorbate; energy, forces, stress),
2. train an ensemble of NequIP models with ``nequip-train`` and ``examples/nequip_emt.yaml``
   (the LTAU error-logging callback is enabled there), one seed per member,
3. fit the LTAU estimator (``ltau_md.integrations.nequip.fit_from_runs``, same as ``ltau-md fit``),
4. query it through the ASE calculator on validation structures and on out-of-distribution
   ones, comparing the predicted per-atom uncertainty with the true (EMT) force error.

Run from the repository root (takes ~2-5 minutes on 2 CPU cores with the defaults)::

    python examples/train_fit_query.py --workdir ltau_demo_emt --epochs 20 --members 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT

from ltau_md.integrations.nequip import fit_from_runs, load_calculator, toy

HERE = Path(__file__).resolve().parent


def _ood_structures(seed: int = 7) -> dict[str, object]:
    """Structures unlike the training data: strongly rattled bulk, compressed bulk, O2 on Cu."""
    from ase import Atoms
    from ase.build import add_adsorbate, bulk, fcc111

    rattled = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    rattled.rattle(0.3, seed=seed)
    compressed = bulk("Cu", "fcc", a=3.3, cubic=True).repeat((2, 1, 1))
    compressed.rattle(0.05, seed=seed)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0, periodic=True)
    add_adsorbate(slab, Atoms("O2", positions=[[0, 0, 0], [0, 0, 1.25]]), 1.8, "ontop")
    slab.info.pop("adsorbate_info", None)
    slab.pbc = True
    return {"bulk_rattled_0.3A": rattled, "bulk_compressed_8%": compressed, "slab_O2": slab}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="ltau_demo_emt")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=120)
    ap.add_argument("--n-val", type=int, default=30)
    args = ap.parse_args()

    work = Path(args.workdir).resolve()
    data = work / "data"
    train_xyz, val_xyz = toy.write_emt_dataset(data, n_train=args.n_train, n_val=args.n_val)
    print(f"data: {train_xyz} ({args.n_train} frames), {val_xyz} ({args.n_val} frames)")

    runs = []
    for m in range(args.members):
        run = work / f"run_seed{m + 1}"
        print(f"training member {m} (seed {m + 1}) -> {run}")
        toy.nequip_train(HERE / "nequip_emt.yaml", run,
                         [f"data_dir={data}", f"seed={m + 1}",
                          f"trainer.max_epochs={args.epochs}"])
        runs.append(run)

    est_dir = work / "ltau_estimator"
    est = fit_from_runs(runs, runs[0] / "last.ckpt", est_dir, k=10)
    print(f"estimator: {est_dir} ({est.n_train_} training atoms, {est.dim_}-dim descriptors, "
          f"{est.summary_.n_members} members, atol = {est.atol_:.3f} eV/A)")

    from ase.io import read


    calc = load_calculator(runs[0] / "last.ckpt", est_dir)
    queries = {f"val_{i}": a for i, a in enumerate(read(val_xyz, ":")[:5])}
    queries.update(_ood_structures())
    print(f"\n{'structure':22s} {'mean unc':>9s} {'max unc':>8s} {'pred err':>9s} "
          f"{'true err':>9s}   (errors: mean |F_EMT - F_NequIP| per atom, eV/A)")
    rows = []
    for name, atoms in queries.items():
        ref = atoms.copy()
        ref.calc = EMT()
        f_ref = ref.get_forces()
        a = atoms.copy()
        a.calc = calc
        f = a.get_forces()
        unc = calc.results["uncertainty"]
        true_err = np.linalg.norm(f - f_ref, axis=1)
        rows.append({"structure": name, "uncertainty:mean": float(unc.mean()),
                     "uncertainty:max": float(unc.max()),
                     "mean_predicted_error": float(calc.results["predicted_error"].mean()),
                     "mean_true_error": float(true_err.mean())})
        print(f"{name:22s} {unc.mean():9.3f} {unc.max():8.3f} "
              f"{calc.results['predicted_error'].mean():9.3f} {true_err.mean():9.3f}")
    (work / "queries.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {work / 'queries.json'}")


if __name__ == "__main__":
    main()
