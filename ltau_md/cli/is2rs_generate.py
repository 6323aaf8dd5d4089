"""``ltau-md is2rs-generate``: the OC20-style IS2RS benchmark with a reference calculator
(EMT by default, or any ASE calculator by import path)."""

from __future__ import annotations

import argparse
import json

from ltau_md.cli._common import add_out_args, add_progress_arg, non_negative_int, positive_int
from ltau_md.workflows.is2rs.reference import DEFAULT_REFERENCE
from ltau_md.workflows.simulate import OPTIMIZERS

__all__ = [
    "NAME",
    "register",
    "run",
]

NAME = "is2rs-generate"


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        NAME, help="generate the OC20-style IS2RS benchmark with a reference calculator",
        description="Adsorbate+slab systems (Cu, Ag, Au, Ni, Pd, Pt, Al and alloys; fcc111/100/"
        "110), lattice constants, relaxed targets and training frames from the reference "
        "calculator (EMT by default), splits train/val_id/val_ood_ads/val_ood_cat/"
        "val_ood_both. Deterministic from --seed; finished systems are cached (OUT.cache), so "
        "a killed generation continues and a rerun reuses them.")
    add_out_args(g)
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="random seed, >= 0 (default 0)")
    g.add_argument("--n-train", type=non_negative_int, default=200,
                   help="training systems, >= 0 (default 200)")
    g.add_argument("--n-val", type=non_negative_int, default=50,
                   help="systems per validation split, >= 0 (default 50)")
    g.add_argument("--splits", nargs="+", default=None, help="only these splits (default all)")
    g.add_argument("--oc20-adsorbates", default=None, metavar="WHEEL_OR_PKL",
                   help="use OC20's 86 adsorbates from the fairchem-data-oc wheel (`pip "
                   "download fairchem-data-oc --no-deps`) or its adsorbates.pkl: C1/N/O/H "
                   "in domain, C2 out of domain (default: the built-in 16)")
    g.add_argument("--keep-dissociated", action="store_true",
                   help="keep systems whose adsorbate falls apart in the EMT reference "
                   "relaxation (default: resample them, OC20's dissociation anomaly; EMT breaks "
                   "most OC20 adsorbates, so --oc20-adsorbates needs this)")
    g.add_argument("--reference", default=DEFAULT_REFERENCE, metavar="IMPORT_PATH",
                   help="the reference calculator, 'package.module:Name' of an ASE calculator "
                   f"class or factory (default {DEFAULT_REFERENCE}; e.g. "
                   "ltau_md.workflows.is2rs.universal:chgnet with the [universal] extra)")
    g.add_argument("--ref-optimizer", default="BFGS", choices=OPTIMIZERS,
                   help="ASE optimizer of the reference relaxations (default BFGS)")
    g.add_argument("--max-reference-steps", type=positive_int, default=500,
                   help="cap on reference steps per relaxation; a system not converged by "
                   "then is resampled (default 500)")
    g.add_argument("--max-attempts", type=positive_int, default=100,
                   help="re-relaxation budget: tries per system before it fails (default 100)")
    g.add_argument("--cache", default=None, metavar="DIR",
                   help="cache of finished systems (default OUT.cache beside OUT)")
    g.add_argument("--no-cache", action="store_true",
                   help="cache nothing (default: cache in OUT.cache or --cache)")
    g.add_argument("--workers", type=non_negative_int, default=0,
                   help="dask LocalCluster workers for the reference relaxations (default 0 = "
                   "serial)")
    g.add_argument("--scheduler", default=None,
                   help="dask scheduler address (default: --workers decides)")
    add_progress_arg(g)
    g.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ltau_md.workflows.is2rs.generate import SPLITS, GeneratorConfig, generate_benchmark

    kw: dict = {"reject_dissociated": not args.keep_dissociated, "reference": args.reference,
                "ref_optimizer": args.ref_optimizer, "ref_steps": args.max_reference_steps,
                "max_attempts": args.max_attempts}
    if args.oc20_adsorbates:
        from ltau_md.workflows.is2rs.adsorbates import oc20_generator_settings

        kw.update(oc20_generator_settings(args.oc20_adsorbates))
    cfg = GeneratorConfig(**kw)
    manifest = generate_benchmark(
        args.out, seed=args.seed, n_train=args.n_train, n_val=args.n_val, cfg=cfg,
        splits=tuple(args.splits) if args.splits else SPLITS,
        overwrite=args.overwrite, progress=not args.no_progress, n_workers=args.workers,
        scheduler=args.scheduler, cache_dir=args.cache, cache=not args.no_cache,
    )
    print(json.dumps({k: {"systems": v["n_systems"], "reference_calls": v["reference_calls"],
                          "attempts": v["attempts"], "rejected": v["rejected"]}
                      for k, v in manifest["splits"].items()}))
    return 0
