"""A snapshot ensemble on acac: the epoch checkpoints of one NequIP training as ensemble members.

Issue 18 names it as optional: an ensemble for the cost of one training. Reuses a run of
``benchmarks/acac.py`` (``--acac OUT``: its data split, its member-0 config, its estimator and
its evaluation). Trains member 0 again (same config, seed and data, the error logger too, so
its cost compares with the members') with a second ``ModelCheckpoint`` that keeps the weights
of every ``--every``-th epoch; then one ``evaluate`` call with the acac run's deployed model
(member 0's last epoch) and the snapshots of epoch ``--first`` on as the further members: their
force spread is the snapshot ensemble's ``force_std``. Reports per-atom Spearman with |dF| and
high-error AUROC, frame AUROC and out-of-domain rate at the 1 % in-domain threshold of the
spread's maximum, the training cost, beside the 4-member ensemble's figures from the acac run's
``evaluation.json`` (same split, same frames).

    python benchmarks/acac_snapshots.py --acac OUT --data ../shared/data/acac --out OUT_SNAP
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SETS = ("600K", "H_transfer", "dihedral")


def train_log_seconds(run: Path) -> float:
    """Wall seconds of a finished ``nequip-train`` run: its train.log's first to last stamp."""
    from datetime import datetime

    stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
              for line in (run / "train.log").read_text().splitlines()
              if line.startswith("[20")]
    return (stamps[-1] - stamps[0]).total_seconds()


def main(argv=None) -> int:
    import torch
    import yaml

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.integrations.nequip import NequIPFeatureModel, toy
    from ltau_md.workflows.evaluation import evaluate

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--acac", required=True, help="output directory of benchmarks/acac.py")
    p.add_argument("--data", required=True, help="directory of the acac xyz files")
    p.add_argument("--out", required=True, help="output directory (new)")
    p.add_argument("--every", type=int, default=10, help="epochs between snapshots (10)")
    p.add_argument("--first", type=int, default=20,
                   help="first snapshot epoch used as a member (default 20)")
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args(argv)
    acac, out = Path(args.acac).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=False)

    cfg = yaml.safe_load((acac / "work" / "member0.yaml").read_text())
    callbacks = list(cfg["trainer"]["callbacks"])  # the error logger too: a like-for-like cost
    callbacks.append({"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                      "dirpath": "${hydra:runtime.output_dir}/snapshots",
                      "filename": "epoch{epoch:03d}", "auto_insert_metric_name": False,
                      "every_n_epochs": args.every, "save_top_k": -1})
    cfg["trainer"]["callbacks"] = callbacks
    t0 = time.perf_counter()
    toy.nequip_train(toy.write_config(cfg, out / "snapshot.yaml"), out / "run", threads=1,
                     timeout=None)
    t_train = time.perf_counter() - t0
    epochs = int(cfg["trainer"]["max_epochs"])
    snaps = sorted((out / "run" / "snapshots").glob("epoch*.ckpt"))
    # lightning counts epochs from 0: "epoch019" holds the weights after 20 epochs
    use = [s for s in snaps if args.first <= int(s.stem[5:]) + 1 < epochs]

    torch.set_num_threads(1)
    model = NequIPFeatureModel.from_file(acac / "work" / "member0" / "last.ckpt")
    again = NequIPFeatureModel.from_file(out / "run" / "last.ckpt")
    members = [NequIPFeatureModel.from_file(s) for s in use]
    est = LTAUEstimator.load(acac / "estimator")
    import ase.io

    data = Path(args.data)
    frames = {n: ase.io.read(data / f"{f}.xyz", ":") for n, f in (
        ("300K", "test_MD_300K"), ("600K", "test_MD_600K"), ("H_transfer", "test_H_transfer"),
        ("dihedral", "test_dihedral"))}
    probe = frames["300K"][0]
    reproduced = float(np.abs(model.evaluate(probe).forces - again.evaluate(probe).forces).max())
    rep = evaluate(model, est, frames["300K"], {n: frames[n] for n in SETS}, members,
                   n_boot=args.n_boot, timing=(10, 20), signals=(), out=out / "evaluation")
    ref = json.loads((acac / "evaluation" / "evaluation.json").read_text())

    def r(x):
        return None if x is None else round(float(x), 4)

    def figures(report: dict) -> dict:
        pa, det, al = report["per_atom"]["force_std"], report["detection"], report["alarms"]
        at1 = al["force_std:max"]["at_rate"]["0.01"]
        return {
            "spearman": [r(pa["spearman"]["value"]), [r(c) for c in pa["spearman"]["ci95"]]],
            "high_error_auroc": [r(pa["high_error_auroc"]["value"]),
                                 [r(c) for c in pa["high_error_auroc"]["ci95"]]],
            "ood_auroc_max": {s: [r(det[s]["force_std:max"]["value"]),
                                  [r(c) for c in det[s]["force_std:max"]["ci95"]]]
                              for s in SETS},
            "ood_rate_1pct_max": {s: r(at1["ood_rate"][s]) for s in SETS},
            "in_domain_rate_1pct_max": r(at1["in_domain_rate"]),
            "ensemble_step_ms": r(1e3 * report["cost_per_step"]["ensemble_step_s"]),
            "model_ms": r(1e3 * report["cost_per_step"]["model_s"]),
        }

    result = {
        "benchmark": "acac_snapshots", "every": args.every, "first": args.first,
        "snapshot_epochs": [int(s.stem[5:]) + 1 for s in use], "members": 1 + len(use),
        "rerun_max_force_difference_eV_A": reproduced,
        "snapshot": {**figures(rep), "train_seconds": r(t_train)},
        "ensemble": {**figures(ref), "members": ref["settings"]["ensemble_members"],
                     "train_seconds": r(sum(train_log_seconds(acac / "work" / f"member{m}")
                                            for m in range(ref["settings"]["ensemble_members"])))},
    }
    print(json.dumps(result))
    record(__file__, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
