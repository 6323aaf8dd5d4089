"""``ltau-md learn``: the active-learning loop (explore with the alarm, select, label,
fine-tune, refit), resumable."""

from __future__ import annotations

import argparse
import json

from ltau_md.cli._common import non_negative_int

__all__ = ["NAME", "register", "run"]

NAME = "learn"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME, help="active learning: explore with the alarm, label a diverse batch, fine-tune",
        description="Iterate: MD exploration with the current model, the frames that raise "
        "the alarm (at an in-domain alarm rate) reduced to a diverse batch (D-optimal in the "
        "latent features), labelled by the oracle, nequip-train fine-tuning with error "
        "logging, a new estimator. Stops when the alarm share of the exploration is within "
        "the nominal rate's tolerance, the label budget is spent or the iterations are done. "
        "Everything goes to the config's out_dir (ITER_k/ per iteration, report.json, "
        "learn.png); a rerun continues where a killed one stopped.")
    p.add_argument("config", help="learn config (YAML; see the docs' guide)")
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler address for the exploration runs, e.g. "
                   "tcp://host:8786 (default: a LocalCluster of --workers)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="LocalCluster worker processes for the exploration when no "
                   "--scheduler (0 = in this process; default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run or continue the loop; print one JSON line per iteration."""
    from ltau_md.workflows.learn import run_learn

    report = run_learn(args.config, n_workers=args.workers, scheduler=args.scheduler)
    for row in report["iterations"]:
        print(json.dumps({k: row.get(k) for k in (
            "iteration", "alarm_share", "n_alarmed", "n_observed", "n_selected", "n_labelled",
            "labels_total", "test_force_mae")}))
    print(f"stopped: {report['stopped']}; {report['labels']} labels; model {report['model']}")
    return 0
