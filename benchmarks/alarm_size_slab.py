"""Does the default alarm keep its in-domain rate on a bigger slab in MD?

O on Cu(111), a Cu(111)/Au surface alloy or clean Cu(111) (``--system``) with EMT
(``ltau_md.testing.slab_md_frames``): an LTAU estimator with the default
alarm's signals is fitted on MD frames of a ``--small`` surface cell (``--train-runs``
independent runs), the default alarm's in-domain statistic on held-out MD frames of the same
cell (``--held-out-runs`` more); then frames of new MD runs (``--test-runs`` of each) of the
same cell and of a ``--big`` cell (the same composition) are scored as the monitor scores them
(``combined_statistics`` over the free atoms, p-values adjusted to the size, and unadjusted),
with LTAU novelty's maximum (threshold adjusted) beside it. Reports the alarm rates at several
nominal rates, the frames that alarm and the rates in the first and the second half of the
runs (runs of consecutive frames, or a rate rising along the runs, point to configurations the
training runs did not reach, not to the size adjustment). Every run has the same length
(``--frames``, ``--every`` steps of 2 fs apart, from the same start), so the training, held-out
and test frames sample the same stretch of time: with training runs shorter than the test runs,
the later test frames are out of domain by design.

    python benchmarks/alarm_size_slab.py [--system alloy]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _size(text: str) -> tuple[int, int, int]:
    nx, ny, nz = (int(v) for v in text.split("x"))
    return nx, ny, nz


SYSTEMS = ("adsorbate", "alloy", "clean")


def main(argv=None) -> int:
    from ltau_md.core.calibration import (
        DEFAULT_ALARM,
        DEFAULT_SIGNALS,
        alarm_statistics_from_structures,
    )
    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.metrics import alarm_threshold, combined_statistics, parse_stat_key
    from ltau_md.testing import (
        EMTFeatureModel,
        adsorbate_slab,
        clean_slab,
        slab_md_frames,
        surface_alloy_slab,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", type=_size, default=(4, 4, 3), help="NXxNYxNZ (default 4x4x3)")
    p.add_argument("--big", type=_size, default=(8, 8, 3), help="default 8x8x3")
    p.add_argument("--system", choices=SYSTEMS, default="adsorbate",
                   help="adsorbate: O on Cu(111), whose O hops between sites in MD (not "
                   "stationary); alloy: a Cu(111) surface alloy with Au; clean: Cu(111); "
                   "default adsorbate")
    p.add_argument("--frames", type=int, default=20, help="frames per run (default 20)")
    p.add_argument("--every", type=int, default=15,
                   help="MD steps (2 fs) between frames (default 15)")
    p.add_argument("--seed", type=int, default=0, help="first MD seed - 1 (default 0)")
    p.add_argument("--train-runs", type=int, default=8, help="default 8")
    p.add_argument("--held-out-runs", type=int, default=12, help="default 12")
    p.add_argument("--test-runs", type=int, default=12, help="per cell (default 12)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--record", default=None,
                   help="record name (default alarm_size_slab[_SYSTEM])")
    args = p.parse_args(argv)

    make, elements = {"adsorbate": (adsorbate_slab, ("O", "Cu")),
                      "alloy": (surface_alloy_slab, ("Cu", "Au")),
                      "clean": (clean_slab, ("Cu",))}[args.system]
    model = EMTFeatureModel(elements=elements)
    seeds = iter(range(args.seed + 1, args.seed + 10_000))

    def runs(n_runs: int, size: tuple[int, int, int]) -> list:
        return [f for _ in range(n_runs)
                for f in slab_md_frames(next(seeds), args.frames, every=args.every,
                                          size=size, make=make)]

    train = runs(args.train_runs, args.small)
    x = np.concatenate([model.evaluate(a).features for a in train])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        log = ErrorLog.create(Path(tmp) / "log",
                              species=np.concatenate([a.numbers for a in train]),
                              frame_offsets=np.cumsum([0] + [len(a) for a in train]),
                              ref_force_norm=np.ones(len(x)))
        for _ in range(3):
            log.append(0.05 * rng.lognormal(0, 0.5, len(x)))
        est = LTAUEstimator(k=5, signals=DEFAULT_SIGNALS).fit(x, log)
    held = runs(args.held_out_runs, args.small)
    alarm_statistics_from_structures(model, est, held)
    entry = est.alarm_statistics_[DEFAULT_ALARM]
    novelty = est.alarm_statistics_["novelty:max"]
    signal, on, _ = parse_stat_key(DEFAULT_ALARM)

    result: dict = {"system": args.system, "small": "x".join(map(str, args.small)),
                    "big": "x".join(map(str, args.big)),
                    "frames_per_run": args.frames, "every": args.every, "seed": args.seed,
                    "train_runs": args.train_runs,
                    "held_out_runs": args.held_out_runs, "test_runs": args.test_runs,
                    "calibration_frames": entry["n_frames"], "default_alarm": DEFAULT_ALARM,
                    "sets": {}}
    thrs = {rate: alarm_threshold(entry["values"], rate) for rate in args.rates}
    for name, size in (("small", args.small), ("big", args.big)):
        frames = runs(args.test_runs, size)
        vals: dict[str, list[float]] = {"adjusted": [], "unadjusted": [], "novelty": [],
                                        "blocks": []}
        ratio = 1.0
        for a in frames:
            free = a.get_tags() != 0
            f = model.evaluate(a).features
            sig = est.signal_values(f, a.numbers)
            ratio = float(free.sum() / entry["atoms_per_frame"])
            for kind, r in (("adjusted", ratio), ("unadjusted", 1.0)):
                vals[kind].append(float(combined_statistics(
                    signal, on, sig, np.array([0, len(a)]), entry["reference"], a.numbers,
                    free, size_ratio=r)[0]))
            # the cell cut into blocks of the small cell's size, each scored as a small frame
            # (no adjustment): blocks alarming at the nominal rate mean the big cell's atoms
            # look like the small cell's, and any excess of the whole frame is the size
            # adjustment's; blocks alarming more mean the big cell reaches other configurations
            frac = a.get_scaled_positions()[:, :2]
            grid = np.floor(frac * np.array(size[:2]) / np.array(args.small[:2])).astype(int)
            block = grid[:, 0] * (size[1] // args.small[1] + 1) + grid[:, 1]
            vals["blocks"].extend(float(combined_statistics(
                signal, on, sig, np.array([0, len(a)]), entry["reference"], a.numbers,
                free & (block == b))[0]) for b in np.unique(block[free]))
            vals["novelty"].append(float(est.predict(f, species=a.numbers).novelty[free].max()))
        v = {k: np.array(x) for k, x in vals.items()}
        rates = {}
        for rate, thr in thrs.items():
            rates[f"{rate:g}"] = {
                "default_adjusted": float(np.mean(v["adjusted"] > thr)),
                "default_unadjusted": float(np.mean(v["unadjusted"] > thr)),
                "novelty_max_adjusted": float(np.mean(
                    v["novelty"] > alarm_threshold(novelty["values"], rate, ratio))),
                "default_blocks": float(np.mean(v["blocks"] > thr))}
        # by time: the first and the second half of every run's frames (a rate that rises
        # along the runs points to configurations reached late, not to the size adjustment)
        late = np.tile(np.arange(args.frames) >= args.frames // 2, args.test_runs)
        halves = {half: {f"{rate:g}": float(np.mean(v["adjusted"][sel] > thr))
                         for rate, thr in thrs.items()}
                  for half, sel in (("first", ~late), ("second", late))}
        result["sets"][name] = {
            "frames": len(frames), "size_ratio": ratio, "rates": rates,
            "default_adjusted_by_half": halves,
            f"alarming_frames_at_{args.rates[0]:g}": np.flatnonzero(
                v["adjusted"] > thrs[args.rates[0]]).tolist()}
    print(json.dumps(result))
    record(__file__, result, name=args.record or "alarm_size_slab" + (
        "" if args.system == "adsorbate" else f"_{args.system}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
