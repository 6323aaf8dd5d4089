"""Run MD and halt it when the model leaves its training domain; resample on the way.

Both policies watch the default alarm (``DEFAULT_ALARM``), with thresholds set as in-domain
alarm rates from the estimator's held-out frames (the demo's estimator holds them; else fit
them with ``ltau-md fit --validation``): frames above the 5 % threshold are written and
labelled by EMT, and the run halts after 2 consecutive steps above the 1 % threshold.

    python examples/md_halt_on_uncertainty.py --model ltau_demo/runs/member0/last.ckpt \
        --estimator ltau_demo/estimator --start ltau_demo/data/val_id/relaxed.extxyz
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import units
from ase.calculators.emt import EMT
from ase.io import read
from ase.md.langevin import Langevin

from ltau_md.core.calibration import DEFAULT_ALARM
from ltau_md.core.observers import Threshold, UQMonitor
from ltau_md.core.structures import thermalize
from ltau_md.integrations.nequip import load_calculator

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="ltau_demo/runs/member0/last.ckpt")
ap.add_argument("--estimator", default="ltau_demo/estimator")
ap.add_argument("--start", default="ltau_demo/data/val_id/relaxed.extxyz")
ap.add_argument("--temperature", type=float, default=2000.0)
ap.add_argument("--stop-rate", type=float, default=0.01,
                help="in-domain alarm rate of the stop threshold")
ap.add_argument("--resample-rate", type=float, default=0.05,
                help="in-domain alarm rate of the resampling threshold")
ap.add_argument("--seed", type=int, default=0, help="seed of the initial velocities")
ap.add_argument("--out", default="md_halt")
args = ap.parse_args()

atoms = read(args.start, index=0)
atoms.calc = load_calculator(model=args.model, estimator=args.estimator)
thermalize(atoms, args.temperature, np.random.default_rng(args.seed))
dyn = Langevin(atoms, 2 * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs,
               fixcm=False)
signal, _, on = DEFAULT_ALARM.partition(":")
policies = [
    # write configurations above this to candidates.extxyz, labelled on the spot by EMT
    Threshold("resample", signal=signal, on=on, alarm_rate=args.resample_rate),
    # halt after 2 consecutive steps above this
    Threshold("stop", signal=signal, on=on, alarm_rate=args.stop_rate, patience=2,
              callback=lambda ev, mon: print(f"halting at step {ev.step}: {ev.reason}")),
]
monitor = UQMonitor(dyn, policies, out_dir=args.out, oracle=EMT(), max_force=50.0)
dyn.attach(monitor, interval=1)
monitor.run(steps=500)
print(monitor.summary())
print(f"files: {args.out}/steps.jsonl, trajectory.extxyz, candidates.extxyz, labelled.extxyz")
