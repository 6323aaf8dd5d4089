"""The active-learning loop on EMT slabs: does the alarm plus diversity selection improve the
model faster per label than picking alarmed frames by value or at random?

Protocol
--------
1. A tiny NequIP model is trained (nequip-train, error logging) on a narrow set: Cu(111)
   2x2x3 slabs with an O or H adsorbate at the fcc site, rattled by 0.08 A (``--n-train``
   frames, EMT labels), validated on 40 more such frames (the alarm statistics' in-domain
   frames).
2. Out-of-domain test set, fixed: frames of EMT Langevin MD at 1000 K of Cu(100)+O,
   Cu(100)+H (another facet) and Cu(111)+O (hotter) (``--n-test`` in all), labelled by EMT.
3. ``ltau-md learn`` from that model, once per selection method (``d_optimal``: the loop;
   ``top``: the alarm without the diversity selection; ``random``: random alarmed frames):
   exploration MD at 800 and 1200 K from the three new systems (other seeds than the test
   set's), the default alarm at a 5 % in-domain rate, ``--batch`` labels per iteration,
   ``--iterations`` iterations, ``--finetune-epochs`` epochs of fine-tuning each.
4. Per method and iteration: labels so far, test force MAE with a 95 % bootstrap interval
   over test frames, alarm share of the exploration, exploration CPU seconds.

Not measured here: an ensemble-driven loop (4 members with DP-GEN trust levels).

Usage::

    python benchmarks/learn_emt.py --out OUT [--reuse]
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

METHODS = ("d_optimal", "top", "random")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test", type=int, default=45)
    p.add_argument("--epochs", type=int, default=40, help="base model training epochs")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=150, help="exploration MD steps per run")
    p.add_argument("--alarm-rate", type=float, default=0.05)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--reuse", action="store_true", help="keep the base model and finished loops")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the loops (exploration MD, random selection); the data, the "
                   "base model and the test set stay the same. Seed s > 0 loops go to "
                   "OUT/loop_METHOD_seedS and record as learn_emt_seedS")
    return p.parse_args(argv)


def slab(facet: str, ads: str, rng: np.random.Generator, rattle: float):
    from ase.build import add_adsorbate, fcc100, fcc111

    s = (fcc111 if facet == "111" else fcc100)("Cu", size=(2, 2, 3), vacuum=5.0,
                                              periodic=True)
    add_adsorbate(s, ads, {"O": 1.5, "H": 1.75}[ads] if facet == "111" else 1.4,
                  "fcc" if facet == "111" else "hollow")
    s.info.pop("adsorbate_info", None)
    s.pbc = True
    s.rattle(rattle, seed=int(rng.integers(2**31)))
    return s


def labelled(frames):
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        a = a.copy()
        a.calc = EMT()
        e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=st)
        out.append(a)
    return out


def emt_md(start, temperature: float, n: int, every: int, seed: int):
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    from ltau_md.core.structures import thermalize

    a = start.copy()
    a.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize(a, temperature, rng)
    dyn = Langevin(a, 1 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                   rng=rng)
    frames = []
    for _ in range(n):
        dyn.run(every)
        b = a.copy()
        b.calc = None
        frames.append(b)
    return frames


def per_frame_mae(model_path: Path, frames) -> np.ndarray:
    from ltau_md.core.model import evaluate_structures
    from ltau_md.integrations.nequip import NequIPFeatureModel

    outs = evaluate_structures(NequIPFeatureModel.from_file(model_path), frames)
    return np.array([np.linalg.norm(a.get_forces() - o.forces, axis=1).mean()
                     for a, o in zip(frames, outs, strict=True)])


def boot(x: np.ndarray, n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    m = x[rng.integers(0, x.size, (n, x.size))].mean(1)
    return [float(x.mean()), float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]


def main(argv=None) -> int:
    args = parse_args(argv)
    import ase.io
    import torch

    from ltau_md.core.files import acquire_lock
    from ltau_md.integrations.nequip import fit_from_runs, toy
    from ltau_md.workflows.learn import load_config, run_learn

    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out)
    t_start = time.perf_counter()
    try:
        data = out / "data"
        data.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        if not (args.reuse and (data / "test.xyz").exists()):
            narrow = labelled([slab("111", "OH"[i % 2], rng, 0.08)
                               for i in range(args.n_train + 40)])
            ase.io.write(data / "train.xyz", narrow[:args.n_train])
            ase.io.write(data / "val.xyz", narrow[args.n_train:])
            systems = [("100", "O"), ("100", "H"), ("111", "O")]
            starts = [slab(f, a, rng, 0.05) for f, a in systems]
            ase.io.write(data / "starts.xyz", starts)
            per = -(-args.n_test // len(systems))
            test = []
            for i, s in enumerate(starts):
                test += emt_md(s, 1000.0, per, 20, seed=100 + i)
            ase.io.write(data / "test.xyz", labelled(test[:args.n_test]))
        test = ase.io.read(data / "test.xyz", ":")

        base = out / "base"
        if not (args.reuse and (out / "estimator").exists()):
            import shutil

            shutil.rmtree(base, ignore_errors=True)
            cfg = toy.tiny_config(data / "train.xyz", data / "val.xyz", seed=1,
                                  max_epochs=args.epochs, num_features=16, lr=0.01,
                                  lr_min=5e-4)
            t0 = time.perf_counter()
            toy.nequip_train(toy.write_config(cfg, out / "base.yaml"), base, threads=1,
                             timeout=None)
            print(f"[learn_emt] base model trained ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
            fit_from_runs([base], base / "last.ckpt", out / "estimator", progress=False,
                          overwrite=True)
        base_mae = per_frame_mae(base / "last.ckpt", test)

        runs = {}
        suffix = f"_seed{args.seed}" if args.seed else ""
        for method in args.methods:
            loop_cfg = {
                "out_dir": str(out / f"loop_{method}{suffix}"),
                "model": str(base / "last.ckpt"),
                "estimator": str(out / "estimator"), "train": str(data / "train.xyz"),
                "validation": str(data / "val.xyz"), "test": str(data / "test.xyz"),
                "oracle": "ase.calculators.emt:EMT",
                "explore": {"structures": str(data / "starts.xyz"),
                            "temperatures_K": [800, 1200], "steps": args.steps,
                            "interval": 5, "alarm_rate": args.alarm_rate},
                "select": {"batch_size": args.batch, "method": method},
                "finetune": {"epochs": args.finetune_epochs, "lr": 0.005},
                "iterations": args.iterations, "label_budget": args.batch * args.iterations,
                "tolerance": 0.5, "seed": args.seed}
            t0 = time.process_time()
            report = run_learn(load_config(loop_cfg))
            rows = []
            for row in report["iterations"]:
                it = out / f"loop_{method}{suffix}" / f"ITER_{row['iteration']:03d}"
                ckpt = it / "finetune" / "run" / "last.ckpt"
                mae = boot(per_frame_mae(ckpt, test), args.n_boot) if ckpt.exists() else None
                rows.append({"iteration": row["iteration"],
                             "labels": row.get("labels_total"),
                             "alarm_share": row["alarm_share"],
                             "explore_cpu_s": row.get("explore_cpu_s"),
                             "test_force_mae": mae})
            runs[method] = {"iterations": rows, "stopped": report["stopped"],
                            "loop_cpu_s": time.process_time() - t0}
            print(json.dumps({method: runs[method]}), file=sys.stderr)

        line = {"benchmark": "learn_emt", "n_train": args.n_train, "n_test": len(test),
                "iterations": args.iterations, "batch": args.batch,
                "finetune_epochs": args.finetune_epochs, "alarm_rate": args.alarm_rate,
                "seed": args.seed,
                "base_test_force_mae": boot(base_mae, args.n_boot), "runs": runs,
                "wall_seconds": time.perf_counter() - t_start}
        print(json.dumps(line))
        record(__file__, line, name=f"learn_emt{suffix}")
        return 0
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
