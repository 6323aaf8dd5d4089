"""Descriptor extraction (what ``ltau-md fit`` does to the training set): atoms per CPU-second
of the full forward pass (energy, forces; features captured on the way, what extraction did
before) against the features-only pass (:meth:`NequIPFeatureModel.features`), per batch size,
and the features of both compared; "auto" is what ``ltau-md fit`` runs (``descriptors_for_dataset``:
batches of at most 16 structures and ``BATCH_MAX_ATOMS`` atoms).

The model is bench_step.py's (a 1-epoch NequIP model, 32 features, l_max 2, 4 layers by
default); the structures are rattled 108-atom fcc Cu cells (periodic) and 15-atom Cu13H2
clusters. Every (method, batch size) pass over the same frames is repeated ``--repeats`` times,
interleaved (the order rotates each round), at 1 torch thread; the median CPU time is used.

    python benchmarks/bench_descriptors.py --out bench_out/descriptors

Prints one JSON line and writes a record to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import record
from bench_step import train_model

BATCHES = (1, 2, 4, 8, 16)


def _frames(kind: str, n: int) -> list:
    from ase import Atoms
    from ase.build import bulk
    from ase.cluster import Icosahedron

    rng = np.random.default_rng(0)
    if kind == "bulk":
        base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    else:
        base = Icosahedron("Cu", 2)
        tip = base.positions[np.argmax(base.positions[:, 2])]
        base += Atoms("H2", positions=[tip + [0, 0, 1.6], tip + [0, 1.5, 2.2]])
        base.center(vacuum=6.0)
        base.pbc = False
    out = []
    for _ in range(n):
        a = base.copy()
        a.rattle(0.1, seed=int(rng.integers(2**31)))
        out.append(a)
    return out


def _full(fm, part):
    return fm.forward(part)[1]


def _features(fm, part):
    return fm.features(part)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--lmax", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--frames", type=int, default=32, help="structures per system")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="keeps the trained model (default: temporary)")
    args = ap.parse_args()

    import torch

    from ltau_md.integrations.nequip import NequIPFeatureModel
    from ltau_md.integrations.nequip.model import descriptors_for_dataset

    torch.set_num_threads(1)
    scratch = None if args.out else tempfile.TemporaryDirectory(prefix="bench_desc_")
    out = Path(args.out or scratch.name)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "run" / "last.ckpt"
    if not ckpt.exists():
        ckpt = train_model(out, args.features, args.lmax, args.layers)
    fm = NequIPFeatureModel.from_file(ckpt)
    methods = {"full_forward": _full, "features_only": _features}
    load0 = os.getloadavg()[0]
    systems = {}
    for kind in ("bulk", "molecule"):
        frames = _frames(kind, args.frames)
        n_atoms = sum(len(a) for a in frames)
        cpu: dict[str, list[float]] = {}
        feats: dict[str, np.ndarray] = {}
        runs = [(m, b) for m in methods for b in BATCHES] + [("features_only", "auto")]
        for _, fn in methods.items():  # warm-up
            fn(fm, frames[:2])
        for r in range(args.repeats):
            order = runs[r % len(runs):] + runs[:r % len(runs)]
            for m, b in order:
                t = time.process_time()
                if b == "auto":  # what ltau-md fit runs
                    got = [descriptors_for_dataset(fm, frames, progress=False)]
                else:
                    got = [methods[m](fm, frames[s:s + b]).cpu().numpy()
                           for s in range(0, len(frames), b)]
                cpu.setdefault(f"{m}@{b}", []).append(time.process_time() - t)
                feats[f"{m}@{b}"] = np.concatenate(got)
        ref = feats["full_forward@1"]
        rows = {}
        for key, ts in cpu.items():
            med = float(np.median(ts))
            rows[key] = {"cpu_s_median": med, "atoms_per_cpu_s": n_atoms / med,
                         "max_abs_feature_diff": float(np.abs(feats[key] - ref).max())}
        best = {m: max((rows[f"{m}@{b}"]["atoms_per_cpu_s"], b) for b in BATCHES)
                for m in methods}
        systems[kind] = {
            "atoms_per_frame": len(frames[0]), "n_frames": len(frames), "rows": rows,
            "best": {m: {"atoms_per_cpu_s": v, "batch": b} for m, (v, b) in best.items()},
            "speedup_best_features_only_over_full_at_1": (
                best["features_only"][0] / rows["full_forward@1"]["atoms_per_cpu_s"]),
            "ltau_md_fit_atoms_per_cpu_s": rows["features_only@auto"]["atoms_per_cpu_s"],
        }
    bulk_fit = systems["bulk"]["ltau_md_fit_atoms_per_cpu_s"]
    result = {
        "benchmark": "descriptors", "torch_threads": 1,
        "model": {"num_features": args.features, "l_max": args.lmax, "layers": args.layers},
        "systems": systems,
        "target_ge_1000_atoms_per_cpu_s_bulk": bool(bulk_fit >= 1000),
        "features_identical": bool(all(r["max_abs_feature_diff"] <= 1e-5
                                       for s in systems.values() for r in s["rows"].values())),
        "loadavg_1min": [load0, os.getloadavg()[0]],
    }
    print(json.dumps(result), flush=True)
    record(__file__, result)


if __name__ == "__main__":
    main()
