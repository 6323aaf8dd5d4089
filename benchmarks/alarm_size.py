"""Does a frame-maximum alarm keep its in-domain rate on larger structures?

Boxes of m replicated, non-interacting in-domain molecules: a molecule's atoms keep the
features they have alone, so the box's per-atom signals are those of m in-domain frames and the
box maximum is the maximum of m frame maxima. From the per-atom values an evaluation wrote
(``OUT/evaluation/per_atom.npz`` of ``benchmarks/acac.py``), each of ``--splits`` random
calibration/evaluation splits of the in-domain frames fits the threshold on the calibration
frames (``alarm_threshold`` with and without ``size_ratio`` m) and draws ``--boxes`` boxes of m
evaluation frames; the in-domain alarm rate of the boxes is reported (mean, 95th percentile
and worst over splits) for each statistic and m. Combined statistics (``--combined``, default
the default alarm, ``ltau_md.core.calibration.DEFAULT_ALARM``) are fitted on the calibration
frames (``fit_combined``) and scored on each box as one structure (``combined_statistics`` of
the box's atoms with and without ``size_ratio`` m, against the in-domain threshold); they run
on the first ``--combined-splits`` splits (a box of 134 molecules is 2010 atoms).

The boxes are drawn from a finite set of in-domain frames, so large boxes test a tail the set
barely holds: ``resolution`` records, per m, how many in-domain frames a calibrated alarm's
per-frame tail holds on average and the chance that it holds none (every box quiet whatever
the threshold). With 650 frames at 1 %: 6.5 frames and 0.1 % at m = 1, 0.65 and 52 % at
m = 10, 0.05 and 95 % at m = 134. ``single_frame_tail`` records, per combined statistic and
m, the frames the boxes' alarms actually come from: the evaluation frames that alarm alone
when scored at the box's size, against what a calibrated tail holds.

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


def resolution(frames: int, alarm_rate: float, sizes: list[int]) -> dict:
    """What the benchmark can resolve at each box size m. A calibrated box alarm fires when a
    molecule exceeds its per-frame tail q_m = 1 - (1 - alarm_rate)^(1/m); the in-domain
    frames hold ``frames`` q_m of those on average, and with probability (1 - q_m)^frames
    none (then every box of every split is quiet, whatever the threshold's true rate). Exact
    for a single signal's maximum, the order of magnitude for a combination."""
    out = {}
    for m in sizes:
        q = -np.expm1(np.log1p(-alarm_rate) / m)
        out[str(m)] = {"per_frame_tail": float(q), "frames_beyond_expected": float(frames * q),
                       "p_all_quiet_if_calibrated": float(np.exp(frames * np.log1p(-q)))}
    return out


def single_frame_tail(t: dict, frames: int, per_split: int, q: float) -> dict:
    """What sets a combined alarm's box rate at one box size: the evaluation frames that alarm
    alone when scored at the box's size, per split (a calibrated alarm's tail holds
    ``per_split`` q of them on average) and distinct over the splits (the references move
    between splits, so more than one split's ``frames`` q), and the share of alarming boxes
    that hold one of them (1: the alarms are those frames' doing)."""
    return {"per_split_mean": float(np.mean(t["per_split"])),
            "per_split_expected_if_calibrated": float(per_split * q),
            "distinct_frames": len(t["distinct"]),
            "boxes_alarming": t["boxes_alarming"],
            "share_of_alarming_boxes_with_such_a_frame": (
                t["boxes_alarming_with_one"] / t["boxes_alarming"] if t["boxes_alarming"]
                else None)}


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
    p.add_argument("--combined", nargs="*", default=None,
                   help="combined statistics (default: the default alarm)")
    p.add_argument("--combined-splits", type=int, default=20)
    args = p.parse_args(argv)
    from ltau_md.core.calibration import DEFAULT_ALARM
    from ltau_md.core.metrics import (
        combined_statistics,
        fit_combined,
        parse_stat_key,
        statistic_signals,
    )

    combined = [DEFAULT_ALARM] if args.combined is None else args.combined
    with np.load(args.per_atom) as z:
        off = z["in_domain/offsets"]
        values = {s: z[f"in_domain/{s}"] for s in args.signals}
        numbers = z["in_domain/numbers"]
        parts = {b: z[f"in_domain/{b}"] for k in combined for b in statistic_signals(k)}
    rng = np.random.default_rng(args.seed)
    result: dict = {"alarm_rate": args.alarm_rate, "splits": args.splits,
                    "boxes_per_split": args.boxes, "frames": int(off.size - 1),
                    "atoms_per_frame": float(np.median(np.diff(off))), "rates": {}}
    maxima = {s: frame_statistics(v, off, "max") for s, v in values.items()}
    rates = {s: {m: {"adjusted": [], "unadjusted": []} for m in args.sizes} for s in values}
    crates = {k: {m: {"adjusted": [], "unadjusted": []} for m in args.sizes} for k in combined}
    tails = {k: {m: {"per_split": [], "distinct": set(), "boxes_alarming": 0,
                     "boxes_alarming_with_one": 0} for m in args.sizes} for k in combined}
    sizes = np.diff(off)
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
            if split >= args.combined_splits:
                continue
            # boxes as structures: their atoms' indices, one box after another
            atoms = np.concatenate([np.arange(off[f], off[f + 1]) for f in picks.ravel()])
            box_off = np.concatenate([[0], np.cumsum(sizes[picks].sum(axis=1))])
            off_cal = np.concatenate([[0], np.cumsum(sizes[cal_f])])
            off_evl = np.concatenate([[0], np.cumsum(sizes[evl_f])])
            for key in combined:
                signal, on, _ = parse_stat_key(key)
                ref, loo = fit_combined(signal, on, {b: v[cal] for b, v in parts.items()},
                                        off_cal, numbers[cal])
                thr = alarm_threshold(loo, args.alarm_rate)
                box = {b: v[atoms] for b, v in parts.items()}
                alarms = {}
                for kind, ratio in (("adjusted", float(m)), ("unadjusted", 1.0)):
                    alarms[kind] = combined_statistics(signal, on, box, box_off, ref,
                                                       numbers[atoms], size_ratio=ratio) > thr
                    crates[key][m][kind].append(float(np.mean(alarms[kind])))
                # the evaluation frames that alarm alone, scored at the box's size: a box
                # holding one alarms too (no part's maximum can fall)
                alone = combined_statistics(signal, on, {b: v[evl] for b, v in parts.items()},
                                            off_evl, ref, numbers[evl], size_ratio=float(m))
                beyond = pool[alone > thr]
                t = tails[key][m]
                t["per_split"].append(int(beyond.size))
                t["distinct"].update(int(f) for f in beyond)
                hit = alarms["adjusted"]
                t["boxes_alarming"] += int(hit.sum())
                t["boxes_alarming_with_one"] += int(np.isin(picks[hit], beyond).any(axis=1).sum())
    result["combined_splits"] = min(args.combined_splits, args.splits)
    result["resolution"] = resolution(int(off.size - 1), args.alarm_rate, args.sizes)
    result["single_frame_tail"] = {
        key: {str(m): single_frame_tail(t, int(off.size - 1), int(np.sum(evl_f)),
                                        result["resolution"][str(m)]["per_frame_tail"])
              for m, t in by_m.items()} for key, by_m in tails.items()}
    for s, by_m in [*((f"{s}:max", d) for s, d in rates.items()), *crates.items()]:
        result["rates"][s] = {
            str(m): {kind: {"mean": float(np.mean(v)), "p95": float(np.percentile(v, 95)),
                            "worst": float(np.max(v))} for kind, v in d.items()}
            for m, d in by_m.items()}
    print(json.dumps(result))
    record(__file__, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
