"""``ltau-md evaluate``: score LTAU and its baselines on in-domain and out-of-domain sets."""

from __future__ import annotations

import argparse
import json

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
    statistic_key,
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
        "Writes OUT/evaluation.json (strict JSON), per_atom.npz and figures; prints a short "
        "summary and the ranking of the alarm statistics (--json: the summary as one JSON "
        "line instead).")
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
    p.add_argument("--n-splits", type=positive_int, default=None,
                   help="random calibration/evaluation splits the alarm rates are averaged "
                   "over, >= 1 (a combined statistic's references are refitted on each: fewer "
                   f"is faster on large sets) (default {default('n_splits')})")
    p.add_argument("--alarm-stats", nargs="+", type=statistic_key, default=(), metavar="KEY",
                   help="frame statistics scored besides every signal's max, mean and q90 and "
                   "the default alarm, e.g. gmm:q99 or a combination "
                   "doptimality+clustered_doptimality/element:max (default: none)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON line (default: a short table)")
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
    """Evaluate, write OUT/evaluation.json and figures, print a short summary (--json: the
    summary as one JSON line)."""
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
                      **given(args, "fraction", "seed", "alarm_rate", "n_boot", "n_splits"),
                      timing=(args.timing_rounds, 10) if args.timing_rounds > 0 else None,
                      alarm_stats=tuple(args.alarm_stats),
                      out=args.out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"out": str(args.out), **report["summary"]}, allow_nan=False))
    else:
        print(summary_text(report, args.out))
    return 0


def _pct(v: float | None) -> str:
    return "off" if v is None else f"{100 * v:.1f} %"


def summary_text(report: dict, out: str) -> str:
    """What a person reads after ``ltau-md evaluate``: the default alarm's in-domain and
    out-of-domain rates (or why it is off), the per-atom ranking quality, the ranking table of
    the alarm statistics and where the full report is."""
    s = report["summary"]
    key = s["default_alarm"]
    lines = [f"default alarm {key} at a nominal in-domain rate of {_pct(s['alarm_rate_nominal'])}:"]
    if s["alarm_off_reason"]:
        lines.append(f"  {s['alarm_off_reason']}")  # "alarm off: why"
    else:
        lines.append(f"  in-domain (held-out) {_pct(s['alarm_rate_in_domain'])}; out of domain: "
                     + ", ".join(f"{n} {_pct(v)}" for n, v in s["alarm_rate_ood"].items()))
        means = s.get("alarm_rate_ood_mean_splits") or {}
        if s.get("alarm_rate_in_domain_mean_splits") is not None and means:
            # one split's threshold moves with its calibration half: the mean over splits too
            lines.append(f"  mean over random splits: in-domain "
                         f"{_pct(s['alarm_rate_in_domain_mean_splits'])}; out of domain: "
                         + ", ".join(f"{n} {_pct(v)}" for n, v in means.items()))
    if s["ood_auroc"]:
        lines.append("  frame AUROC: " + ", ".join(
            f"{n} {v[key]['value']:.3f}" for n, v in s["ood_auroc"].items()
            if v.get(key) and v[key].get("value") is not None))
    if s.get("spearman"):
        rho = {n: v["value"] for n, v in s["spearman"].items()
               if isinstance(v, dict) and v.get("value") is not None}
        lines.append("per-atom Spearman with |dF|, best first: " + ", ".join(
            f"{n} {v:.3f}" for n, v in sorted(rho.items(), key=lambda kv: -kv[1])))
    lines.append(f"miscalibration area: {s['miscalibration_area_fitted']:.3f} (s = {s['s']:.3g}, "
                 f"{s['miscalibration_area_s1']:.3f} at s = 1)")
    for name, area in (s.get("spread_miscalibration_area") or {}).items():
        fitted = s["spread_miscalibration_area_fitted"][name]
        lines.append(f"miscalibration area of the {name} spread: {area:.3f} as given, "
                     f"{fitted:.3f} with a fitted factor")
    asked = report.get("settings", {}).get("alarm_stats") or ()
    lines += ["", ranking_table(report["ranking"], also=asked), "",
              f"wrote {out}/ (evaluation.json: every figure with its interval; per_atom.npz; "
              "figures)"]
    return "\n".join(lines)


def ranking_table(rows: list[dict], top: int = 12, also: tuple[str, ...] = ()) -> str:
    """The ranking as a terminal table: rank, statistic, mean / worst out-of-domain alarm rate
    at the 1 % in-domain threshold, its in-domain rate, mean / worst AUROC and the ms per step
    it adds to the model's ("-" where not timed); the first ``top`` rows and those of the
    statistics ``also`` (asked for by name) wherever they rank."""
    def f(v):
        return "  off" if v is None else f"{v:5.2f}"

    def ms(v):
        return "     -" if v is None else f"{1e3 * v:6.2f}"

    width = max([34, *(len(r["statistic"]) for r in rows)])
    lines = [f"{'#':>3s} {'statistic':{width}s} OOD@1% worst  ID@1%  AUROC worst ms/step"]
    for i, r in enumerate(rows, 1):
        if i > top and r["statistic"] not in also:
            continue
        lines.append(f"{i:3d} {r['statistic']:{width}s} {f(r['ood_rate_at_1pct_mean'])} "
                     f"{f(r['ood_rate_at_1pct_worst'])} {f(r['in_domain_rate_at_1pct'])}  "
                     f"{f(r['auroc_mean'])} {f(r['auroc_worst'])} "
                     f"{ms(r.get('cost_per_step_s'))}")
    return "\n".join(lines)
