"""``ltau-md fit``: an LTAU estimator from the error logs of nequip-train runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltau_md.cli._common import (
    add_device_arg,
    add_model_arg,
    add_out_args,
    add_progress_arg,
    add_type_map_arg,
    given,
    library_default,
    non_negative_float,
    positive_float,
    positive_int,
    statistic_key,
    window,
)

__all__ = [
    "NAME",
    "check_k",
    "register",
    "run",
]

NAME = "fit"


def register(sub: argparse._SubParsersAction) -> None:
    from ltau_md.core.estimator import INDEX_KINDS, LTAUEstimator
    from ltau_md.core.model import DEFAULT_BATCH_SIZE
    from ltau_md.core.signals import SIGNAL_CLASSES
    from ltau_md.integrations.nequip.fit import fit_from_runs

    p = sub.add_parser(NAME, help="fit an LTAU estimator from nequip-train runs",
                       description="Fit an LTAU estimator from the error logs of nequip-train "
                       "runs (one per ensemble member) and the deployed model's descriptors. "
                       "Without run dirs (a model trained without the callback), --data "
                       "gives the training structures: the estimator then holds novelty and "
                       "the latent signals (the out-of-domain alarm), not the LTAU "
                       "confidence, which needs logged errors.")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="nequip-train run dirs (or error-log dirs), one per ensemble member "
                   "(none: fit from --data alone)")
    add_model_arg(p)
    add_out_args(p, "estimator output directory")
    p.add_argument("--k", type=positive_int, default=None,
                   help="neighbours per query atom, >= 1 and at most the number of training "
                   f"atoms (default {library_default(LTAUEstimator, 'k')})")
    p.add_argument("--index", choices=("auto", *INDEX_KINDS), default=None,
                   help=f"FAISS index (default {library_default(LTAUEstimator, 'index')}; "
                   "auto: exact below a size, HNSW above)")
    p.add_argument("--atol", type=positive_float, default=None,
                   help="tolerance in eV/A, > 0 (default: final training force MAE)")
    p.add_argument("--rtol", type=non_negative_float, default=0.0,
                   help="relative tolerance, times |F_ref|, >= 0 (default 0)")
    p.add_argument("--s", type=positive_float, default=None,
                   help="tolerance scaling factor, > 0 (default: 1 until calibrated)")
    p.add_argument("--window", type=window, default=(None, None), metavar="START:STOP",
                   help="slice over logged epochs, e.g. --window=-50: (default: all)")
    p.add_argument("--data", default=None,
                   help="training structures in logged order (default: the log's "
                   "frames.traj); without run dirs, the model's training structures")
    p.add_argument("--validation", default=None, metavar="XYZ",
                   help="held-out in-domain structures (no labels needed): the in-domain "
                   "statistics behind --stop-rate/--warn-rate of md/relax are fitted on them; "
                   "a 1 %% rate needs >= 99 frames, >= 300 recommended (default: the run's "
                   "validation frames the callback saved, validation.traj; else training "
                   "statistics, approximate)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="structures per descriptor forward pass, >= 1 (default "
                   f"{DEFAULT_BATCH_SIZE})")
    p.add_argument("--signals", nargs="*", choices=sorted(SIGNAL_CLASSES), default=None,
                   metavar="NAME",
                   help="latent signals fitted with the estimator, from "
                   f"{', '.join(sorted(SIGNAL_CLASSES))}; none with a bare --signals (default "
                   f"{' '.join(library_default(fit_from_runs, 'signals'))}, the default alarm's)")
    p.add_argument("--alarm-stats", nargs="+", type=statistic_key, default=(), metavar="KEY",
                   help="in-domain statistics fitted besides the default ones, for "
                   "md/relax --signal S --on ON --stop-rate: SIGNAL:ON[@tags=T], the signal "
                   "possibly combined, e.g. doptimality+clustered_doptimality/element:max")
    add_device_arg(p)
    add_type_map_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def check_k(args: argparse.Namespace) -> None:
    """InvalidParameterError if --k exceeds the logged training atoms (read from the error
    logs' metadata, before the model is loaded or any descriptor computed)."""
    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.exceptions import InvalidParameterError
    from ltau_md.integrations.nequip.fit import find_error_log

    k = library_default(LTAUEstimator, "k") if args.k is None else args.k
    for rd in args.run_dirs:
        n = ErrorLog.open(find_error_log(rd)).n_atoms
        if k > n:
            raise InvalidParameterError(
                f"--k {k} exceeds the {n} training atoms logged in {rd}: choose "
                f"--k <= {n}")


def run(args: argparse.Namespace) -> int:
    from ltau_md.core.exceptions import DataError
    from ltau_md.integrations.nequip.fit import fit_from_runs, fit_from_structures

    common = {**given(args, "k", "index", "batch_size", "signals"), "device": args.device,
              "alarm_stats": tuple(args.alarm_stats),
              "progress": not args.no_progress, "overwrite": args.overwrite,
              "chemical_species_to_atom_type_map": args.type_map}
    if not args.run_dirs:
        if args.data is None:
            raise DataError("give the nequip-train run dirs, or --data (the training "
                            "structures) for a model trained without the ltau-md callback")
        logged = [f"--{o}" for o in ("atol", "rtol", "s", "window")
                  if getattr(args, o) not in (None, 0.0, (None, None))]
        if logged:
            raise DataError(f"{', '.join(logged)} need logged training errors (run dirs); "
                            "without them the estimator has no LTAU confidence")
        est = fit_from_structures(args.model, args.data, args.out,
                                  validation=args.validation, **common)
    else:
        check_k(args)
        est = fit_from_runs(
            args.run_dirs, args.model, args.out, atol=args.atol,
            rtol=args.rtol, window=args.window, data=args.data, validation=args.validation,
            s=args.s, **common)
    print(json.dumps({
        "estimator": str(Path(args.out).resolve()), "n_train": est.n_train_, "dim": est.dim_,
        "members": est.summary_.n_members if est.has_error_log else 0, "atol": est.atol_,
        "k": est.k, "ltau_confidence": est.has_error_log,
        "signals": sorted(est.signals_),
        "index": getattr(est, "index_kind_", est.index),
        "alarm_statistics": {k: {"n_frames": v["n_frames"], "source": v["source"]}
                             for k, v in est.alarm_statistics_.items()},
    }))
    return 0
