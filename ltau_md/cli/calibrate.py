"""``ltau-md calibrate``: fit the tolerance scale s on labelled held-out structures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltau_md.cli._common import (
    add_device_arg,
    add_estimator_arg,
    add_mismatch_arg,
    add_model_arg,
    add_progress_arg,
    add_type_map_arg,
    library_default,
    positive_float,
    positive_int,
    statistic_key,
)

__all__ = [
    "NAME",
    "register",
    "run",
]

NAME = "calibrate"


def register(sub: argparse._SubParsersAction) -> None:
    from ltau_md.core.calibration import fit_scale

    s_lo, s_hi = library_default(fit_scale, "s_bounds")
    p = sub.add_parser(NAME, help="fit the tolerance scale s on labelled structures",
                       description="Fit the LTAU tolerance scale s (and per-group s) on a "
                       "calibration split of labelled structures, minimising the "
                       "miscalibration area; stores the in-domain frame statistics of the same "
                       "structures (novelty, uncertainty, the GMM: max, mean; the default alarm's "
                       "combined statistic; every other fitted signal: max; also over tags=2 "
                       "atoms where tagged) behind md/relax "
                       "--stop-rate/--warn-rate; saves the calibrated estimator.")
    p.add_argument("data", help="labelled structures with reference forces (e.g. extxyz), not "
                   "used for training: the calibration split")
    add_model_arg(p)
    add_estimator_arg(p)
    p.add_argument("--out", default=None,
                   help="write the calibrated estimator here (default: update --estimator)")
    p.add_argument("--group-key", default=None,
                   help="atoms.info key giving per-group s, e.g. config_type (default: one s "
                   "for all)")
    p.add_argument("--target-atol", type=positive_float, default=None,
                   help="tolerance (eV/A, > 0) the confidence refers to (default: estimator "
                   "atol)")
    p.add_argument("--s-min", type=positive_float, default=None,
                   help=f"lower end of the searched s range, > 0 (default {s_lo:g})")
    p.add_argument("--s-max", type=positive_float, default=None,
                   help=f"upper end of the searched s range, > --s-min (default {s_hi:g})")
    p.add_argument("--n-bins", type=positive_int, default=None,
                   help=f"calibration bins, >= 1 (default {library_default(fit_scale, 'n_bins')})")
    p.add_argument("--plot-dir", default=None,
                   help="write calibration.png and scale_fit.png here (default: no plots)")
    p.add_argument("--alarm-stats", nargs="+", type=statistic_key, default=(), metavar="KEY",
                   help="in-domain statistics fitted besides the default ones: "
                   "SIGNAL:ON[@tags=T], the signal possibly combined, e.g. "
                   "doptimality+clustered_doptimality/element:max")
    add_device_arg(p)
    add_progress_arg(p)
    add_type_map_arg(p)
    add_mismatch_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit s, save the estimator, print a JSON line (s, areas before/after, per-group s)."""
    from ltau_md.core.calibration import (
        DEFAULT_ALARM_STATS,
        calibrate_structures,
        check_statistic_signals,
        evaluate_calibration,
        fit_scale,
    )
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.exceptions import InvalidParameterError
    from ltau_md.core.model import MODEL_SIGNALS
    from ltau_md.core.structures import read_structures
    from ltau_md.integrations.nequip import NequIPFeatureModel
    from ltau_md.integrations.nequip.loader import check_pairing

    s_lo, s_hi = library_default(fit_scale, "s_bounds")
    s_min = s_lo if args.s_min is None else args.s_min
    s_max = s_hi if args.s_max is None else args.s_max
    n_bins = library_default(fit_scale, "n_bins") if args.n_bins is None else args.n_bins
    if s_min >= s_max:
        raise InvalidParameterError(f"--s-min {s_min:g} must be below --s-max {s_max:g}")
    est = LTAUEstimator.load(args.estimator)
    check_statistic_signals(args.alarm_stats,
                            {"novelty", "uncertainty", *est.signals_, *MODEL_SIGNALS})
    model = NequIPFeatureModel.from_file(args.model, device=args.device,
                                         chemical_species_to_atom_type_map=args.type_map)
    check_pairing(est, model, args.model, estimator_path=args.estimator,
                  allow_mismatch=args.allow_mismatch)
    frames = read_structures(args.data)
    fit, arrays = calibrate_structures(
        model, est, frames, group_key=args.group_key, target_atol=args.target_atol,
        s_bounds=(s_min, s_max), n_bins=n_bins,
        stats=(*DEFAULT_ALARM_STATS, *args.alarm_stats))
    out = Path(args.out or args.estimator)
    est.save(out)
    if args.plot_dir:
        from ltau_md.core.plots import plot_calibration, plot_scale_fit, save_figure

        plot_dir = Path(args.plot_dir)
        kw = {"indices": arrays["indices"], "n_bins": n_bins}
        curves = {"s=1": evaluate_calibration(est, None, arrays["errors"], s=1.0, **kw),
                  "fitted": evaluate_calibration(est, None, arrays["errors"], **kw)}
        save_figure(plot_calibration(curves, target_label=f"{fit.target_atol:.3g} eV/Å",
                                     title="calibration split (in-sample)"),
                    plot_dir / "calibration.png")
        save_figure(plot_scale_fit({"all": fit}), plot_dir / "scale_fit.png")
    print(json.dumps({"estimator": str(out.resolve()), "s": fit.s, "area": fit.area,
                      "area_unscaled": fit.area_unscaled, "target_atol": fit.target_atol,
                      "n_atoms": fit.n_atoms, "s_per_group": fit.s_per_group,
                      "at_bound": fit.at_bound,
                      "alarm_statistics": sorted(est.alarm_statistics_)}))
    return 0
