"""``ltau-md evaluate``: score LTAU and its baselines on in-domain and out-of-domain sets."""

from __future__ import annotations

import argparse
import json
import sys

from ltau_md.cli._common import (
    add_device_arg,
    add_estimator_arg,
    add_mismatch_arg,
    add_model_arg,
    add_out_args,
    add_progress_arg,
    add_type_map_arg,
    alarm_rate,
    given,
    library_default,
    non_negative_int,
    open_fraction,
    positive_int,
)

__all__ = [
    "NAME",
    "load_model",
    "named_path",
    "register",
    "run",
]

NAME = "evaluate"


def named_path(text: str) -> tuple[str, str]:
    """Parse NAME=PATH (an out-of-domain set)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip() or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (NAME without '/'), got {text!r}")
    return name.strip(), path.strip()


def register(sub: argparse._SubParsersAction) -> None:
    from ltau_md.workflows.evaluation import evaluate

    def default(name: str) -> object:
        return library_default(evaluate, name)

    p = sub.add_parser(
        NAME, help="score the uncertainty (LTAU and baselines) on held-out and OOD sets",
        description="Split the labelled in-domain set by frame into calibration and "
        "evaluation halves, fit s and the alarm thresholds on the first, and report on the "
        "second and on each out-of-domain set: miscalibration area, Spearman(signal, |dF|), "
        "high-error AUROC, frame OOD AUROC, alarm rates and cost per step, with 95%% "
        "bootstrap intervals, for LTAU uncertainty, predicted error, novelty, latent "
        "distance, the element baseline and (with --members) the ensemble force std. "
        "Writes OUT/evaluation.json (strict JSON) and figures; prints the summary as one "
        "JSON line.")
    add_model_arg(p)
    add_estimator_arg(p)
    p.add_argument("--members", nargs="+", default=[], metavar="MODEL",
                   help="further ensemble members (model files); scores the ensemble force "
                   "std of --model plus these (default: none, no ensemble baseline)")
    p.add_argument("--in-domain", required=True, metavar="PATH",
                   help="labelled in-domain structures with reference forces, e.g. extxyz "
                   "(required)")
    p.add_argument("--ood", type=named_path, action="append", default=[], metavar="NAME=PATH",
                   help="an out-of-domain set (energies-only is fine); repeatable "
                   "(default: none)")
    add_out_args(p, "report directory (evaluation.json, figures)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the calibration/evaluation split and bootstrap, >= 0 "
                   f"(default {default('seed')})")
    p.add_argument("--fraction", type=open_fraction, default=None,
                   help="fraction of in-domain frames used for calibration, in (0, 1) "
                   f"(default {default('fraction')})")
    p.add_argument("--alarm-rate", type=alarm_rate, default=None,
                   help="nominal in-domain alarm rate of the thresholds, in (0, 1) "
                   f"(default {default('alarm_rate')})")
    p.add_argument("--n-boot", type=positive_int, default=None,
                   help=f"bootstrap resamples for the 95%% intervals (default {default('n_boot')})")
    p.add_argument("--timing-rounds", type=int, default=5, metavar="N",
                   help="interleaved timing rounds of 10 steps each for the cost per step; "
                   "0 skips the timing (default 5)")
    add_device_arg(p)
    add_progress_arg(p)
    add_type_map_arg(p)
    add_mismatch_arg(p)
    p.set_defaults(func=run)


def load_model(path: str, device: str, type_map: dict[str, str] | None = None):
    """The FeatureModel of a model file (NequIP checkpoint or package)."""
    from ltau_md.integrations.nequip import NequIPFeatureModel

    return NequIPFeatureModel.from_file(path, device=device,
                                        chemical_species_to_atom_type_map=type_map)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write OUT/evaluation.json and figures, print the summary as a JSON line."""
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.exceptions import DataError
    from ltau_md.core.files import check_output_dir
    from ltau_md.core.structures import read_structures
    from ltau_md.integrations.nequip.loader import check_pairing
    from ltau_md.workflows.evaluation import OUTPUT_KIND, evaluate

    check_output_dir(args.out, OUTPUT_KIND, args.overwrite)
    names = [n for n, _ in args.ood]
    if len(set(names)) != len(names):
        raise DataError(f"--ood names must be unique, got {names}")
    est = LTAUEstimator.load(args.estimator)
    in_domain = read_structures(args.in_domain)
    ood = {n: read_structures(p) for n, p in args.ood}
    model = load_model(args.model, args.device, args.type_map)
    check_pairing(est, model, args.model, estimator_path=args.estimator,
                  allow_mismatch=args.allow_mismatch)
    members = [load_model(m, args.device, args.type_map) for m in args.members]
    report = evaluate(model, est, in_domain, ood, members or None,
                      **given(args, "fraction", "seed", "alarm_rate", "n_boot"),
                      timing=(args.timing_rounds, 10) if args.timing_rounds > 0 else None,
                      out=args.out, overwrite=args.overwrite)
    reason = report["summary"]["alarm_off_reason"]
    if reason:
        print(f"ltau-md evaluate: default {report['summary']['default_alarm']} {reason}",
              file=sys.stderr)
    print(ranking_table(report["ranking"]), file=sys.stderr)
    print(json.dumps({"out": str(args.out), **report["summary"]}, allow_nan=False))
    return 0


def ranking_table(rows: list[dict], top: int = 12) -> str:
    """The ranking as a terminal table: statistic, mean / worst out-of-domain alarm rate at
    the 1 % in-domain threshold, its in-domain rate, mean / worst AUROC."""
    def f(v):
        return "  off" if v is None else f"{v:5.2f}"

    lines = [f"{'statistic':34s} OOD@1% worst  ID@1%  AUROC worst"]
    for r in rows[:top]:
        lines.append(f"{r['statistic']:34s} {f(r['ood_rate_at_1pct_mean'])} "
                     f"{f(r['ood_rate_at_1pct_worst'])} {f(r['in_domain_rate_at_1pct'])}  "
                     f"{f(r['auroc_mean'])} {f(r['auroc_worst'])}")
    return "\n".join(lines)
