"""``ltau-md fit``: an LTAU estimator from the error logs of nequip-train runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_out_args, window

NAME = "fit"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="fit an LTAU estimator from nequip-train runs",
                       description="Fit an LTAU estimator from the error logs of nequip-train "
                       "runs (one per ensemble member) and the deployed model's descriptors.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="nequip-train run dirs (or error-log dirs), one per ensemble member")
    p.add_argument("--model", required=True, help="deployed model (.ckpt or .nequip.zip)")
    add_out_args(p, "estimator output directory")
    p.add_argument("--k", type=int, default=10, help="neighbours per query atom (default 10)")
    p.add_argument("--index", choices=["auto", "flat", "hnsw", "ivfpq"], default="auto",
                   help="FAISS index (default auto: exact below a size, HNSW above)")
    p.add_argument("--atol", type=float, default=None,
                   help="tolerance in eV/A (default: final training force MAE)")
    p.add_argument("--rtol", type=float, default=0.0,
                   help="relative tolerance, times |F_ref| (default 0)")
    p.add_argument("--s", type=float, default=None,
                   help="tolerance scaling factor (default: 1 until calibrated)")
    p.add_argument("--window", type=window, default=(None, None), metavar="START:STOP",
                   help="slice over logged epochs, e.g. --window=-50: (default: all)")
    p.add_argument("--data", default=None,
                   help="training structures in logged order (default: the log's frames.traj)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="structures per descriptor forward pass (default 16)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..nequip.fit import fit_from_runs

    est = fit_from_runs(
        args.run_dirs, args.model, args.out, k=args.k, index=args.index, atol=args.atol,
        rtol=args.rtol, window=args.window, data=args.data, batch_size=args.batch_size,
        device=args.device, progress=not args.no_progress, overwrite=args.overwrite, s=args.s,
    )
    print(json.dumps({
        "estimator": str(Path(args.out).resolve()), "n_train": est.n_train_, "dim": est.dim_,
        "members": est.summary_.n_members, "atol": est.atol_, "k": est.k,
        "index": getattr(est, "index_kind_", est.index),
    }))
    return 0
