"""Every uncertainty signal head to head on the EMT IS2RS splits (issue 18's second data set).

The frames of a generated IS2RS benchmark (``bench_is2rs.py``: ``OUT/benchmark``) with the
model and estimator trained on its training split: ``ltau_md.workflows.evaluation.evaluate``
with ``val_id`` as the in-domain set (split by frame into calibration and evaluation halves)
and ``val_ood_ads``, ``val_ood_cat``, ``val_ood_both`` as out-of-domain sets; every latent
signal is fitted on the estimator's training descriptors. Reports the ranking by the
out-of-domain alarm rate at the 1 % in-domain threshold and the default alarm against the
best of the GMM and D-optimality (no ensemble here). Frame statistics are over the free atoms
(the tag-0 layers are fixed), as the monitor takes them; ``--alarm-stats KEY...`` scores more,
e.g. the adsorbate atoms' ``gmm:max@tags=2``.

    python benchmarks/is2rs_signals.py --bench OUT/benchmark \\
        --model OUT/nequip_run/last.ckpt --estimator OUT/estimator --out OUT/signals
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OOD_SPLITS = ("val_ood_ads", "val_ood_cat", "val_ood_both")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", required=True, help="generated benchmark directory")
    p.add_argument("--model", required=True)
    p.add_argument("--estimator", required=True)
    p.add_argument("--out", required=True, help="evaluation output directory (new)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alarm-stats", nargs="*", default=[],
                   help="statistics scored besides the default ones (evaluate's alarm_stats)")
    p.add_argument("--record", default=None,
                   help="record name (default is2rs_signals), e.g. is2rs_signals_600")
    args = p.parse_args(argv)
    import ase.io
    import torch
    from acac import head_to_head

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.integrations.nequip import NequIPFeatureModel
    from ltau_md.workflows.evaluation import evaluate

    torch.set_num_threads(1)
    bench = Path(args.bench)
    model = NequIPFeatureModel.from_file(args.model)
    est = LTAUEstimator.load(args.estimator)
    frames = {s: ase.io.read(bench / s / "frames.extxyz", ":") for s in ("val_id", *OOD_SPLITS)}
    rep = evaluate(model, est, frames["val_id"], {s: frames[s] for s in OOD_SPLITS},
                   seed=args.seed, n_boot=args.n_boot, timing=None, out=args.out,
                   alarm_stats=args.alarm_stats)

    def r(x):
        return None if x is None else round(float(x), 4)

    h2h = head_to_head(rep)
    result = {
        "benchmark": "is2rs_signals", "frames": {s: len(f) for s, f in frames.items()},
        "default_alarm": rep["summary"]["default_alarm"],
        "default_alarm_in_domain_rate": {
            "split": r(rep["alarms"][rep["summary"]["default_alarm"]]["in_domain_rate"]),
            "mean_splits": r(rep["summary"]["alarm_rate_in_domain_mean_splits"])},
        "default_alarm_ood_rate_mean_splits": {
            k: r(v) for k, v in rep["summary"]["alarm_rate_ood_mean_splits"].items()},
        "head_to_head": h2h,
        "ranking_top": [{"statistic": x["statistic"],
                         "ood_rate_at_1pct": {k: r(v) for k, v in x["ood_rate_at_1pct"].items()},
                         "auroc": {k: r(v) for k, v in x["auroc"].items()}}
                        for x in rep["ranking"][:15]],
    }
    print(json.dumps(result))
    record(__file__, result, name=args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
