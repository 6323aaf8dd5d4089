"""IS2RS campaign scaling, like for like: serial vs a 2-worker dask LocalCluster on the same
systems, interleaved serial, dask, dask, serial; each timing includes building the model (and
for dask starting, warming and closing the cluster). Prints one JSON line: wall times, the work
done inside the relaxations (sum of per-system wall times), and the speed-up.

    python benchmarks/bench_is2rs_scaling.py --model RUN/nequip_run/last.ckpt \\
        --estimator RUN/estimator --systems RUN/benchmark --limit 25 --out /tmp/is2rs_scaling
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

SPLITS = ("val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="NequIP checkpoint or package")
    p.add_argument("--estimator", required=True, help="estimator directory")
    p.add_argument("--systems", required=True, help="IS2RS benchmark directory")
    p.add_argument("--limit", type=int, default=25, help="systems per split (default 25)")
    p.add_argument("--workers", type=int, default=2, help="dask workers (default 2)")
    p.add_argument("--steps", type=int, default=200, help="max relaxation steps (default 200)")
    p.add_argument("--out", required=True, help="work directory (one campaign per timing)")
    args = p.parse_args(argv)

    from ltau_md.is2rs import load_systems
    from ltau_md.is2rs.runner import RelaxSettings, run_campaign
    from ltau_md.nequip import load_calculator

    loaded = load_systems(args.systems, splits=list(SPLITS))
    systems = [s for sp in SPLITS for s in [x for x in loaded if x.split == sp][:args.limit]]
    factory = functools.partial(load_calculator, model=args.model, estimator=args.estimator)
    settings = RelaxSettings(steps=args.steps)
    out: dict = {"serial": [], "dask": []}
    for i, mode in enumerate(("serial", "dask", "dask", "serial")):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = run_campaign(systems, factory, Path(args.out) / f"{mode}{i}", settings,
                           n_workers=0 if mode == "serial" else args.workers, resume=False,
                           progress=False)
        wall = time.perf_counter() - t0
        work = sum(r["wall_s"] + r.get("ref_wall_s", 0.0) for r in res)
        out[mode].append({"wall_s": round(wall, 1), "work_s": round(work, 1),
                          "loadavg_before": round(load, 2), "counts": res.counts})
    serial = sum(x["wall_s"] for x in out["serial"])
    dask = sum(x["wall_s"] for x in out["dask"])
    print(json.dumps({"benchmark": "is2rs_scaling", "n_systems": len(systems),
                      "workers": args.workers, "speedup": round(serial / dask, 2), **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
