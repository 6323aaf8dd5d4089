"""The ``ltau-md`` command line. Each subcommand's work lives in its concept's module; this file
only parses arguments and imports lazily (so ``ltau-md --help`` is fast)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def _window(text: str) -> tuple[int | None, int | None]:
    """Parse 'START:STOP' (either part may be empty) into a slice over logged epochs."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"window must look like START:STOP, got {text!r}")
    a, b = text.split(":", 1)
    try:
        return (int(a) if a else None, int(b) if b else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"window must hold integers, got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltau-md",
        description="Per-atom LTAU uncertainty for NequIP relaxations and molecular dynamics.",
    )
    p.add_argument("--version", action="version", version=f"ltau-md {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # Subcommands register here (keep one block per subcommand, alphabetical).
    # calibrate: ltau_md.calibration (import-light; the handler loads torch/nequip)
    from .calibration import add_calibrate_arguments, calibrate_cli

    cal_p = sub.add_parser("calibrate", help="fit the tolerance scale s on labelled structures",
                           description="Fit the LTAU tolerance scale s (and per-group s) on a "
                           "calibration split of labelled structures, minimising the "
                           "miscalibration area; saves the calibrated estimator.")
    add_calibrate_arguments(cal_p)
    cal_p.set_defaults(func=calibrate_cli)

    # fit: ltau_md.nequip.fit (argument setup is import-light; the handler loads torch/nequip)
    from .nequip.fit import add_fit_arguments, fit_cli

    fit_p = sub.add_parser("fit", help="fit an LTAU estimator from nequip-train runs",
                           description="Fit an LTAU estimator from the error logs of "
                           "nequip-train runs (one per ensemble member) and the deployed "
                           "model's descriptors.")
    add_fit_arguments(fit_p, window_type=_window)
    fit_p.set_defaults(func=fit_cli)

    # demo: ltau_md.demo.run_demo
    demo = sub.add_parser("demo", help="the whole journey on built-in EMT data (<= 10 min)",
                          description="Generate EMT data, train a small NequIP ensemble with "
                          "error logging, fit the estimator, relax, run MD that halts and MD "
                          "that resamples, run a small IS2RS campaign, write report.html.")
    demo.add_argument("--out", default="ltau_demo", help="output directory (replaced)")
    demo.add_argument("--quick", action="store_true", help="reduced sizes (CI smoke run)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    # md: ltau_md.simulate.run_md
    md = sub.add_parser("md", help="Langevin MD with per-step uncertainty and thresholds",
                        description="Run NVT Langevin MD from START (first frame) with the "
                        "LTAU calculator; stop or resample when the max atom uncertainty "
                        "crosses a threshold.")
    md.add_argument("start", help="structure file (first frame is used)")
    _model_args(md)
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    md.add_argument("--steps", type=int, default=1000)
    md.add_argument("--friction", type=float, default=0.01, help="1/fs (default 0.01)")
    _policy_args(md)
    md.add_argument("--oracle", choices=["emt"], help="label resampled frames on the spot")
    md.add_argument("--rewind", action="store_true",
                    help="on resample, go back to the last trusted snapshot, new velocities")
    md.add_argument("--max-retries", type=int, default=3)
    md.add_argument("--max-force", type=float, default=50.0,
                    help="stop when any |F| exceeds this, eV/A (default 50)")
    md.add_argument("--seed", type=int, default=0)
    md.set_defaults(func=_md)

    # relax: ltau_md.simulate.relax_many
    rx = sub.add_parser("relax", help="relax structures with per-step uncertainty logging",
                        description="Relax every structure in STRUCTURES with the LTAU "
                        "calculator; writes per-structure logs/trajectories and a summary "
                        "table (initial/max/mean/final uncertainty).")
    rx.add_argument("structures", help="structure file (all frames are relaxed)")
    _model_args(rx)
    rx.add_argument("--fmax", type=float, default=0.05, help="eV/A (default 0.05)")
    rx.add_argument("--steps", type=int, default=200)
    rx.add_argument("--optimizer", default="BFGS",
                    choices=["BFGS", "FIRE", "LBFGS", "BFGSLineSearch", "MDMin"])
    _policy_args(rx)
    rx.set_defaults(func=_relax)
    # is2rs, is2rs-generate: ltau_md.is2rs.commands (import-light; handlers import lazily)
    from .is2rs.commands import add_parsers as add_is2rs_parsers

    add_is2rs_parsers(sub)
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="NequIP checkpoint (.ckpt) or package file")
    p.add_argument("--estimator", required=True, help="estimator directory from `ltau-md fit`")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--s", type=float, default=None, help="tolerance scaling (default: fitted)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stop-above", type=float, help="stop when max uncertainty exceeds this")
    p.add_argument("--resample-above", type=float, help="save frames above this for relabelling")
    p.add_argument("--warn-above", type=float, help="record a warning above this")
    p.add_argument("--patience", type=int, default=1, help="consecutive steps before firing")
    p.add_argument("--hysteresis", type=float, default=0.0,
                   help="re-arm once the value is this far below the threshold")


def _policies(args: argparse.Namespace) -> list:
    from .simulate import policies_from_args

    return policies_from_args(args.stop_above, args.resample_above, args.warn_above,
                              args.patience, args.hysteresis)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    return 0


def _relax(args: argparse.Namespace) -> int:
    from functools import partial

    from ._io import read_structures
    from .calculator import LTAUCalculator
    from .simulate import relax_many, summary_table

    frames = read_structures(args.structures)
    factory = partial(LTAUCalculator.from_files, model=args.model, estimator=args.estimator,
                      device=args.device, s=args.s)
    rows = relax_many(frames, factory, args.out, fmax=args.fmax, steps=args.steps,
                      optimizer=args.optimizer, policies=lambda: _policies(args),
                      progress=not args.no_progress)
    print(summary_table(rows))
    print(f"wrote {args.out}/summary.csv, summary.json and one folder per structure")
    return 0


def _md(args: argparse.Namespace) -> int:
    from ._io import read_structures
    from .calculator import LTAUCalculator
    from .simulate import oracle_from_name, run_md

    atoms = read_structures(args.start)[0]
    calc = LTAUCalculator.from_files(model=args.model, estimator=args.estimator,
                                     device=args.device, s=args.s)
    s = run_md(atoms, calc, args.out, temperature_K=args.temperature,
               timestep_fs=args.timestep, steps=args.steps, friction=args.friction,
               policies=_policies(args), oracle=oracle_from_name(args.oracle),
               rewind=args.rewind, max_retries=args.max_retries, max_force=args.max_force,
               seed=args.seed, progress=not args.no_progress)
    stop = s["stopped"]
    print(f"MD: {s['n_observed']} steps observed; max uncertainty {s.get('max')} at step "
          f"{s.get('max_step')}; " + (f"stopped at step {stop['step']}: {stop['reason']}"
                                      if stop else "ran to the end"))
    print(f"wrote {args.out}/ (steps.jsonl, trajectory.extxyz, events.json, summary.json)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .exceptions import LTAUError

    try:
        return int(args.func(args) or 0)
    except (LTAUError, FileNotFoundError, FileExistsError) as exc:
        print(f"ltau-md {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltau-md {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
