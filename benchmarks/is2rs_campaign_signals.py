"""Every uncertainty signal against the IS2RS relaxation outcome (issue 23): which statistic
tracks the RMSD and the energy above the minimum, the paper's Fig. 4 claim, the true-force-error
ceiling and step-0 out-of-domain detection.

Reads a finished ``bench_is2rs.py`` run (``RUN/benchmark``, ``RUN/nequip_run/last.ckpt``,
``RUN/estimator``, ``RUN/campaign_dask/results``). The LTAU statistics along each relaxation
(initial / final / max / mean) come from the campaign; every latent signal of the head-to-head
issue (GMM, D-optimality, clustered D-optimality, LLPR), fitted on the estimator's training
descriptors, and LTAU's own per-atom signals are scored again at the initial structure and the
model's end point (the maximum over the free atoms and over the adsorbate atoms; a statistic
the campaign measured itself is kept). All of them go through the campaign report's
``analyze`` (Spearman with the targets, failure AUROC, OOD detection, 95 % bootstrap
intervals over the systems).

    python benchmarks/is2rs_campaign_signals.py --run OUT --record is2rs_chgnet_signals
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

#: per-atom signals scored again at the initial and final structures
SCORED = ("uncertainty", "predicted_error", "novelty", "latent_distance", "element_error")
#: the LTAU statistics of the paper's Fig. 4, from the campaign's per-step series
PAPER = ("initial", "final", "max", "mean")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a finished bench_is2rs.py output directory")
    p.add_argument("--campaign", default="campaign_dask", help="campaign folder in RUN")
    p.add_argument("--systems", nargs="+", default=["benchmark"],
                   help="system folders in RUN (default benchmark; the real-DFT run: "
                   "dft_split benchmark)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--record", default="is2rs_campaign_signals", help="record name")
    args = p.parse_args(argv)
    import torch

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.metrics import stat_key
    from ltau_md.core.signals import SIGNAL_CLASSES
    from ltau_md.integrations.nequip import NequIPFeatureModel
    from ltau_md.workflows.evaluation import add_missing_signals
    from ltau_md.workflows.evaluation._data import set_data, signal_values
    from ltau_md.workflows.is2rs._relax import series_key
    from ltau_md.workflows.is2rs._results import FERR, UQ, from_json, result_path
    from ltau_md.workflows.is2rs.analysis import REPORT_STATS, analyze
    from ltau_md.workflows.is2rs.data import load_systems
    from ltau_md.workflows.is2rs.metrics import ADSORBATE_TAG, free_mask

    torch.set_num_threads(1)
    run = Path(args.run)
    camp = run / args.campaign
    systems = {s.sid: s for d in args.systems for s in load_systems(run / d)}
    results = []
    for sid in systems:
        path = result_path(camp, sid)
        if path.exists():
            results.append(from_json(json.loads(path.read_text())))
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        p.error(f"no finished systems in {camp}")
    est = LTAUEstimator.load(run / "estimator")
    t0 = time.process_time()
    add_missing_signals(est, "all")  # every latent signal the estimator lacks, as evaluate does
    fit_cpu = time.process_time() - t0
    model = NequIPFeatureModel.from_file(run / "nequip_run" / "last.ckpt")
    names = (*SCORED, *SIGNAL_CLASSES)
    from_campaign = set(ok[0])  # statistics the campaign measured itself are kept as they are
    extra: list[str] = []
    cpu = {}
    for stage in ("initial", "final"):
        frames = []
        for r in ok:
            a = systems[r["sid"]].initial.copy()
            if stage == "final":
                a.positions = np.asarray(r["positions"], dtype=float)
            frames.append(a)
        t0 = time.process_time()
        d = set_data(stage, frames, model, [], est, 16, labelled=False)
        vals = signal_values(d, est, s=1.0)
        cpu[stage] = (time.process_time() - t0) / max(len(frames), 1)
        off = d["offsets"]
        for i, (r, a) in enumerate(zip(ok, frames, strict=True)):
            free = free_mask(a)
            ads = a.get_tags() == ADSORBATE_TAG
            for n in names:
                v = vals[n][off[i]:off[i + 1]]
                for sel, mask in ((None, free), (f"tags={ADSORBATE_TAG}", ads)):
                    key = series_key(stat_key(n, "max", sel), stage)
                    if key in from_campaign:
                        continue
                    r[key] = float(v[mask].max()) if mask.any() else float("nan")
                    if i == 0:
                        extra.append(key)
    stats = [*REPORT_STATS, *[k for k in extra if k not in REPORT_STATS]]
    rep = analyze(ok, stats=stats, n_boot=args.n_boot)

    def ci(e):
        if not e or e.get("value") is None:
            return None
        return [round(e["value"], 3), round(e["lo"], 3), round(e["hi"], 3)]

    splits = {}
    for name, e in rep["splits"].items():
        if not e or not e.get("n_ok"):
            continue
        sp, au = e.get("spearman_ci", {}), e.get("auroc_ci", {})
        splits[name] = {
            "n": e["n_ok"],
            "failure_rates": {k: round(float(v), 3)
                              for k, v in (e.get("failure_rates") or {}).items()},
            "spearman_rmsd": {st: ci(sp.get("rmsd", {}).get(st)) for st in stats},
            "spearman_energy_above_min": {st: ci(sp.get("energy_above_min", {}).get(st))
                                          for st in stats},
            "auroc_rmsd_fail": {st: ci(au.get("rmsd", {}).get(st)) for st in stats},
            "auroc_energy_fail": {st: ci(au.get("energy", {}).get(st)) for st in stats},
        }
    paper = {name: {f"uncertainty/{k}": splits[name]["spearman_rmsd"][series_key(UQ, k)]
                    for k in PAPER} for name in splits}
    ceiling = {name: {f"force_error/{k}": splits[name]["spearman_rmsd"].get(series_key(FERR, k))
                      for k in PAPER} for name in splits}
    best = {}
    for name, e in splits.items():
        for target in ("spearman_rmsd", "spearman_energy_above_min", "auroc_rmsd_fail"):
            ranked = sorted(((v[0], st) for st, v in e[target].items()
                             if v is not None and not st.startswith("force_error")),
                            reverse=True)
            best[f"{name}/{target}"] = [[st, e[target][st]] for _, st in ranked[:8]]
    ood = {st: ci(v) for st, v in rep.get("ood_detection", {}).items()
           if st.endswith("/initial")}
    result = {
        "benchmark": "is2rs_campaign_signals",
        "n_systems": len(ok),
        "signals_fit_cpu_s": round(fit_cpu, 1),
        "cpu_s_per_structure": {k: round(v, 4) for k, v in cpu.items()},
        "paper_claim_spearman_rmsd": paper,
        "true_force_error_ceiling_spearman_rmsd": ceiling,
        "best": best,
        "step0_ood_detection_auroc": dict(sorted(ood.items(), key=lambda kv: -(kv[1] or [0])[0])),
        "splits": splits,
    }
    print(json.dumps({k: result[k] for k in ("n_systems", "paper_claim_spearman_rmsd",
                                             "true_force_error_ceiling_spearman_rmsd")}))
    for k, v in best.items():
        print(k, json.dumps(v[:5]))
    print("step0 OOD", json.dumps(list(result["step0_ood_detection_auroc"].items())[:8]))
    record(__file__, result, name=args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
