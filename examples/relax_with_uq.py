"""Relax structures with a NequIP model and log per-step, per-atom LTAU uncertainty.

Needs a model and a fitted estimator, e.g. from `ltau-md demo --out ltau_demo`:

    python examples/relax_with_uq.py --model ltau_demo/runs/member0/last.ckpt \
        --estimator ltau_demo/estimator --structures ltau_demo/data/val_id/initial.extxyz
"""

from __future__ import annotations

import argparse

from ase.io import read
from ase.optimize import BFGS

from ltau_md.core.observers import UQMonitor
from ltau_md.integrations.nequip import load_calculator

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="ltau_demo/runs/member0/last.ckpt")
ap.add_argument("--estimator", default="ltau_demo/estimator")
ap.add_argument("--structures", default="ltau_demo/data/val_id/initial.extxyz")
ap.add_argument("--out", default="relax_with_uq")
args = ap.parse_args()

calc = load_calculator(model=args.model, estimator=args.estimator)
for i, atoms in enumerate(read(args.structures, index=":3")):
    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    monitor = UQMonitor(opt, out_dir=f"{args.out}/{i:03d}")  # steps.jsonl, trajectory.extxyz
    opt.attach(monitor, interval=1)
    monitor.run(steps=200, fmax=0.05)
    s = monitor.summary()
    print(f"structure {i}: uncertainty initial {s['initial']:.3f}, max {s['max']:.3f} "
          f"(step {s['max_step']}), mean {s['mean']:.3f}, final {s['final']:.3f}")
    worst = atoms.calc.results["uncertainty"].argmax()
    print(f"  least trusted atom: #{worst} {atoms[worst].symbol}, predicted force error "
          f"{atoms.calc.results['predicted_error'][worst]:.3f} eV/A")
