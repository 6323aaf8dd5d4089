"""Run MD and halt it when the model leaves its training domain; optionally resample.

    python examples/md_halt_on_uncertainty.py --model ltau_demo/runs/member0/last.ckpt \
        --estimator ltau_demo/estimator --start ltau_demo/data/val_id/relaxed.extxyz
"""

from __future__ import annotations

import argparse

from ase import units
from ase.calculators.emt import EMT
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ltau_md.core.observers import Threshold, UQMonitor
from ltau_md.integrations.nequip import load_calculator

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="ltau_demo/runs/member0/last.ckpt")
ap.add_argument("--estimator", default="ltau_demo/estimator")
ap.add_argument("--start", default="ltau_demo/data/val_id/relaxed.extxyz")
ap.add_argument("--temperature", type=float, default=2000.0)
ap.add_argument("--stop-above", type=float, default=0.5)
ap.add_argument("--resample-above", type=float, default=0.4)
ap.add_argument("--out", default="md_halt")
args = ap.parse_args()

atoms = read(args.start, index=0)
atoms.calc = load_calculator(model=args.model, estimator=args.estimator)
MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, force_temp=True)
dyn = Langevin(atoms, 2 * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs,
               fixcm=False)
policies = [
    # write configurations above this to candidates.extxyz, labelled on the spot by EMT
    Threshold("resample", above=args.resample_above, hysteresis=0.05),
    # halt after 3 consecutive steps above this
    Threshold("stop", above=args.stop_above, patience=3,
              callback=lambda ev, mon: print(f"halting at step {ev.step}: {ev.reason}")),
]
monitor = UQMonitor(dyn, policies, out_dir=args.out, oracle=EMT(), max_force=50.0)
dyn.attach(monitor, interval=1)
monitor.run(steps=500)
print(monitor.summary())
print(f"files: {args.out}/steps.jsonl, trajectory.extxyz, candidates.extxyz, labelled.extxyz")
