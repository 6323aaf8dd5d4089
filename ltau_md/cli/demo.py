"""``ltau-md demo``: the whole journey on built-in EMT data."""

from __future__ import annotations

import argparse

from ltau_md.cli._common import add_progress_arg, non_negative_int

__all__ = [
    "NAME",
    "register",
    "run",
]

NAME = "demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="the whole journey on built-in EMT data (~3 min, 2 quiet cores)",
                       description="Generate EMT data, train a small NequIP ensemble with "
                       "error logging, fit the estimator, relax, run MD that halts and MD "
                       "that resamples, run a small IS2RS campaign, write report.html.")
    p.add_argument("--out", default="ltau_demo",
                   help="output directory, must be new or empty (default ltau_demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo output in --out (default: refuse)")
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes, a CI smoke run (default: full sizes)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="random seed, >= 0 (default 0)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ltau_md.workflows.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
             overwrite=args.overwrite)
    return 0
