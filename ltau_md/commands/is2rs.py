"""``ltau-md is2rs``: an IS2RS campaign relating the LTAU uncertainty to relaxation quality."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import (
    add_model_args,
    add_progress_arg,
    calculator_factory,
    non_negative_int,
    positive_float,
    positive_int,
)

NAME = "is2rs"


def register(sub: argparse._SubParsersAction) -> None:
    from ..simulate import OPTIMIZERS

    p = sub.add_parser(
        NAME, help="IS2RS campaign: relax systems with the model, relate uncertainty to RMSD",
        description="Relax each initial structure with the model calculator (LTAU "
        "uncertainty), compare with the reference-relaxed structure (RMSD, ADwT) and relate "
        "the uncertainty to the RMSD. Writes OUT/results/<sid>.json, OUT/report.json and "
        "OUT/uq_vs_rmsd.png; reruns resume.")
    add_model_args(p, out=False)
    p.add_argument("--systems", required=True,
                   help="directory with initial.*/relaxed.* (or split subdirectories), or an "
                   "extxyz file with per-atom 'pos_relaxed' (required)")
    p.add_argument("--out", required=True,
                   help="campaign directory: new, empty, or an earlier campaign to resume "
                   "(required)")
    p.add_argument("--splits", nargs="+", default=None, help="only these splits (default all)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="first N systems of each split (default all)")
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler address, e.g. tcp://host:8786 from dask-jobqueue "
                   "(default: a LocalCluster of --workers)")
    p.add_argument("--workers", type=non_negative_int, default=2,
                   help="LocalCluster worker processes when no --scheduler (0 = serial; "
                   "default 2)")
    p.add_argument("--fmax", type=positive_float, default=0.05,
                   help="force threshold, eV/A, > 0 (default 0.05)")
    p.add_argument("--steps", type=positive_int, default=300,
                   help="maximum optimizer steps, >= 1 (default 300)")
    p.add_argument("--optimizer", default="BFGS", choices=OPTIMIZERS,
                   help="ASE optimizer (default BFGS)")
    p.add_argument("--rmsd-threshold", type=positive_float, default=0.5,
                   help="RMSD (A, > 0) above which a relaxation counts as failed (AUROC; "
                   "default 0.5)")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute finished systems (default: resume, skipping them)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..exceptions import ArtifactError
    from ..is2rs.runner import run_is2rs, summary_line

    for what, path in (("model", args.model), ("estimator", args.estimator)):
        if not Path(path).exists():
            raise ArtifactError(f"{what} {path} does not exist")
    report = run_is2rs(
        args.systems, calculator_factory(args), args.out, splits=args.splits, limit=args.limit,
        fmax=args.fmax, steps=args.steps, optimizer=args.optimizer, n_workers=args.workers,
        scheduler=args.scheduler, resume=not args.no_resume,
        rmsd_threshold=args.rmsd_threshold, progress=not args.no_progress,
    )
    print(json.dumps(summary_line(report)))
    print(f"report: {Path(args.out) / 'report.json'}, figure: {Path(args.out) / 'uq_vs_rmsd.png'}")
    return 0
