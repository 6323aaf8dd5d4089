"""``ltau-md is2rs`` and ``ltau-md is2rs-generate``: argument parsers and handlers."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..exceptions import LTAUError


def run_is2rs(
    systems: str | Path,
    calc_factory: Any,
    out: str | Path,
    *,
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    fmax: float = 0.05,
    steps: int = 300,
    optimizer: str = "BFGS",
    n_workers: int = 2,
    scheduler: str | None = None,
    resume: bool = True,
    rmsd_threshold: float = 0.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Load systems, run the campaign, write ``out/report.json`` + ``out/uq_vs_rmsd.png``.

    ``limit`` keeps the first ``limit`` systems of each split. Returns the report.
    """
    from .analysis import write_report
    from .data import load_systems
    from .runner import RelaxSettings, run_campaign

    loaded = load_systems(systems, list(splits) if splits else None)
    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for s in loaded:
            seen[s.split] = seen.get(s.split, 0) + 1
            if seen[s.split] <= limit:
                kept.append(s)
        loaded = kept
    results = run_campaign(
        loaded, calc_factory, out, RelaxSettings(fmax=fmax, steps=steps, optimizer=optimizer),
        n_workers=n_workers, scheduler=scheduler, resume=resume, progress=progress,
    )
    if results and all(r.get("status") != "ok" for r in results):
        raise LTAUError(
            f"all {len(results)} relaxations failed; first error: {results[0].get('error')}"
        )
    return write_report(out, results, rmsd_threshold=rmsd_threshold)


def summary_line(report: dict[str, Any], stat: str = "uq_max") -> dict[str, Any]:
    """Compact per-split summary (n, ADwT, mean RMSD, Spearman and AUROC of ``stat``)."""
    out: dict[str, Any] = {}
    for name, e in report["splits"].items():
        out[name] = {
            "n": e.get("n"),
            "adwt": e.get("adwt"),
            "rmsd_mean": e.get("rmsd_mean"),
            f"spearman_{stat}": (e.get("spearman") or {}).get(stat),
            f"auroc_{stat}": (e.get("auroc") or {}).get(stat),
        }
    return out


def cmd_is2rs(args: argparse.Namespace) -> int:
    from ..calculator import LTAUCalculator
    from ..exceptions import ArtifactError

    for what, path in (("model", args.model), ("estimator", args.estimator)):
        if not Path(path).exists():
            raise ArtifactError(f"{what} {path} does not exist")
    kwargs: dict[str, Any] = {"model": args.model, "estimator": args.estimator}
    if args.device is not None:
        kwargs["device"] = args.device
    if args.s is not None:
        kwargs["s"] = args.s
    factory = functools.partial(LTAUCalculator.from_files, **kwargs)
    report = run_is2rs(
        args.systems, factory, args.out, splits=args.splits, limit=args.limit, fmax=args.fmax,
        steps=args.steps, optimizer=args.optimizer, n_workers=args.workers,
        scheduler=args.scheduler, resume=not args.no_resume,
        rmsd_threshold=args.rmsd_threshold, progress=not args.no_progress,
    )
    print(json.dumps(summary_line(report)))
    print(f"report: {Path(args.out) / 'report.json'}, figure: {Path(args.out) / 'uq_vs_rmsd.png'}")
    return 0


def cmd_is2rs_generate(args: argparse.Namespace) -> int:
    from .generate import SPLITS, generate_benchmark

    manifest = generate_benchmark(
        args.out, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
        splits=tuple(args.splits) if args.splits else SPLITS,
        overwrite=args.overwrite, progress=not args.no_progress, n_workers=args.workers,
        scheduler=args.scheduler,
    )
    print(json.dumps({k: v["n_systems"] for k, v in manifest["splits"].items()}))
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``is2rs`` and ``is2rs-generate`` on an argparse subparsers object."""
    p = sub.add_parser(
        "is2rs",
        help="IS2RS campaign: relax systems with the model, relate uncertainty to RMSD",
        description="Relax each initial structure with the model calculator (LTAU "
        "uncertainty), compare with the reference-relaxed structure (RMSD, ADwT) and relate "
        "the uncertainty to the RMSD. Writes OUT/results/<sid>.json, OUT/report.json and "
        "OUT/uq_vs_rmsd.png; reruns resume.",
    )
    p.add_argument("--model", required=True, help="model file (as for LTAUCalculator.from_files)")
    p.add_argument("--estimator", required=True, help="fitted LTAU estimator directory")
    p.add_argument("--systems", required=True,
                   help="directory with initial.*/relaxed.* (or split subdirectories), or an "
                   "extxyz file with per-atom 'pos_relaxed'")
    p.add_argument("--out", required=True, help="campaign directory")
    p.add_argument("--splits", nargs="+", default=None, help="only these splits")
    p.add_argument("--limit", type=int, default=None, help="first N systems of each split")
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler address (e.g. tcp://host:8786 from dask-jobqueue)")
    p.add_argument("--workers", type=int, default=2,
                   help="LocalCluster worker processes when no --scheduler (0 = serial)")
    p.add_argument("--fmax", type=float, default=0.05, help="force threshold, eV/A")
    p.add_argument("--steps", type=int, default=300, help="maximum optimizer steps")
    p.add_argument("--optimizer", default="BFGS", choices=["BFGS", "FIRE", "LBFGS",
                                                            "BFGSLineSearch"])
    p.add_argument("--device", default=None, help="torch device for the model (default: cpu)")
    p.add_argument("--s", type=float, default=None, help="LTAU tolerance scaling factor")
    p.add_argument("--rmsd-threshold", type=float, default=0.5,
                   help="RMSD (A) above which a relaxation counts as failed (AUROC)")
    p.add_argument("--no-resume", action="store_true", help="recompute finished systems")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_is2rs)

    g = sub.add_parser(
        "is2rs-generate",
        help="generate the OC20-style IS2RS benchmark with EMT as reference",
        description="Adsorbate+slab systems (Cu, Ag, Au, Ni, Pd, Pt, Al and alloys; fcc111/100/"
        "110), reference EMT relaxations, splits train/val_id/val_ood_ads/val_ood_cat/"
        "val_ood_both. Deterministic from --seed.",
    )
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--n-train", type=int, default=200, help="training systems")
    g.add_argument("--n-val", type=int, default=50, help="systems per validation split")
    g.add_argument("--splits", nargs="+", default=None, help="only these splits")
    g.add_argument("--workers", type=int, default=0,
                   help="dask LocalCluster workers for the reference relaxations (0 = serial)")
    g.add_argument("--scheduler", default=None, help="dask scheduler address")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_is2rs_generate)
