"""Does a frame-maximum alarm keep its in-domain rate on larger structures?

Boxes of m replicated, non-interacting in-domain molecules: a molecule's atoms keep the
features they have alone, so the box's per-atom signals are those of m in-domain frames and the
box maximum is the maximum of m frame maxima. From the per-atom values an evaluation wrote
(``OUT/evaluation/per_atom.npz`` of ``benchmarks/acac.py``), each of ``--splits`` random
calibration/evaluation splits of the in-domain frames fits the threshold on the calibration
frames (``alarm_threshold`` with and without ``size_ratio`` m) and draws ``--boxes`` boxes of m
evaluation frames; the in-domain alarm rate of the boxes is reported (mean, 95th percentile
and worst over splits) for each statistic and m.

    python benchmarks/alarm_size.py --per-atom OUT/evaluation/per_atom.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from ltau_md.core.calibration import split_frames
    from ltau_md.core.metrics import alarm_threshold, frame_statistics

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-atom", required=True, help="per_atom.npz of an evaluation")
    p.add_argument("--signals", nargs="+", default=["gmm", "novelty"])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 134],
                   help="molecules per box (134 x 15 atoms = 2010 atoms)")
    p.add_argument("--alarm-rate", type=float, default=0.01)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--boxes", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with np.load(args.per_atom) as z:
        off = z["in_domain/offsets"]
        values = {s: z[f"in_domain/{s}"] for s in args.signals}
    rng = np.random.default_rng(args.seed)
    result: dict = {"alarm_rate": args.alarm_rate, "splits": args.splits,
                    "boxes_per_split": args.boxes, "frames": int(off.size - 1),
                    "atoms_per_frame": float(np.median(np.diff(off))), "rates": {}}
    maxima = {s: frame_statistics(v, off, "max") for s, v in values.items()}
    rates = {s: {m: {"adjusted": [], "unadjusted": []} for m in args.sizes} for s in values}
    for split in range(args.splits):
        cal, evl = split_frames(off, args.fraction, split)
        cal_f, evl_f = cal[off[:-1]], evl[off[:-1]]
        pool = np.flatnonzero(evl_f)
        for m in args.sizes:
            picks = rng.choice(pool, (args.boxes, m))
            for s, fm in maxima.items():
                box = fm[picks].max(axis=1)
                for kind, ratio in (("adjusted", float(m)), ("unadjusted", 1.0)):
                    thr = alarm_threshold(fm[cal_f], args.alarm_rate, ratio)
                    rates[s][m][kind].append(float(np.mean(box > thr)))
    for s, by_m in rates.items():
        result["rates"][f"{s}:max"] = {
            str(m): {kind: {"mean": float(np.mean(v)), "p95": float(np.percentile(v, 95)),
                            "worst": float(np.max(v))} for kind, v in d.items()}
            for m, d in by_m.items()}
    print(json.dumps(result))
    record(__file__, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
