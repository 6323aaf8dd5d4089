"""Frame alarms that combine several frame statistics, against the single statistics.

Each statistic of a frame is turned into an in-domain tail p-value against the calibration
frames (:func:`ltau_md.core.metrics.tail_pvalue`, the product's: conformal, (1 + #calibration
values >= v) / (n + 1); beyond the largest calibration value the smaller of that and the
predictive tail of the top 20 %), and a combination scores a frame by Fisher's -sum(log p) over
its statistics ("A+B") or by Tippett's -log min p ("A|B": alarm when any one statistic is far
out, ``--tippett``). Frame statistics are taken over the atoms the file marks free (``S/free``:
not fixed by FixAtoms, as the monitor takes them), else over all. A statistic
"SIGNAL:STAT/element" first turns every atom's value into a tail p-value against the
calibration atoms of its element (the same rule, calibration atoms against the other
calibration frames' atoms), so no element's tail sets the frame's, and takes the frame
statistic STAT ("max", "mean", "qNN") of -log p
(:func:`ltau_md.core.metrics.element_normalised`). The product's default alarm,
``ltau_md.core.calibration.DEFAULT_ALARM``, is the Fisher combination of two such per-element
maxima, "doptimality:max/element + clustered_doptimality:max/element" here; the candidates here
may mix frame statistics, and ``--extra`` scores more (e.g. "doptimality:mean/element",
"gmm:max+doptimality:mean/element"). Calibration frames get leave-one-out p-values, so the 1 %
threshold of the combined score is the conformal one of the single statistics. For each of
``--splits`` random calibration/evaluation splits of the in-domain frames (by frame, as
``ltau-md evaluate`` splits them): the in-domain alarm rate of the evaluation half and, per
out-of-domain set, the alarm rate at the 1 % threshold and the frame AUROC; means and the worst
split are reported. Input: the per-atom values an evaluation wrote (``per_atom.npz``), one or
more data sets. With several, each candidate's worst case over every out-of-domain set of every
data set is reported: the smallest ratio of its alarm rate at 1 % to the best candidate's on
that set (1 = the best everywhere).

    python benchmarks/alarm_combinations.py --per-atom acac=OUT/evaluation/per_atom.npz \\
        emt=OUT/signals/per_atom.npz
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

#: candidates: single frame statistics and their Fisher combinations
CANDIDATES = (
    ("gmm:max",), ("doptimality:max",), ("novelty:max",), ("gmm:mean",),
    ("force_std:max",),
    ("gmm:max", "doptimality:max"), ("gmm:max", "gmm:mean"), ("gmm:max", "novelty:max"),
    ("gmm:max", "doptimality:max", "novelty:max"),
    ("gmm:max", "gmm:mean", "doptimality:max"),
    ("gmm:max/element",), ("doptimality:max/element",),
    ("clustered_doptimality:max",), ("clustered_doptimality:max/element",),
    ("gmm:max", "clustered_doptimality:max/element"),
    ("gmm:max", "doptimality:max", "clustered_doptimality:max/element"),
    # every part per element: no element's (or the slab's) tail sets the frame's
    ("gmm:max/element", "clustered_doptimality:max/element"),
    ("gmm:max/element", "doptimality:max/element"),
    ("doptimality:max/element", "clustered_doptimality:max/element"),
    ("gmm:max", "doptimality:max/element"),
)


def element_normalised(values: dict, numbers: dict, offsets: dict, cal_atoms: np.ndarray
                       ) -> dict:
    """Per set, each atom's -log tail p-value against the calibration atoms of its element
    (``cal_atoms``: mask over the in-domain atoms; a calibration atom against those of the
    other calibration frames)."""
    from ltau_md.core.metrics import element_normalised as normalised
    from ltau_md.core.metrics import own_frame_counts

    ind, z = values["in_domain"], numbers["in_domain"]
    refs = {int(e): np.sort(ind[(z == e) & cal_atoms]) for e in np.unique(z[cal_atoms])}
    own = own_frame_counts(ind, z, offsets["in_domain"], cal_atoms)
    return {s: normalised(v, numbers[s], refs, own if s == "in_domain" else None)
            for s, v in values.items()}


def _is_stat_key(key: str) -> bool:
    """Whether ``key`` is SIGNAL:STAT or SIGNAL:STAT/element, STAT max, mean or qNN."""
    from ltau_md.core.metrics._frame_statistics import quantile_of

    signal, _, on = key.partition(":")
    try:
        quantile_of(on.removesuffix("/element"))
    except ValueError:
        return False
    return bool(signal)


def main(argv=None) -> int:
    from ltau_md.core.calibration import split_frames
    from ltau_md.core.metrics import auroc, frame_statistics, tail_pvalue

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-atom", nargs="+", required=True, metavar="NAME=PATH",
                   help="per_atom.npz of an evaluation, named")
    p.add_argument("--alarm-rate", type=float, default=0.01)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--tippett", action="store_true",
                   help="also score each combination by its smallest p-value (named A|B)")
    p.add_argument("--extra", nargs="+", default=(), metavar="A+B",
                   help="more candidates: frame statistics joined by '+' (Fisher)")
    p.add_argument("--record", default=None,
                   help="record name (default alarm_combinations)")
    args = p.parse_args(argv)
    candidates = CANDIDATES + tuple(tuple(c.split("+")) for c in args.extra
                                    if tuple(c.split("+")) not in CANDIDATES)
    bad = [k for k in sorted({k for c in candidates for k in c}) if not _is_stat_key(k)]
    if bad:
        p.error(f"--extra: {bad[0]!r} is not SIGNAL:STAT or SIGNAL:STAT/element (STAT: max, "
                "mean or qNN)")
    result: dict = {"alarm_rate": args.alarm_rate, "splits": args.splits, "data": {},
                    "extra": list(args.extra)}
    for item in args.per_atom:
        name, _, path = item.partition("=")
        if not path:
            p.error(f"--per-atom takes NAME=PATH, got {item!r}")
        with np.load(path) as z:
            sets = [s for s in sorted({k.split("/")[0] for k in z.files})
                    if s not in ("sets", "in_domain")]
            off = {s: z[f"{s}/offsets"] for s in ["in_domain", *sets]}
            numbers = {s: z[f"{s}/numbers"] for s in off}
            # the atoms the monitor watches (not fixed by FixAtoms), where the file says
            free = {s: z[f"{s}/free"] if f"{s}/free" in z.files else None for s in off}
            keys = sorted({key for c in candidates for key in c})
            per_atom = {sig: {s: z[f"{s}/{sig}"].astype(np.float64) for s in off}
                        for sig in {k.split(":")[0] for k in keys}
                        if f"in_domain/{sig}" in z.files}
            # per-element statistics depend on the calibration atoms: made per split below
            by_element = [k for k in keys if k.endswith("/element")
                          and k.split(":")[0] in per_atom]
            stats = {k: {s: frame_statistics(per_atom[k.split(":")[0]][s], off[s],
                                             k.split(":")[1], free[s]) for s in off}
                     for k in keys if "/" not in k and k.split(":")[0] in per_atom}
        rows: dict = {}
        for split in range(args.splits):
            cal_atoms = split_frames(off["in_domain"], args.fraction, split)[0]
            cal = cal_atoms[off["in_domain"][:-1]]
            ref_atoms = cal_atoms if free["in_domain"] is None else cal_atoms & free["in_domain"]
            for key in by_element:
                norm = element_normalised(per_atom[key.split(":")[0]], numbers, off, ref_atoms)
                on = key.split(":")[1].removesuffix("/element")
                stats[key] = {s: frame_statistics(norm[s], off[s], on, free[s]) for s in off}
            for c, how in [(c, "+") for c in candidates] + (
                    [(c, "|") for c in candidates if len(c) > 1] if args.tippett else []):
                if not all(k in stats for k in c):
                    continue
                score = {s: np.zeros(off[s].size - 1) for s in off}
                for key in c:
                    ref = np.sort(stats[key]["in_domain"][cal])
                    for s in off:
                        pv = tail_pvalue(stats[key][s], ref)
                        if s == "in_domain":
                            pv[cal] = tail_pvalue(stats[key][s][cal], ref, leave_one_out=True)
                        score[s] = (score[s] - np.log(pv) if how == "+"
                                    else np.maximum(score[s], -np.log(pv)))
                ind = score["in_domain"]
                n_cal = int(cal.sum())
                k = int(np.ceil((n_cal + 1) * (1 - args.alarm_rate) - 1e-9))
                thr = np.sort(ind[cal])[min(k, n_cal) - 1] if k <= n_cal else np.inf
                r = rows.setdefault(how.join(c), {"in_domain_rate": []})
                r["in_domain_rate"].append(float(np.mean(ind[~cal] > thr)))
                for s in sets:
                    r.setdefault(f"{s}/rate", []).append(float(np.mean(score[s] > thr)))
                    lab = np.r_[np.zeros((~cal).sum()), np.ones(score[s].size)]
                    r.setdefault(f"{s}/auroc", []).append(
                        auroc(np.r_[ind[~cal], score[s]], lab))
        summary = {}
        for cand, r in rows.items():
            summary[cand] = {"in_domain_rate": {"mean": round(float(np.mean(
                r["in_domain_rate"])), 4), "worst": round(float(np.max(r["in_domain_rate"])), 4)}}
            for s in sets:
                summary[cand][s] = {
                    "rate_mean": round(float(np.mean(r[f"{s}/rate"])), 3),
                    "rate_worst": round(float(np.min(r[f"{s}/rate"])), 3),
                    "auroc_mean": round(float(np.mean(r[f"{s}/auroc"])), 3),
                    "auroc_worst": round(float(np.min(r[f"{s}/auroc"])), 3)}
        result["data"][name] = {"frames": {s: int(o.size - 1) for s, o in off.items()},
                                "candidates": summary}
        print(f"{name}: {'candidate':58s} {'in-dom':>7s} " + " ".join(
            f"{s[-14:]:>15s}" for s in sets))
        for cand, v in summary.items():
            print(f"{'':{len(name) + 2}s}{cand:58s} {100 * v['in_domain_rate']['mean']:6.2f}% "
                  + " ".join(f"{v[s]['rate_mean']:.2f}/{v[s]['auroc_mean']:.3f}".rjust(15)
                             for s in sets))
    if len(result["data"]) > 1:
        # the rule's figures over CANDIDATES alone, so --extra does not move them; the extra
        # candidates against every candidate's best besides
        extra = {how.join(c) for c in candidates[len(CANDIDATES):] for how in "+|"}
        result["worst_case_ratio"] = worst_case(result["data"], exclude=extra)
        if extra:
            result["worst_case_ratio_with_extra"] = worst_case(result["data"])
        for key, title in (("worst_case_ratio", "CANDIDATES"),
                           ("worst_case_ratio_with_extra", "CANDIDATES and --extra")):
            if key not in result:
                continue
            print(f"worst case over every out-of-domain set (rate at 1 % / the best "
                  f"candidate's), {title}:")
            for cand, v in sorted(result[key].items(), key=lambda x: -x[1]["ratio"]):
                print(f"  {cand:55s} {v['ratio']:.2f} (on {v['set']})")
    print(json.dumps(result))
    record(__file__, result, name=args.record)
    return 0


def worst_case(data: dict, exclude: set | frozenset = frozenset()) -> dict:
    """Per candidate scored on every data set (but those in ``exclude``): the smallest ratio,
    over all out-of-domain sets, of its mean alarm rate at 1 % to the largest of any of these
    candidates on that set."""
    cands = set.intersection(*(set(d["candidates"]) for d in data.values())) - set(exclude)
    out = {}
    for cand in sorted(cands):
        worst = (np.inf, None)
        for name, d in data.items():
            for s, v in d["candidates"][cand].items():
                if s == "in_domain_rate":
                    continue
                best = max(c[s]["rate_mean"] for k, c in d["candidates"].items()
                           if k not in exclude)
                ratio = v["rate_mean"] / best if best > 0 else 1.0
                worst = min(worst, (ratio, f"{name}/{s}"))
        out[cand] = {"ratio": round(float(worst[0]), 3), "set": worst[1]}
    return out


if __name__ == "__main__":
    sys.exit(main())
