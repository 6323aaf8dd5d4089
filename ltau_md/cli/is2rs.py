"""``ltau-md is2rs``: an IS2RS campaign relating the LTAU uncertainty to relaxation quality."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltau_md.cli._common import (
    add_model_args,
    add_progress_arg,
    calculator_factory,
    given,
    library_default,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = [
    "EXIT_INCOMPLETE",
    "NAME",
    "register",
    "run",
]

NAME = "is2rs"


def register(sub: argparse._SubParsersAction) -> None:
    from ltau_md.workflows.is2rs.runner import RelaxSettings
    from ltau_md.workflows.simulate import OPTIMIZERS

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
    p.add_argument("--fmax", type=positive_float, default=None,
                   help="force threshold, eV/A, > 0 (default "
                   f"{library_default(RelaxSettings, 'fmax')})")
    p.add_argument("--steps", type=positive_int, default=300,
                   help="maximum optimizer steps, >= 1 (default 300)")
    p.add_argument("--optimizer", default="BFGS", choices=OPTIMIZERS,
                   help="ASE optimizer (default BFGS)")
    p.add_argument("--rmsd-threshold", type=positive_float, default=0.5,
                   help="RMSD (A, > 0) above which a relaxation counts as failed (AUROC; "
                   "default 0.5)")
    p.add_argument("--reference", default="ase.calculators.emt:EMT", metavar="MODULE:CLASS",
                   help="import path of the reference ASE calculator that scores the end "
                   "points (energy above the lowest minimum, FbT, basin; default "
                   "ase.calculators.emt:EMT)")
    p.add_argument("--error-stride", type=positive_int, default=1, metavar="K",
                   help="the reference's forces along each model relaxation (the true force "
                   "error) at every K-th step and the last, >= 1 (default 1: every step; a "
                   "universal-potential reference costs one call per evaluated step)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="systems per dask task (default: chosen from the campaign size)")
    p.add_argument("--give-up-after", type=positive_float, default=None, metavar="S",
                   help="seconds without any worker after which the campaign stops (the "
                   "remaining systems not done: exit 3, rerun to resume); a note on stderr "
                   "says every minute that there are none (default: wait)")
    p.add_argument("--worker-threads", type=positive_int, default=1,
                   help="torch/FAISS threads per dask worker (default 1)")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute finished systems (default: resume, skipping them)")
    add_progress_arg(p)
    p.set_defaults(func=run)


#: exit status when some systems are not done (lost or failed); a rerun resumes them
EXIT_INCOMPLETE = 3


def run(args: argparse.Namespace) -> int:
    """Run the campaign; exit 0 when every system is done, 3 (with "N of M systems not done -
    rerun to resume" on stderr) when some were lost or failed."""
    import sys

    from ltau_md.core.exceptions import ArtifactError
    from ltau_md.workflows.is2rs.runner import CampaignIncompleteError, run_is2rs

    for what, path in (("model", args.model), ("estimator", args.estimator)):
        if not Path(path).exists():
            raise ArtifactError(f"{what} {path} does not exist")
    out = Path(args.out)
    try:
        run_is2rs(
            args.systems, calculator_factory(args), out, splits=args.splits, limit=args.limit,
            steps=args.steps, optimizer=args.optimizer, reference=args.reference,
            error_stride=args.error_stride, n_workers=args.workers, scheduler=args.scheduler,
            resume=not args.no_resume,
            rmsd_threshold=args.rmsd_threshold, progress=not args.no_progress,
            batch_size=args.batch_size, worker_threads=args.worker_threads,
            give_up_after=args.give_up_after, **given(args, "fmax"),
        )
    except CampaignIncompleteError as exc:
        _print_report(out)
        print(f"ltau-md is2rs: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    _print_report(out)
    return 0


def _print_report(out: Path) -> None:
    from ltau_md.workflows.is2rs.runner import summary_line

    report = json.loads((out / "report.json").read_text())
    print(json.dumps(summary_line(report)))
    print(f"report: {out / 'report.json'}, figure: {out / 'uq_vs_rmsd.png'}")
