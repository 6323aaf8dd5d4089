"""``ltau-md md``: Langevin MD with per-step uncertainty and thresholds."""

from __future__ import annotations

import argparse

from ltau_md.cli._common import (
    STATUS_EPILOG,
    add_model_args,
    add_progress_arg,
    exit_code,
    given,
    library_default,
    load_inputs,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from ltau_md.cli._policies import add_policy_args, check_policy_args, policy_factory
from ltau_md.core.exceptions import InvalidParameterError

__all__ = [
    "NAME",
    "check_options",
    "register",
    "run",
]

NAME = "md"


def register(sub: argparse._SubParsersAction) -> None:
    from ltau_md.workflows.simulate import run_md

    def default(name: str):
        return library_default(run_md, name)

    p = sub.add_parser(NAME, help="Langevin MD with per-step uncertainty and thresholds",
                       description="Run NVT Langevin MD from START (frame --frame) with the "
                       "LTAU calculator; stop or resample when the max atom uncertainty "
                       "(0..1) crosses a threshold. The start structure, model, estimator "
                       "and options are checked before anything is written.",
                       epilog=STATUS_EPILOG)
    p.add_argument("start", help="structure file, any ASE-readable format, with ASE's "
                   "index syntax if wanted (start.xyz@-1); see --frame")
    p.add_argument("--frame", type=int, default=None, metavar="N",
                   help="frame of START to start from, negative counts from the end "
                   "(default 0; a note is printed when START holds several frames)")
    add_model_args(p)
    p.add_argument("--temperature", type=non_negative_float, default=None,
                   help=f"K, >= 0 (default {default('temperature_K'):g})")
    p.add_argument("--timestep", type=positive_float, default=None,
                   help=f"fs, > 0 (default {default('timestep_fs'):g})")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"MD steps, >= 1 (default {default('steps')})")
    p.add_argument("--friction", type=non_negative_float, default=None,
                   help=f"Langevin friction, 1/fs, >= 0 (default {default('friction'):g})")
    add_policy_args(p, NAME)
    p.add_argument("--oracle", choices=["emt"],
                   help="label resampled frames on the spot; needs --resample-above or "
                   "--resample-rate (default: none)")
    p.add_argument("--rewind", action="store_true",
                   help="on resample, go back to the last trusted snapshot with new "
                   "velocities; needs --resample-above or --resample-rate (default: off)")
    p.add_argument("--max-retries", type=non_negative_int, default=None,
                   help=f"rewinds allowed before the run stops, >= 0 (default "
                   f"{default('max_retries')})")
    p.add_argument("--max-force", type=positive_float, default=None,
                   help=f"stop when any |F| exceeds this, eV/A, > 0 (default "
                   f"{default('max_force'):g})")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help=f"velocity seed, >= 0 (default {default('seed')})")
    add_progress_arg(p)
    p.set_defaults(func=run)


def check_options(args: argparse.Namespace) -> None:
    """InvalidParameterError for options that would silently do nothing."""
    if args.resample_above is None and args.resample_rate is None:
        for flag, given in (("--rewind", args.rewind), ("--oracle", args.oracle)):
            if given:
                raise InvalidParameterError(
                    f"{flag} acts on resampled frames but no --resample-above threshold is "
                    "given, so it would never act: add --resample-above U (or "
                    "--resample-rate A)")


def run(args: argparse.Namespace) -> int:
    """Run MD, print one line; exit status from the run status (see STATUS_EPILOG)."""
    from ltau_md.workflows.simulate import MD_KIND, oracle_from_name, run_md

    check_policy_args(args)
    check_options(args)
    (atoms,), calc = load_inputs(args, args.start, MD_KIND, frame=args.frame or 0,
                                 note_frames=args.frame is None)
    given_opts = given(args, "steps", "friction", "max_retries", "max_force", "seed")
    given_opts.update({name: v for name, v in (("temperature_K", args.temperature),
                                               ("timestep_fs", args.timestep)) if v is not None})
    s = run_md(atoms, calc, args.out,
               policies=policy_factory(args, calc.estimator, NAME)(),
               oracle=oracle_from_name(args.oracle), rewind=args.rewind,
               progress=not args.no_progress, overwrite=args.overwrite, **given_opts)
    stop = s["stopped"]
    print(f"MD {s['status']}: {s['n_observed']} steps observed; max uncertainty {s.get('max')} "
          f"at step {s.get('max_step')}; " + (f"stopped at step {stop['step']}: "
                                              f"{stop['reason']}" if stop else "ran to the end"))
    print(f"wrote {args.out}/ (steps.jsonl, trajectory.extxyz, events.json, summary.json)")
    return exit_code([s["status"]])
