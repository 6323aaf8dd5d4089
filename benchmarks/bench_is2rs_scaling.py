"""IS2RS campaign scaling, like for like: serial vs a 2-worker dask LocalCluster on the same
systems, interleaved (default order serial, dask, pair, pair, dask, serial); each timing
includes building the model (and for dask starting, warming and closing the cluster).

``pair`` is the machine's ceiling for any 2-process scheme: two independent serial processes
started together, each relaxing half of the systems (``systems[i::2]``), timed until both
exit. ``daskprof`` is dask with its statistical profiler and GIL monitor switched back on
(dask's defaults), to measure what :data:`ltau_md.workflows._dask.WORKER_CONFIG` saves.
Prints one JSON line: wall times, the work done inside the relaxations (sum of per-system wall
times), and speed-ups against the serial mean.

    python benchmarks/bench_is2rs_scaling.py --model RUN/nequip_run/last.ckpt \\
        --estimator RUN/estimator --systems RUN/benchmark --limit 25 --out OUT
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _record import record

SPLITS = ("val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")
MODES = ("serial", "dask", "daskprof", "pair")


def _campaign(args, out: Path, n_workers: int, part: tuple[int, int] | None = None):
    from ltau_md.integrations.nequip import load_calculator
    from ltau_md.workflows.is2rs import load_systems
    from ltau_md.workflows.is2rs.runner import RelaxSettings, run_campaign

    loaded = load_systems(args.systems, splits=list(SPLITS))
    systems = [s for sp in SPLITS for s in [x for x in loaded if x.split == sp][:args.limit]]
    if part is not None:
        systems = systems[part[0]::part[1]]
    factory = functools.partial(load_calculator, model=args.model, estimator=args.estimator)
    return run_campaign(systems, factory, out, RelaxSettings(steps=args.steps),
                        n_workers=n_workers, resume=False, progress=False)


def _work(res) -> float:
    return sum(r["wall_s"] + r.get("ref_wall_s", 0.0) for r in res)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="NequIP checkpoint or package")
    p.add_argument("--estimator", required=True, help="estimator directory")
    p.add_argument("--systems", required=True, help="IS2RS benchmark directory")
    p.add_argument("--limit", type=int, default=25, help="systems per split (default 25)")
    p.add_argument("--workers", type=int, default=2, help="dask workers (default 2)")
    p.add_argument("--steps", type=int, default=200, help="max relaxation steps (default 200)")
    p.add_argument("--order", default="serial,dask,pair,pair,dask,serial",
                   help=f"comma-separated timings, each one of {MODES} "
                   "(default serial,dask,pair,pair,dask,serial)")
    p.add_argument("--out", required=True, help="work directory (one campaign per timing)")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # I/N: one pair member
    args = p.parse_args(argv)
    out_dir = Path(args.out)

    if args.part is not None:  # a pair member: serial on systems[I::N], one JSON line
        i, n = map(int, args.part.split("/"))
        res = _campaign(args, out_dir, 0, (i, n))
        print(json.dumps({"work_s": _work(res), "counts": res.counts}))
        return 0

    order = args.order.split(",")
    if unknown := [m for m in order if m not in MODES]:
        p.error(f"unknown modes {unknown}; choose from {MODES}")
    from ltau_md.workflows import _dask

    out: dict = {m: [] for m in dict.fromkeys(order)}
    for k, mode in enumerate(order):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        if mode == "pair":
            base = [sys.executable, str(Path(__file__).resolve()), "--model", args.model,
                    "--estimator", args.estimator, "--systems", args.systems,
                    "--limit", str(args.limit), "--steps", str(args.steps)]
            procs = [subprocess.Popen([*base, "--out", str(out_dir / f"pair{k}_{i}"),
                                       "--part", f"{i}/2"], stdout=subprocess.PIPE, text=True)
                     for i in range(2)]
            parts = [json.loads(pr.communicate()[0].strip().splitlines()[-1]) for pr in procs]
            wall = time.perf_counter() - t0
            work = sum(x["work_s"] for x in parts)
            counts = [x["counts"] for x in parts]
        else:
            saved = dict(_dask.WORKER_CONFIG)
            if mode == "daskprof":  # dask's defaults: profiler and GIL monitor on
                _dask.WORKER_CONFIG.clear()
            try:
                res = _campaign(args, out_dir / f"{mode}{k}",
                                0 if mode == "serial" else args.workers)
            finally:
                _dask.WORKER_CONFIG.update(saved)
            wall = time.perf_counter() - t0
            work, counts = _work(res), res.counts
        out[mode].append({"wall_s": round(wall, 1), "work_s": round(work, 1),
                          "loadavg_before": round(load, 2), "counts": counts})
        print(f"[scaling] {mode}: {wall:.1f} s", file=sys.stderr, flush=True)

    def mean(m: str) -> float | None:
        v = [x["wall_s"] for x in out.get(m, [])]
        return sum(v) / len(v) if v else None

    line = {"benchmark": "is2rs_scaling", "n_systems": 4 * args.limit,
            "workers": args.workers, "order": order}
    if (s := mean("serial")) is not None:
        for m in ("dask", "daskprof", "pair"):
            if (w := mean(m)) is not None:
                line[f"speedup_{m}"] = round(s / w, 2)
    print(json.dumps({**line, **out}))
    record(__file__, {**line, **out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
