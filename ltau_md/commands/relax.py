"""``ltau-md relax``: relax structures with per-step uncertainty logging."""

from __future__ import annotations

import argparse

from ._common import add_model_args, add_policy_args, add_progress_arg, calculator_factory, policies

NAME = "relax"


def register(sub: argparse._SubParsersAction) -> None:
    from ..simulate import OPTIMIZERS

    p = sub.add_parser(NAME, help="relax structures with per-step uncertainty logging",
                       description="Relax every structure in STRUCTURES with the LTAU "
                       "calculator; writes per-structure logs/trajectories and a summary table "
                       "(initial/max/mean/final uncertainty, which runs from 0 to 1).")
    p.add_argument("structures", help="structure file (all frames are relaxed)")
    add_model_args(p)
    p.add_argument("--fmax", type=float, default=0.05,
                   help="convergence: max force, eV/A (default 0.05)")
    p.add_argument("--steps", type=int, default=200, help="maximum optimizer steps (default 200)")
    p.add_argument("--optimizer", default="BFGS", choices=OPTIMIZERS,
                   help="ASE optimizer (default BFGS)")
    add_policy_args(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._io import read_structures
    from ..simulate import relax_many, summary_table

    frames = read_structures(args.structures)
    rows = relax_many(frames, calculator_factory(args), args.out, fmax=args.fmax,
                      steps=args.steps, optimizer=args.optimizer,
                      policies=lambda: policies(args), progress=not args.no_progress,
                      overwrite=args.overwrite)
    print(summary_table(rows))
    print(f"wrote {args.out}/summary.csv, summary.json and one folder per structure")
    return 0
