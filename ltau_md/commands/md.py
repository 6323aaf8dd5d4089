"""``ltau-md md``: Langevin MD with per-step uncertainty and thresholds."""

from __future__ import annotations

import argparse

from ._common import add_model_args, add_policy_args, add_progress_arg, calculator_factory, policies

NAME = "md"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="Langevin MD with per-step uncertainty and thresholds",
                       description="Run NVT Langevin MD from START (first frame) with the "
                       "LTAU calculator; stop or resample when the max atom uncertainty "
                       "(0..1) crosses a threshold.")
    p.add_argument("start", help="structure file (first frame is used)")
    add_model_args(p)
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps (default 1000)")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs (default 0.01)")
    add_policy_args(p)
    p.add_argument("--oracle", choices=["emt"], help="label resampled frames on the spot")
    p.add_argument("--rewind", action="store_true",
                   help="on resample, go back to the last trusted snapshot, new velocities")
    p.add_argument("--max-retries", type=int, default=3,
                   help="rewinds allowed before the run stops (default 3)")
    p.add_argument("--max-force", type=float, default=50.0,
                   help="stop when any |F| exceeds this, eV/A (default 50)")
    p.add_argument("--seed", type=int, default=0, help="velocity seed (default 0)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._io import read_structures
    from ..simulate import oracle_from_name, run_md

    atoms = read_structures(args.start)[0]
    s = run_md(atoms, calculator_factory(args)(), args.out, temperature_K=args.temperature,
               timestep_fs=args.timestep, steps=args.steps, friction=args.friction,
               policies=policies(args), oracle=oracle_from_name(args.oracle),
               rewind=args.rewind, max_retries=args.max_retries, max_force=args.max_force,
               seed=args.seed, progress=not args.no_progress, overwrite=args.overwrite)
    stop = s["stopped"]
    print(f"MD: {s['n_observed']} steps observed; max uncertainty {s.get('max')} at step "
          f"{s.get('max_step')}; " + (f"stopped at step {stop['step']}: {stop['reason']}"
                                      if stop else "ran to the end"))
    print(f"wrote {args.out}/ (steps.jsonl, trajectory.extxyz, events.json, summary.json)")
    return 0
